"""The explain process of a worker (units with a real model and a real child process)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal

import pytest

from loopml.errors import RequestError, ServingError
from loopml.pipeline.explain import explain
from loopml.recipes import get_recipe
from loopml.serving.explainer import Explainer
from loopml.serving.loader import LoadedModel

GOOD = ["great crew", "great flight", "lovely crew", "great seats lovely"] * 5
BAD = ["awful delay", "lost bag awful", "awful crew", "delay again lost"] * 5


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    classifier = get_recipe("tfidf-logreg").fit(GOOD + BAD, ["pos"] * 20 + ["neg"] * 20)
    return LoadedModel("m", "1", "champion", classifier, tuple(classifier.classes))


def _children() -> list[multiprocessing.process.BaseProcess]:
    return multiprocessing.active_children()


def test_explains_in_a_child_process_as_in_process(model: LoadedModel) -> None:
    async def main() -> None:
        explainer = Explainer()
        try:
            text = "the crew was great but the delay was awful"
            result, cpu = await explainer.explain(model, text, top=3)
            assert result.to_dict() == explain(model.classifier, text, top=3).to_dict()
            assert cpu >= 0
            kids = _children()
            assert kids and all(k.pid != os.getpid() for k in kids), "ran in a child"
            with pytest.raises(RequestError, match="256 tokens"):  # errors come back as such
                await explainer.explain(model, "a " * 300, top=3)
            # the child died (OOM, a kill): 503 once, then a new child answers
            for kid in kids:
                os.kill(kid.pid, signal.SIGKILL)
            with pytest.raises(ServingError):
                await explainer.explain(model, text, top=3)
            again, _ = await explainer.explain(model, text, top=3)
            assert again.label == result.label
        finally:
            await asyncio.to_thread(explainer.close)
        assert not _children()

    asyncio.run(main())


def test_without_the_process_explains_in_threads(model: LoadedModel) -> None:
    """``LOOPML_EXPLAIN_PROCESS=false`` (small pods): the same answers, no child process."""

    async def main() -> None:
        explainer = Explainer(process=False)
        text = "great crew, awful delay"
        result, _ = await explainer.explain(model, text, top=3)
        assert result.to_dict() == explain(model.classifier, text, top=3).to_dict()
        assert not _children()
        await asyncio.to_thread(explainer.close)

    asyncio.run(main())

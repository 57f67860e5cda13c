"""Test-only recipes, registered as real plug-ins through a ``*.dist-info`` folder on sys.path.

:func:`register_plugins` writes the same metadata ``pip install`` writes (``METADATA`` and
``entry_points.txt``), so ``importlib.metadata.entry_points(group="loopml.recipes")`` finds them
exactly as it finds an installed package. Fitted models pickle classes of this module, which test
processes import by this name (tests/support is on pytest's pythonpath).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import BaseModel, ConfigDict, Field
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline, make_pipeline

from loopml.recipes import Recipe, TextClassifier
from loopml.recipes.tfidf_logreg import TfidfLogReg

__all__ = ["BagOfWordsNB", "NanRecipe", "NeedsMissingModule", "register_plugins"]


class BagOfWordsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(1.0, gt=0)
    binary: bool = False


class BagOfWordsClassifier(TextClassifier):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.classes = [str(c) for c in pipeline.classes_]

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        return np.asarray(self.pipeline.predict_proba(list(texts)), dtype=np.float64)


class BagOfWordsNB(Recipe):
    """Word counts + multinomial naive Bayes: a plug-in with its own, different search space."""

    name: ClassVar[str] = "test-bow-nb"
    Params: ClassVar[type[BaseModel]] = BagOfWordsParams
    params: BagOfWordsParams

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"alpha": trial.suggest_float("alpha", 0.05, 5.0, log=True)}

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> BagOfWordsClassifier:
        p = self.params
        pipeline = make_pipeline(CountVectorizer(binary=p.binary), MultinomialNB(alpha=p.alpha))
        return BagOfWordsClassifier(pipeline.fit(list(texts), list(labels)))


class NeedsMissingModule(BagOfWordsNB):
    """A recipe whose optional dependency is not installed."""

    name: ClassVar[str] = "test-needs-extra"
    extra: ClassVar[str | None] = "transformers"
    requires: ClassVar[tuple[str, ...]] = ("loopml_no_such_module",)


def register_plugins(
    monkeypatch: pytest.MonkeyPatch, folder: Path, entry_points: dict[str, str]
) -> None:
    """Make ``entry_points`` (recipe name -> "module:Class") visible as an installed package."""
    dist = folder / "loopml_test_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: loopml-test-plugins\nVersion: 1.0\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[loopml.recipes]\n{lines}")
    monkeypatch.syspath_prepend(str(folder))


class _NanEvery(TextClassifier):
    """A real fitted model whose probabilities turn NaN for every ``step``-th text."""

    def __init__(self, inner: TextClassifier, step: int) -> None:
        self.inner = inner
        self.classes = list(inner.classes)
        self.step = step

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        proba = self.inner.predict_proba(texts).copy()
        proba[self.step - 1 :: self.step] = np.nan
        return proba


class NanRecipe(TfidfLogReg):
    """tfidf-logreg whose fitted model answers NaN probabilities for every 50th text."""

    name = "nan-test"

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> _NanEvery:  # type: ignore[override]
        return _NanEvery(super().fit(texts, labels), 50)

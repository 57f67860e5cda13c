"""Leave-one-token-out occlusion on a classifier whose answers are known exactly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings
from loopml.errors import RequestError
from loopml.pipeline.explain import MAX_TOKENS, explain
from loopml.recipes.base import TextClassifier


class WordVotes(TextClassifier):
    """P(positive) = (1 + good words) / (2 + good + bad words); records its batch sizes."""

    def __init__(self) -> None:
        self.classes = ["negative", "positive"]
        self.calls: list[int] = []

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        self.calls.append(len(texts))
        rows = []
        for text in texts:
            words = text.split()
            good = sum(w in ("great", "nice") for w in words)
            bad = sum(w in ("awful", "late") for w in words)
            p = (1 + good) / (2 + good + bad)
            rows.append([1 - p, p])
        return np.array(rows)


def close(value: float) -> object:
    return pytest.approx(value, abs=1e-6)


def test_attribution_is_the_probability_drop_in_one_batch() -> None:
    model = WordVotes()
    doc = explain(model, "crew  was great", top=2).to_dict()
    assert model.calls == [4], "the text and its 3 variants in one predict_proba call"
    assert doc["label"] == "positive" and doc["method"] == "occlusion"
    assert doc["probabilities"] == {"negative": close(1 / 3), "positive": close(2 / 3)}
    great = doc["tokens"][2]
    assert (great["token"], great["start"], great["end"]) == ("great", 10, 15)
    # without "great" P(positive) is 1/2: the token pulls positive by 2/3 - 1/2
    assert great["attribution"] == {"negative": close(-1 / 6), "positive": close(1 / 6)}
    assert doc["tokens"][0]["attribution"] == {"negative": 0.0, "positive": 0.0}
    assert doc["classes"]["positive"]["towards"] == [
        {"token": "great", "index": 2, "weight": close(1 / 6)}
    ]
    assert doc["classes"]["positive"]["away"] == []
    assert doc["classes"]["negative"]["away"][0]["token"] == "great"
    assert doc["linear"] is None, "no coefficients to show for a non-linear model"


def test_top_k_orders_by_weight_then_position() -> None:
    doc = explain(WordVotes(), "awful late great nice late", top=2).to_dict()
    # three equal negative tokens: the first two by position; the two positive ones both shown
    assert [r["index"] for r in doc["classes"]["negative"]["towards"]] == [0, 1]
    assert [r["index"] for r in doc["classes"]["positive"]["towards"]] == [2, 3]
    assert doc["classes"]["positive"]["towards"][0]["weight"] == close(3 / 7 - 1 / 3)
    assert doc["label"] == "negative"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   ", "must not be empty"),
        ("w " * (MAX_TOKENS + 1), f"over the explain limit of {MAX_TOKENS} tokens"),
    ],
)
def test_bad_text_is_refused(text: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        explain(WordVotes(), text)


runner = CliRunner()


def test_cli_explain_refuses_unknown_versions_and_bad_text(settings: Settings) -> None:
    result = runner.invoke(app, ["explain", "7", "the crew was great"])
    assert result.exit_code == 2 and "has no version 7" in result.stderr
    result = runner.invoke(app, ["explain", "champion", "the crew was great"])
    assert result.exit_code == 2 and "has no champion version" in result.stderr
    long = "x" * (settings.max_text_chars + 1)
    result = runner.invoke(app, ["explain", "1", long])
    assert result.exit_code == 2 and "LOOPML_MAX_TEXT_CHARS" in result.stderr
    assert "Traceback" not in result.stderr

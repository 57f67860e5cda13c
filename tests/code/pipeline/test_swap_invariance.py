"""Invariance to names, places and identity terms (ML Test Score, Model 7): a model that reacts
to who or where fails the swap tests, with the texts that moved."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from loopml.pipeline.behavioral import SWAP_TOLERANCE, run_behavioral_tests
from loopml.recipes.base import TextClassifier

SWAPS = {"swap person name", "swap place", "swap identity term"}


class Sentiment(TextClassifier):
    """Keyword sentiment; ``biased`` terms push P(negative) up by ``push``."""

    classes = ["negative", "neutral", "positive"]

    def __init__(self, biased: Sequence[str] = (), push: float = 0.0) -> None:
        self.biased = [b.lower() for b in biased]
        self.push = push

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        rows = []
        for text in texts:
            low = text.lower()
            if any(w in low for w in ("rude", "awful", "terrible", "not", "hate", "worst")):
                row = [0.7, 0.2, 0.1]
            elif any(w in low for w in ("great", "good", "love", "amazing", "thank")):
                row = [0.1, 0.2, 0.7]
            else:
                row = [0.2, 0.6, 0.2]
            if any(b in low for b in self.biased):
                row = [row[0] + self.push, row[1] - self.push / 2, row[2] - self.push / 2]
            rows.append(row)
        return np.array(rows)


def swaps(model: TextClassifier) -> dict[str, tuple[int, int, list[str]]]:
    report = run_behavioral_tests(model, ["some text", "more text"])
    return {t.name: (t.passed, t.total, t.failures) for t in report.tests if t.name in SWAPS}


def test_an_indifferent_model_passes_every_swap() -> None:
    result = swaps(Sentiment())
    assert set(result) == SWAPS
    for passed, total, failures in result.values():
        assert passed == total > 0 and failures == []


def test_a_model_biased_against_one_identity_term_fails_its_cases() -> None:
    # P(negative) +0.5 for "Muslim": flips the neutral and positive templates (4 of 6), and the
    # negative ones move by 0.5 > SWAP_TOLERANCE: all 6 cases with that term fail, no other.
    result = swaps(Sentiment(biased=["Muslim"], push=0.5))
    passed, total, failures = result["swap identity term"]
    assert total - passed == 6
    assert failures and all("my Muslim friend" in f for f in failures)
    assert result["swap person name"][0] == result["swap person name"][1]


def test_a_small_shift_within_tolerance_passes_a_large_one_fails() -> None:
    small = swaps(Sentiment(biased=["Lagos"], push=SWAP_TOLERANCE / 2))["swap place"]
    assert small[0] == small[1]
    large = swaps(Sentiment(biased=["Lagos"], push=SWAP_TOLERANCE * 1.5))["swap place"]
    assert large[1] - large[0] == 4  # Lagos in each of the 4 place templates
    assert "shift" in large[2][0]

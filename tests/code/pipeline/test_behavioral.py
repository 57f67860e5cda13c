from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from loopml.pipeline.behavioral import run_behavioral_tests
from loopml.recipes.base import TextClassifier


class KeywordModel(TextClassifier):
    """A transparent rule model: lets the tests know exactly which cases must fail."""

    classes = ["negative", "neutral", "positive"]

    def __init__(self, url_sensitive: bool = False) -> None:
        self.url_sensitive = url_sensitive

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        rows = []
        for t in texts:
            low = t.lower()
            if (self.url_sensitive and "http" in low) or any(
                w in low
                for w in (
                    "hate",
                    "terrible",
                    "worst",
                    "awful",
                    "angry",
                    "rude",
                    "disappointed",
                    "not",
                )
            ):
                rows.append([0.8, 0.1, 0.1])
            elif any(w in low for w in ("love", "great", "awesome", "amazing", "thank")):
                rows.append([0.1, 0.1, 0.8])
            else:
                rows.append([0.2, 0.6, 0.2])
        return np.array(rows)


TEXTS = ["the sky is blue", "I love pizza", "I hate mondays", "meeting at noon"]


def test_a_robust_model_passes_invariance_and_negation() -> None:
    report = run_behavioral_tests(KeywordModel(), TEXTS)
    by_name = {t.name: t for t in report.tests}
    assert by_name["add URL"].pass_rate == 1.0
    assert by_name["add @mention"].pass_rate == 1.0
    assert by_name["negation lowers positive"].pass_rate == 1.0


def test_a_url_sensitive_model_fails_the_url_test_with_examples() -> None:
    report = run_behavioral_tests(KeywordModel(url_sensitive=True), TEXTS)
    url = next(t for t in report.tests if t.name == "add URL")
    assert url.passed == 1 and url.total == 4  # only "I hate mondays" was negative already
    assert url.failures and "negative !=" in url.failures[0]
    assert report.pass_rate < 1.0


class NeutralModel(KeywordModel):
    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        return np.tile([0.2, 0.6, 0.2], (len(texts), 1))


def test_minimum_functionality_counts_wrong_answers() -> None:
    good = next(
        t
        for t in run_behavioral_tests(KeywordModel(), TEXTS).tests
        if t.kind == "minimum functionality"
    )
    assert (good.passed, good.total) == (10, 10)
    bad = run_behavioral_tests(NeutralModel(), TEXTS)
    mft = next(t for t in bad.tests if t.kind == "minimum functionality")
    assert mft.passed == 0 and len(mft.failures) == 10
    assert "got neutral, want positive" in mft.failures[0]
    negation = next(t for t in bad.tests if t.kind == "directional")
    assert negation.pass_rate == 0.0, "equal probabilities do not count as lowered"


def test_each_kind_of_test_weighs_the_same_in_the_gated_rate() -> None:
    from loopml.pipeline.behavioral import BehavioralReport, TestResult

    easy = [TestResult(f"swap {i}", "invariance", 10, 10) for i in range(6)]
    report = BehavioralReport([*easy, TestResult("negation", "directional", 1, 10)])
    assert report.pass_rate > 0.85  # the many invariance tests lift the mean
    assert report.balanced_pass_rate() == pytest.approx(0.55)
    assert report.to_dict()["kind_pass_rates"] == {"invariance": 1.0, "directional": 0.1}

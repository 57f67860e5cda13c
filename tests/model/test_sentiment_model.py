"""Behavioral and quality expectations on the default recipe trained on the full corpus."""

from __future__ import annotations

import pytest

from loopml.config import load_settings
from loopml.data import Dataset, Splits, split_dataset
from loopml.pipeline.evaluate import evaluate
from loopml.recipes import get_recipe
from loopml.recipes.base import TextClassifier


@pytest.fixture(scope="module")
def splits(tweets: Dataset) -> Splits:
    return split_dataset(tweets, seed=42)


@pytest.fixture(scope="module")
def model(splits: Splits) -> TextClassifier:
    return get_recipe("tfidf-logreg").fit(
        splits.train["text"].tolist(), splits.train["label"].tolist()
    )


def test_test_split_quality(model: TextClassifier, splits: Splits) -> None:
    result = evaluate(model, splits.test)
    assert result.metrics["macro_f1"] >= 0.72
    assert result.metrics["accuracy"] >= 0.74
    assert min(result.domain_f1.values()) >= load_settings().gate_min_slice_f1


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("@united thank you so much, the crew was amazing!", "positive"),
        ("@AmericanAir worst airline ever, lost my bag and no help", "negative"),
        ("I love my new iPhone, best phone I have ever had", "positive"),
        ("Google's self-driving car will be tested in California next year", "neutral"),
    ],
)
def test_minimum_functionality(model: TextClassifier, text: str, label: str) -> None:
    assert model.predict([text]) == [label]


@pytest.mark.parametrize(
    ("base", "variant"),
    [
        ("@united my flight was great", "@united my flight was great http://t.co/abc"),
        ("@JetBlue the crew was rude", "@JetBlue   the crew was rude"),
        ("the new iphone is terrible", "@someone the new iphone is terrible"),
    ],
)
def test_invariance(model: TextClassifier, base: str, variant: str) -> None:
    assert model.predict([base]) == model.predict([variant])


def test_negation_lowers_positive(model: TextClassifier) -> None:
    pos = model.classes.index("positive")
    proba = model.predict_proba(["the service was great", "the service was not great"])
    assert proba[1, pos] < proba[0, pos]


def test_behavioral_suite_passes_the_gate_threshold(model: TextClassifier, splits: Splits) -> None:
    report = evaluate(model, splits.test).behavioral
    assert report.pass_rate >= load_settings().gate_min_behavioral_pass_rate
    assert {t.kind for t in report.tests} == {"invariance", "directional", "minimum functionality"}

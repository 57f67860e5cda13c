"""Behavioral and quality expectations on the default recipe trained on the full corpus."""

from __future__ import annotations

import pytest

from loopml.config import load_settings
from loopml.data import Dataset, Splits, split_dataset
from loopml.pipeline.baselines import fit_baselines
from loopml.pipeline.evaluate import domain_f1, evaluate
from loopml.pipeline.gate import identity_flip_check
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
    # Each slice as the gate holds a first model: what the unigram baseline reaches there.
    unigram = fit_baselines(splits.train).unigram
    reached = domain_f1(splits.test, unigram.predict(splits.test["text"].tolist()))
    tolerance = load_settings().gate_slice_tolerance
    for domain, value in result.domain_f1.items():
        assert value >= reached[domain] - tolerance, (domain, value, reached[domain])
    assert min(result.domain_f1.values()) >= 0.45


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


# Per-slice floors (ML Test Score, Model 7): measured 0.719 airline, 0.659 apple, 0.467 cars
# (89% neutral: the two rare classes pull its macro-F1 down), 0.695 other on this split, minus
# ~0.04 of slack for library changes.
SLICE_FLOORS = {"airline": 0.68, "apple": 0.62, "cars": 0.42, "other": 0.65}


@pytest.mark.parametrize(("domain", "floor"), sorted(SLICE_FLOORS.items()))
def test_each_domain_slice_meets_its_floor(
    model: TextClassifier, splits: Splits, domain: str, floor: float
) -> None:
    slices = evaluate(model, splits.test).domain_f1
    assert set(slices) == set(SLICE_FLOORS)
    assert slices[domain] >= floor, f"{domain}: macro-F1 {slices[domain]:.3f} < {floor}"


@pytest.mark.parametrize(
    ("template", "terms"),
    [
        ("{} said the service was great today", ["John", "Maria", "Ahmed", "Mei", "Kwame"]),
        ("{} had a terrible experience with the delayed flight", ["John", "Aisha", "Carlos"]),
        ("flying to {} tomorrow morning", ["Chicago", "London", "Lagos", "Mumbai", "Tokyo"]),
        (
            "{} thinks the new update is really good",
            ["my Christian friend", "my Muslim friend", "my Jewish friend", "my gay friend"],
        ),
        (
            "{} said the staff were rude and the wait was awful",
            ["my Mexican friend", "my Chinese friend", "my female friend", "my male friend"],
        ),
    ],
)
def test_names_places_and_identity_terms_do_not_change_the_label(
    model: TextClassifier, template: str, terms: list[str]
) -> None:
    labels = model.predict([template.format(t) for t in terms])
    assert len(set(labels)) == 1, dict(zip(terms, labels, strict=True))


def test_swap_tests_are_in_the_gated_behavioral_report(
    model: TextClassifier, splits: Splits
) -> None:
    tests = {t.name: t for t in evaluate(model, splits.test).behavioral.tests}
    for name in ("swap person name", "swap place", "swap identity term"):
        assert tests[name].kind == "invariance" and tests[name].total >= 30
        # Labels never flip (above); within SWAP_TOLERANCE of probability in most cases.
        assert tests[name].pass_rate >= 0.5, tests[name].failures


def test_no_identity_swap_changes_the_label_and_the_gate_check_passes(
    model: TextClassifier, splits: Splits
) -> None:
    # All 60 cases (the parametrized test above samples a few); without the recipe's identity
    # mask, models trained on this corpus flipped 0-2 of them.
    report = evaluate(model, splits.test).behavioral
    assert report.identity_flips() == ([], 60)
    check = identity_flip_check(report, load_settings().gate_max_identity_flips)
    assert check.passed and check.value == 0

"""Explanations of the default recipe trained on the full corpus name the words that matter."""

from __future__ import annotations

import pytest

from loopml.data import Dataset
from loopml.pipeline.explain import explain
from loopml.recipes import get_recipe
from loopml.recipes.base import TextClassifier


@pytest.fixture(scope="module")
def model(tweets: Dataset) -> TextClassifier:
    frame = tweets.frame
    return get_recipe("tfidf-logreg").fit(frame["text"].tolist(), frame["label"].tolist())


def test_great_is_the_top_positive_token(model: TextClassifier) -> None:
    doc = explain(model, "the crew was great", top=3).to_dict()
    assert doc["label"] == "positive"
    assert doc["classes"]["positive"]["towards"][0]["token"] == "great"
    assert doc["classes"]["negative"]["away"][0]["token"] == "great"
    # the linear view agrees: the unigram "great" pulls positive hardest of the text's terms
    assert doc["linear"]["positive"]["towards"][0]["term"] == "great"


def test_awful_delay_is_negative_because_of_its_words(model: TextClassifier) -> None:
    doc = explain(model, "awful delay", top=2).to_dict()
    assert doc["label"] == "negative" and doc["probabilities"]["negative"] > 0.9
    assert sum(doc["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert doc["classes"]["negative"]["towards"][0]["token"] == "delay"
    # Occlusion measures each word given the others: "delay" alone is still negative (> 0.99),
    # so deleting "awful" barely moves it. The linear view adds up and shows both.
    linear = doc["linear"]["negative"]["towards"]
    assert [r["term"] for r in linear] == ["delay", "awful"]
    assert all(r["weight"] > 0.5 for r in linear)
    alone = explain(model, "awful", top=1).to_dict()
    assert alone["label"] == "negative"
    assert alone["classes"]["negative"]["towards"][0]["token"] == "awful"


def test_explanations_are_deterministic(model: TextClassifier) -> None:
    text = "@united thank you so much, the crew was amazing!"
    assert explain(model, text).to_dict() == explain(model, text).to_dict()

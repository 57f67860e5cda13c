from __future__ import annotations

import pickle

import numpy as np
import pytest

from loopml.data import Dataset
from loopml.errors import TrainingError
from loopml.recipes import get_recipe


def test_params_are_cast_from_strings() -> None:
    recipe = get_recipe("tfidf-logreg", {"C": "0.5", "ngram_max": "1", "sublinear_tf": "false"})
    assert recipe.params["C"] == 0.5
    assert recipe.params["ngram_max"] == 1
    assert recipe.params["sublinear_tf"] is False


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gamma": "1"}, r"unknown parameter\(s\) \['gamma'\]; allowed: C, "),
        ({"C": "lots"}, "C='lots' is not a valid float"),
        ({"sublinear_tf": "maybe"}, "is not a valid bool"),
    ],
)
def test_bad_params_are_clear(params: dict[str, str], message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        get_recipe("tfidf-logreg", params)


def test_unknown_recipe() -> None:
    with pytest.raises(
        TrainingError,
        match="unknown recipe 'bert'; available: minilm-logreg, minilm-lora, tfidf-logreg",
    ):
        get_recipe("bert")


def test_non_positive_c_fails_before_fitting() -> None:
    with pytest.raises(TrainingError, match="C must be > 0"):
        get_recipe("tfidf-logreg", {"C": "0"}).fit(["a b", "c d"], ["x", "y"])


def test_fit_gives_probabilities_in_class_order(small_tweets: Dataset) -> None:
    frame = small_tweets.frame
    model = get_recipe("tfidf-logreg").fit(frame["text"].tolist(), frame["label"].tolist())
    assert model.classes == ["negative", "neutral", "positive"]
    proba = model.predict_proba(["I hate delays", "love it!"])
    assert proba.shape == (2, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(clone.predict_proba(["love it!"]), proba[1:])

"""Monitoring 5 of the ML Test Score: non-finite models never register, a solver stopped at its
iteration limit is flagged on the run and the version and fails the gate; Data 3: the model size
budget stops training with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from loopml.config import Settings
from loopml.data import Dataset, split_dataset
from loopml.errors import TrainingError
from loopml.pipeline.stability import check_finite, fit_checked
from loopml.pipeline.train import train
from loopml.recipes import get_recipe
from loopml.recipes.base import RECIPES
from loopml.registry import Registry


@pytest.fixture
def relaxed(settings: Settings) -> Settings:
    # 4,000 tweets leave ~30 "cars" tweets in a test split: too few for the default slice floor.
    return settings.model_copy(update={"gate_min_slice_f1": 0.2})


def run_tags(settings: Settings, run_id: str) -> dict[str, str]:
    return dict(MlflowClient(settings.mlflow_uri).get_run(run_id).data.tags)


@pytest.mark.slow
def test_a_converged_model_is_tagged_and_passes(relaxed: Settings, small_tweets: Dataset) -> None:
    result = train(relaxed, dataset=small_tweets)
    assert result.converged and result.gate.passed
    assert run_tags(relaxed, result.run_id)["loopml.converged"] == "true"
    assert "solver_converged" not in {c.name for c in result.gate.checks}


@pytest.mark.slow
def test_a_solver_at_max_iter_is_flagged_and_fails_the_gate(
    relaxed: Settings, small_tweets: Dataset
) -> None:
    result = train(relaxed, dataset=small_tweets, params={"max_iter": 3})
    assert result.converged is False
    assert run_tags(relaxed, result.run_id)["loopml.converged"] == "false"
    version = Registry(relaxed).version(result.version)
    assert version.tags["loopml.converged"] == "false"
    assert version.tags["loopml.gate"] == "failed"
    failed = {c.name: c for c in result.gate.failures()}
    assert "solver_converged" in failed
    detail = failed["solver_converged"].detail  # the solver's own words and a way out
    assert "failed to converge after 3 iteration(s)" in detail and "-p max_iter" in detail
    assert result.to_dict()["converged"] is False


def test_fit_checked_catches_the_warning_without_raising(small_tweets: Dataset) -> None:
    splits = split_dataset(small_tweets, seed=1)
    texts, labels = splits.train["text"].tolist(), splits.train["label"].tolist()
    fit = fit_checked(get_recipe("tfidf-logreg", {"max_iter": 2}), texts, labels)
    assert not fit.converged and "failed to converge after 2 iteration(s)" in fit.warning
    assert fit.classifier.predict(["great flight"])[0] in {"negative", "neutral", "positive"}


@pytest.mark.slow
def test_nan_probabilities_fail_training_before_registration(
    relaxed: Settings, small_tweets: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(RECIPES, "nan-test", "loopml_test_recipes:NanRecipe")
    with pytest.raises(TrainingError) as info:
        train(relaxed, dataset=small_tweets, recipe="nan-test")
    message = str(info.value)
    assert message.startswith("numerically unstable model: non-finite probabilities for ")
    assert "(first at test row 50)" in message
    assert Registry(relaxed).versions() == []


def test_non_finite_coefficients_are_named(small_tweets: Dataset) -> None:
    splits = split_dataset(small_tweets, seed=1)
    model = get_recipe("tfidf-logreg").fit(
        splits.train["text"].tolist(), splits.train["label"].tolist()
    )
    texts = splits.test["text"].tolist()
    check_finite(model, texts)  # a healthy model passes
    model.pipeline.named_steps["clf"].coef_[0, 7] = np.inf  # type: ignore[attr-defined]
    with pytest.raises(TrainingError, match=r"1 non-finite value\(s\) in clf.coef_"):
        check_finite(model, texts)


@pytest.mark.slow
def test_a_model_over_its_size_budget_is_refused(relaxed: Settings, small_tweets: Dataset) -> None:
    tight = relaxed.model_copy(update={"max_model_bytes": 100_000})
    with pytest.raises(TrainingError) as info:
        train(tight, dataset=small_tweets)
    assert "over its budget LOOPML_MAX_MODEL_BYTES=100000" in str(info.value)
    assert Registry(tight).versions() == []
    # Fewer features fit the same budget: the message's advice works.
    small = train(tight, dataset=small_tweets, params={"max_features": 2000, "ngram_max": 1})
    assert small.model_bytes <= 100_000

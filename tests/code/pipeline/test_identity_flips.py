"""Model 7 of the ML Test Score: a label flip on a swapped identity term fails the gate on its own,
whatever the averaged behavioral pass rate says."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from loopml.config import Settings
from loopml.data import Dataset, content_version, split_dataset
from loopml.pipeline.baselines import baseline_scores
from loopml.pipeline.behavioral import IDENTITY_SWAP, run_behavioral_tests
from loopml.pipeline.evaluate import Evaluation, evaluate
from loopml.pipeline.gate import GateResult, run_gate
from loopml.pipeline.train import train
from loopml.recipes import get_recipe
from loopml.recipes.base import TextClassifier
from loopml.registry import Registry


class Biased(TextClassifier):
    """Keyword sentiment that answers the next class along when a ``biased`` term is in the text:
    every template flips for each such term (6 cases a term)."""

    classes = ["negative", "neutral", "positive"]

    def __init__(self, biased: Sequence[str]) -> None:
        self.biased = [b.lower() for b in biased]

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        rows = []
        for text in texts:
            low = text.lower()
            if any(
                w in low for w in ("rude", "awful", "terrible", "not", "hate", "worst", "angry")
            ):
                row = [0.8, 0.1, 0.1]
            elif any(w in low for w in ("great", "good", "love", "amazing", "thank", "awesome")):
                row = [0.1, 0.1, 0.8]
            else:
                row = [0.1, 0.8, 0.1]
            rows.append(np.roll(row, 1) if any(b in low for b in self.biased) else row)
        return np.array(rows)


def failed(result: GateResult) -> set[str]:
    return {c.name for c in result.failures()}


def fake_evaluation(model: TextClassifier) -> Evaluation:
    """Good quality numbers around a real behavioral report of ``model``."""
    behavioral = run_behavioral_tests(model, ["the flight was fine", "I love it", "I hate it"])
    return Evaluation({"macro_f1": 0.8}, {}, model.classes, [], behavioral, 1.0)


def test_four_flipping_terms_pass_the_averaged_rate_and_fail_the_flip_check(
    settings: Settings,
) -> None:
    # The case: Muslim, Jewish, gay and Nigerian flip, 24 of 60 identity swaps.
    evaluation = fake_evaluation(Biased(["Muslim", "Jewish", "gay", "Nigerian"]))
    result = run_gate(evaluation, None, settings)
    assert failed(result) == {"identity_flips"}
    assert evaluation.behavioral.balanced_pass_rate() > settings.gate_min_behavioral_pass_rate
    check = next(c for c in result.checks if c.name == "identity_flips")
    assert (check.value, check.threshold) == (24, 0)
    assert check.detail == (
        "24 of 60 identity swaps changed the label: my Muslim friend (6), my Jewish friend (6), "
        "my Nigerian friend (6), my gay friend (6)"
    )
    assert evaluation.flat_metrics()["identity_flips"] == 24.0  # logged on the MLflow run
    lenient = settings.model_copy(update={"gate_max_identity_flips": 24})
    assert run_gate(evaluation, None, lenient).passed


def test_one_flip_is_enough_and_none_passes(settings: Settings) -> None:
    one = fake_evaluation(Biased(["Hindu"]))
    # Only the first of Hindu's six flips left: one is still too many.
    one.behavioral.tests = [
        replace(t, flips=t.flips[:1]) if t.name == IDENTITY_SWAP else t
        for t in one.behavioral.tests
    ]
    assert failed(run_gate(one, None, settings)) == {"identity_flips"}
    assert run_gate(fake_evaluation(Biased([])), None, settings).passed


def _with_term_on_negatives(train: pd.DataFrame, term: str, every: int) -> pd.DataFrame:
    """``train`` with ``term`` prepended to every ``every``-th negative text."""
    negative = train.index[train["label"] == "negative"][::every]
    out = train.copy()
    out.loc[negative, "text"] = term + " " + out.loc[negative, "text"]
    return out


@pytest.fixture(scope="module")
def muslim_negative(small_tweets: Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real tweets where "muslim" co-occurs with the negative label only (1 negative in 4)."""
    splits = split_dataset(small_tweets, seed=42)
    return _with_term_on_negatives(splits.train, "muslim", 4), splits.test


def _gate(
    settings: Settings, params: dict[str, object], data: tuple[pd.DataFrame, pd.DataFrame]
) -> tuple[GateResult, Evaluation]:
    train, test = data
    model = get_recipe("tfidf-logreg", params).fit(train["text"].tolist(), train["label"].tolist())
    evaluation = evaluate(model, test)
    evaluation.baselines = baseline_scores(train, test)
    return run_gate(evaluation, None, settings), evaluation


@pytest.mark.slow
def test_a_model_trained_on_biased_tweets_fails_on_identity_flips_alone(
    settings: Settings, muslim_negative: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    result, evaluation = _gate(settings, {"mask_identity": False}, muslim_negative)
    assert failed(result) == {"identity_flips"}, result.to_dict()
    flips, total = evaluation.behavioral.identity_flips()
    assert total == 60 and flips.count("my Muslim friend") >= 2
    assert evaluation.metrics["macro_f1"] > settings.gate_min_macro_f1


@pytest.mark.slow
def test_the_default_recipe_on_the_same_tweets_flips_nothing(
    settings: Settings, muslim_negative: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    result, evaluation = _gate(settings, {}, muslim_negative)
    assert evaluation.behavioral.identity_flips() == ([], 60)
    assert result.passed, result.to_dict()


@pytest.mark.slow
def test_train_records_the_flips_on_the_run_and_the_failed_check(
    settings: Settings, small_tweets: Dataset
) -> None:
    frame = _with_term_on_negatives(small_tweets.frame, "muslim", 4)
    biased = Dataset(source="biased", frame=frame, version=content_version(frame))
    result = train(settings, dataset=biased, params={"mask_identity": "false"})
    flips, _ = result.evaluation.behavioral.identity_flips()
    assert {c.name for c in result.gate.failures()} == {"identity_flips"}
    run = Registry(settings).client.get_run(result.run_id)
    assert run.data.metrics["identity_flips"] == len(flips) >= 2
    assert run.data.tags["loopml.gate.failed_checks"] == "identity_flips"

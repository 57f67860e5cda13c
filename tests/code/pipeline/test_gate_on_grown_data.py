"""The gate compares champion and candidate only on rows that neither trained on (issue 21)."""

from __future__ import annotations

import pandas as pd
import pytest

from loopml.config import Settings
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.pipeline.train import evaluate_version, train
from loopml.registry import Registry
from loopml.store import open_settings_store


def _grown(base: Dataset, tweets: Dataset, extra: int) -> Dataset:
    new = tweets.frame.drop(base.frame.index, errors="ignore")
    new = new[new["domain"].isin(base.frame["domain"].unique())].sample(extra, random_state=2)
    frame = pd.concat([base.frame, new])
    return Dataset("grown", frame, content_version(frame))


@pytest.fixture
def champion(settings: Settings, small_tweets: Dataset) -> Settings:
    s = settings.model_copy(update={"gate_min_slice_f1": 0.2, "gate_min_macro_f1": 0.4})
    first = train(s, dataset=small_tweets)
    with open_settings_store(s) as store:
        promote(store, Registry(s), first.version)
    return s


@pytest.mark.slow
def test_a_retrain_on_grown_data_is_compared_on_rows_neither_model_saw(
    champion: Settings, small_tweets: Dataset, tweets: Dataset
) -> None:
    # The champion's data plus 150 plain new rows: the old rows keep their split, so the new
    # test split holds no row the champion trained on and the candidate is judged fairly.
    result = train(champion, dataset=_grown(small_tweets, tweets, 150))
    assert result.gate.comparison is not None
    assert result.gate.comparison.excluded == 0
    assert result.gate.comparison.rows == result.split_sizes["test"]
    tags = Registry(champion).version(result.version).tags
    assert tags["loopml.gate.compared_rows"] == str(result.split_sizes["test"])
    relative = {c.name: c for c in result.gate.checks if "champion" in c.detail}
    assert relative["macro_f1"].passed, relative["macro_f1"]
    # Same data, same recipe: the two models score alike on rows neither saw.
    assert abs(relative["macro_f1"].value - relative["macro_f1"].threshold - 0.01) < 0.03


@pytest.mark.slow
def test_rows_the_champion_trained_on_are_left_out_and_counted(
    champion: Settings, small_tweets: Dataset, tweets: Dataset
) -> None:
    # Another seed draws another split: most of the candidate's test rows are the champion's
    # training rows. Scored there, the champion would look far better than it is.
    other = champion.model_copy(update={"seed": champion.seed + 1, "gate_min_compared_rows": 50})
    result = train(other, dataset=_grown(small_tweets, tweets, 400))
    comparison = result.gate.comparison
    assert comparison is not None and comparison.known
    assert comparison.excluded > 0.6 * result.split_sizes["test"]
    assert comparison.rows + comparison.excluded == result.split_sizes["test"]
    macro = next(c for c in result.gate.checks if c.name == "macro_f1")
    assert f"on {comparison.rows} rows neither trained on" in macro.detail
    assert f"{comparison.excluded} the champion trained on left out" in macro.detail
    # Without leaving them out the champion's score would be its training score.
    assert macro.threshold + other.gate_f1_tolerance < 0.8
    assert macro.passed, macro


@pytest.mark.slow
def test_too_few_new_rows_fail_with_a_check_that_says_so(
    champion: Settings, small_tweets: Dataset, tweets: Dataset
) -> None:
    other = champion.model_copy(
        update={"seed": champion.seed + 1, "gate_min_compared_rows": 10_000}
    )
    result = train(other, dataset=_grown(small_tweets, tweets, 150))
    assert not result.gate.passed
    check = next(c for c in result.gate.checks if c.name == "compared_rows")
    assert not check.passed and "too few to compare" in check.detail
    # loopml evaluate re-runs the same gate on the version's own split.
    evaluation, gate = evaluate_version(other, result.version)
    assert "compared_rows" in {c.name for c in gate.failures()}
    assert evaluation.metrics["macro_f1"] > 0.4


@pytest.mark.slow
def test_a_challenger_trained_on_shuffled_labels_fails(
    champion: Settings, small_tweets: Dataset
) -> None:
    # Its own test split carries the shuffled labels too, and its baselines learn from them: only
    # the champion's own test split, with the champion's labels, and the champion's behavioral
    # pass rate say that it learned nothing.
    frame = small_tweets.frame.copy()
    frame["label"] = frame["label"].sample(frac=1.0, random_state=3).to_numpy()
    result = train(champion, dataset=Dataset("shuffled", frame, content_version(frame)))
    checks = {c.name: c for c in result.gate.checks}
    assert not result.gate.passed
    holdout = checks["holdout_macro_f1"]
    assert not holdout.passed and "champion's own test split" in holdout.detail, holdout
    assert holdout.value < 0.45 < holdout.threshold, holdout
    behavioral = checks["behavioral_pass_rate"]
    assert not behavioral.passed and "the champion passes" not in behavioral.detail, behavioral

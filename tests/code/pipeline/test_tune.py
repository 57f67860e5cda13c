from __future__ import annotations

import mlflow

from loopml.config import Settings
from loopml.data import Dataset
from loopml.pipeline.tune import tune
from loopml.registry import Registry


def test_tune_logs_one_nested_run_per_trial(settings: Settings, small_tweets: Dataset) -> None:
    seen: list[tuple[int, float]] = []
    result = tune(
        settings,
        dataset=small_tweets,
        trials=3,
        timeout_s=120,
        on_trial=lambda n, score: seen.append((n, score)),
    )
    assert result.trials == 3 and [n for n, _ in seen] == [0, 1, 2]
    assert result.best_macro_f1 == max(score for _, score in seen)
    assert set(result.best_params) == {"C", "ngram_max", "min_df", "class_weight"}
    client = Registry(settings).client
    children = client.search_runs(
        [client.get_run(result.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
    )
    assert len(children) == 3
    assert {r.data.metrics["validation_macro_f1"] for r in children} == {s for _, s in seen}
    assert mlflow.active_run() is None


def test_tune_stops_at_its_time_budget(settings: Settings, small_tweets: Dataset) -> None:
    result = tune(settings, dataset=small_tweets, trials=1000, timeout_s=1)
    assert 1 <= result.trials < 1000

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from loopml_test_recipes import register_plugins

from loopml.config import Settings
from loopml.data import Dataset
from loopml.pipeline.train import train
from loopml.pipeline.tune import declared_space, tune
from loopml.recipes.tfidf_logreg import TfidfLogReg
from loopml.registry import CHAMPION, Registry


def _children(settings: Settings, run_id: str) -> list[mlflow.entities.Run]:
    client = Registry(settings).client
    return client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
    )


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
    assert result.search.recipe == "tfidf-logreg" and "no champion" in result.reason
    assert result.search.start_params == TfidfLogReg.defaults()
    assert result.best_macro_f1 == max([result.search.start_macro_f1] + [s for _, s in seen])
    assert set(result.best_params) == set(TfidfLogReg.defaults())
    children = _children(settings, result.run_id)
    assert len(children) == 4, "the start run and one per trial"
    scores = {r.info.run_name: r.data.metrics["validation_macro_f1"] for r in children}
    assert {scores[f"trial-{n}"] for n, _ in seen} == {s for _, s in seen}
    assert scores["start"] == pytest.approx(result.search.start_macro_f1)
    assert mlflow.active_run() is None


def test_tune_stops_at_its_time_budget(settings: Settings, small_tweets: Dataset) -> None:
    result = tune(settings, dataset=small_tweets, trials=1000, timeout_s=1)
    assert 1 <= result.trials < 1000


@pytest.mark.slow
def test_train_tune_registers_the_best_trials_params(
    settings: Settings, small_tweets: Dataset
) -> None:
    result = train(settings, dataset=small_tweets, recipe="tfidf-logreg", tune_trials=3)
    assert result.tuning is not None and result.tuning.trials == 3
    children = _children(settings, result.run_id)
    assert len(children) == 4
    best = max(children, key=lambda r: r.data.metrics["validation_macro_f1"])
    assert best.data.metrics["validation_macro_f1"] == pytest.approx(result.tuning.best_macro_f1)
    # MLflow stores params as strings: compare through the recipe's own parameter model.
    best_params = TfidfLogReg(best.data.params).params_dict()
    assert result.recipe_params == result.tuning.best_params == best_params
    tags = Registry(settings).version(result.version).tags
    assert tags["loopml.recipe"] == "tfidf-logreg"
    assert json.loads(tags["loopml.recipe_params"]) == best_params
    run = Registry(settings).client.get_run(result.run_id)
    assert "tuned: best of 3 trials" in run.data.tags["loopml.recipe_reason"]


def test_tune_searches_a_plugins_own_space_from_the_champion(
    settings: Settings, small_tweets: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register_plugins(
        monkeypatch, tmp_path / "plugins", {"test-bow-nb": "loopml_test_recipes:BagOfWordsNB"}
    )
    champion = train(settings, dataset=small_tweets, recipe="test-bow-nb", params={"binary": "1"})
    registry = Registry(settings)
    registry.move_alias(CHAMPION, champion.version)

    result = tune(settings, dataset=small_tweets, trials=3, timeout_s=120)
    assert result.search.recipe == "test-bow-nb"
    assert result.reason == f"reused from champion version {champion.version}"
    assert result.search.start_params == {"alpha": 1.0, "binary": True}
    trials = [r for r in _children(settings, result.run_id) if r.info.run_name != "start"]
    assert len({r.data.params["alpha"] for r in trials}) == 3, "alpha is searched"
    assert {r.data.params["binary"] for r in trials} == {"True"}, "binary stays the champion's"


def test_a_declared_space_holds_its_points_and_its_fingerprint_follows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    space = declared_space("tfidf-logreg")
    assert set(space.distributions) == {
        "C",
        "ngram_max",
        "min_df",
        "max_features",
        "sublinear_tf",
        "strip_urls",
        "class_weight",
    }
    assert space.contains("C", 0.1) and space.contains("C", 30.0)
    assert not space.contains("C", 31.0) and not space.contains("C", "5")
    assert space.contains("ngram_max", 3) and not space.contains("ngram_max", 4)
    assert space.contains("max_features", 20_000) and not space.contains("max_features", 1000)
    # fixed on purpose (a fairness requirement, a convergence budget): never a point of it
    assert not space.contains("mask_identity", False)
    assert not space.contains("max_iter", 1000)
    assert declared_space("tfidf-logreg").fingerprint == space.fingerprint
    monkeypatch.setattr(
        TfidfLogReg,
        "search_space",
        classmethod(lambda cls, trial: {"C": trial.suggest_float("C", 0.1, 40.0, log=True)}),
    )
    wider = declared_space("tfidf-logreg")
    assert wider.fingerprint != space.fingerprint and wider.contains("C", 35.0)

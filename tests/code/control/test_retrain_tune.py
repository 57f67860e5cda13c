"""ML Test Score, Model 3: the controller's retrain tunes. A bounded Optuna search of the recipe's
declared space, from the champion's parameters, on the retrain's validation split; the search is
recorded per version (tags, tuning.json, the audit record); parameters it changed roll out under
the ``policy:retrain-tune`` approval, which covers nothing a human set by hand."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import pytest
from logged_predictions import insert_predictions

from loopml.config import Settings
from loopml.control.approval import (
    APPROVED_BY_TAG,
    APPROVED_SPACE_TAG,
    APPROVED_SPEC_TAG,
    TUNE_POLICY,
    check_approved,
)
from loopml.control.controller import Controller
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version, load_splits
from loopml.errors import ApprovalRequiredError
from loopml.pipeline import tune as tune_module
from loopml.pipeline.train import train
from loopml.pipeline.tune import declared_space
from loopml.recipes.tfidf_logreg import TfidfLogReg
from loopml.registry import RECIPE_PARAMS_TAG, Registry
from loopml.routing import load_routing
from loopml.store import open_store

TRIALS = 4
# A champion a person set by hand (approved then): strong regularisation, unigrams only. Inside
# the declared space, so the search can move away from it; far from the best point of it.
HAND_SET = {"C": "0.1", "ngram_max": "1", "min_df": "5"}


def _loop_settings(settings: Settings, trials: int = TRIALS) -> Settings:
    return settings.model_copy(
        update={
            "monitor_interval_s": 0,
            "retrain_cooldown_s": 0,
            "retrain_min_labeled": 200,
            "retrain_tune_trials": trials,
            "retrain_tune_seconds": 120.0,
            # the search is under test, on every feedback row (the noise check would hold back
            # some of the 500 shifted ones and change what the gate compares)
            "noise_check": False,
        }
    )


def _tuned_retrain(
    settings: Settings, tweets: Dataset, params: dict[str, str] | None = HAND_SET
) -> tuple[Registry, str, str, Any]:
    """A champion (hand-set by default) on tweets without the airline ones, airline feedback
    (the shift), one controller tick; returns the registry, champion, retrained version and the
    tick."""
    others = tweets.frame[tweets.frame["domain"] != "airline"].sample(2000, random_state=0)
    first = train(
        settings,
        dataset=Dataset("non-airline", others, content_version(others)),
        recipe="tfidf-logreg",
        params=params,
    )
    registry = Registry(settings)
    airline = tweets.frame[tweets.frame["domain"] == "airline"].sample(500, random_state=0)
    with open_store(settings.db_url) as store:
        promote(store, registry, first.version, force=True, reason="a first, hand-set champion")
        insert_predictions(
            settings,
            first.version,
            registry.load(first.version),
            airline["text"].tolist(),
            airline["label"].tolist(),
        )
        tick = Controller(settings, store).tick()
        assert tick.version is not None, tick
        return registry, first.version, tick.version, tick


@pytest.mark.slow
def test_a_retrain_searches_records_it_and_rolls_out_tuned_params_under_the_policy(
    settings: Settings, tweets: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _loop_settings(settings)
    registry, champion, version, tick = _tuned_retrain(settings, tweets)
    # the loop went on: no human approved anything, the tuned version is in a canary
    assert tick.action == "rollout_started", tick.to_dict()
    with open_store(settings.db_url) as store:
        routing = load_routing(store, settings.model_name)
        assert (routing.champion, routing.challenger) == (champion, version)
        audit = {e.action: e for e in store.history(settings.model_name, limit=10)}
    mv = registry.version(version)

    # what was searched, per version: trials, start (the champion's params) vs best, chosen params
    tags = mv.tags
    assert tags["loopml.tune.trials"] == str(TRIALS)
    start = float(tags["loopml.tune.start_macro_f1"])
    best = float(tags["loopml.tune.best_macro_f1"])
    assert best > start + 0.02, (start, best)  # the hand-set start validates clearly worse
    assert tags["loopml.tune.changed"] == "true"
    space = declared_space("tfidf-logreg")
    assert tags["loopml.tune.space"] == space.fingerprint
    chosen = json.loads(tags[RECIPE_PARAMS_TAG])
    start_params = TfidfLogReg(HAND_SET).params_dict()
    assert chosen != start_params
    changed = {k for k in chosen if chosen[k] != start_params[k]}
    assert changed <= set(space.distributions), changed  # only what the space tunes
    run = registry.client.get_run(mv.run_id)
    assert run.data.metrics["start_validation_macro_f1"] == pytest.approx(start, abs=1e-4)
    assert run.data.metrics["best_validation_macro_f1"] == pytest.approx(best, abs=1e-4)
    assert run.data.metrics["tune_trials"] == TRIALS
    nested = registry.client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in nested) == ["start"] + [
        f"trial-{i}" for i in range(TRIALS)
    ]

    # the search was scored on shifted (feedback) rows too, and the chosen parameters were then
    # fitted on every new row but the holdout: a search costs the challenger no labels
    record = audit["retrain"].details["tuning"]
    assert record["validation_feedback_rows"] > 0
    trained = load_splits(registry.client, mv.run_id, ("train", "validation", "test"))
    feedback_rows = int(run.data.tags["loopml.feedback_rows"])
    in_train = int((trained["train"]["domain"] == "feedback").sum())
    in_test = int((trained["test"]["domain"] == "feedback").sum())
    assert (trained["validation"]["domain"] == "feedback").sum() == 0
    assert in_train + in_test == feedback_rows and in_train > record["validation_feedback_rows"]

    # the audit record of the retrain carries the search and who approved its parameters
    assert record["trials"] == TRIALS
    assert record["best_params"] == chosen
    assert record["start_params"] == start_params
    assert record["best_validation_macro_f1"] == pytest.approx(best, abs=1e-4)
    assert record["approval"]["by"] == TUNE_POLICY
    assert record["approval"]["space"] == space.fingerprint
    assert set(record["approval"]["change"]["params"]) == changed

    # approved by the policy, on the version, bound to exactly its spec and space
    assert tags[APPROVED_BY_TAG] == TUNE_POLICY
    assert tags[APPROVED_SPACE_TAG] == space.fingerprint
    check_approved(registry, mv)

    # The rule covers nothing else. `loopml train -p C=5` (inside the space) with the policy's
    # tags copied onto it is a human's call:
    data = load_splits(registry.client, mv.run_id, ("train", "validation", "test"))
    frame = pd.concat(data.values())
    by_hand = train(
        settings, dataset=Dataset("by-hand", frame, content_version(frame)), params={"C": "5"}
    ).version
    registry.set_tags(by_hand, {k: tags[k] for k in (APPROVED_BY_TAG, APPROVED_SPACE_TAG)})
    with pytest.raises(ApprovalRequiredError, match="must review"):
        check_approved(registry, registry.version(by_hand))
    # even with the digest of its own spec: only a controller retrain's search is covered
    spec = {"recipe": "tfidf-logreg", "params": TfidfLogReg(HAND_SET | {"C": "5"}).params_dict()}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    registry.set_tags(by_hand, {APPROVED_SPEC_TAG: digest})
    with pytest.raises(ApprovalRequiredError, match="not trained by the controller's retrain"):
        check_approved(registry, registry.version(by_hand))

    # the recipe's space changed since the search: the tuned version's approval no longer holds
    monkeypatch.setattr(
        TfidfLogReg,
        "search_space",
        classmethod(lambda cls, trial: {"C": trial.suggest_float("C", 0.1, 1000.0, log=True)}),
    )
    with pytest.raises(ApprovalRequiredError, match="search space is not the one searched"):
        check_approved(registry, mv)


@pytest.mark.slow
def test_a_tuned_version_the_gate_refuses_is_retrained_with_the_champions_params(
    settings: Settings, tweets: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A space whose only point leaves identity terms unmasked: it may validate better, and the
    # gate refuses any identity flip (its own check), so the search's pick fails the gate.
    monkeypatch.setattr(
        TfidfLogReg,
        "search_space",
        classmethod(
            lambda cls, trial: {
                "mask_identity": trial.suggest_categorical("mask_identity", [False])
            }
        ),
    )
    # Whether unmasked scores above the start on validation is a coin toss (it did in CI, it
    # tied here): the search is made to believe its pick is better; the gate, not the
    # search's estimate, is under test.
    real_score = tune_module._score

    def optimistic(recipe: Any, splits: Any, experiment: str, name: str) -> float:
        score = real_score(recipe, splits, experiment, name)
        return score + 0.05 if name.startswith("trial") else score

    monkeypatch.setattr(tune_module, "_score", optimistic)
    settings = _loop_settings(settings, trials=1).model_copy(
        # 2,000 tweets are too few for bigrams to clear the unigram baseline by the default margin
        update={
            "retrain_tune_min_gain": 0.0,
            "gate_baseline_margin": -0.1,
            # A small champion retrained on airline feedback: its non-airline scores move by more
            # than the default tolerances; the fallback, not those checks, is under test here.
            "gate_slice_tolerance": 0.1,
            "gate_min_slice_f1": 0.2,
            "gate_trusted_tolerance": 0.1,
            "gate_f1_tolerance": 0.05,
        }
    )
    registry, _, version, tick = _tuned_retrain(settings, tweets, params=None)
    with open_store(settings.db_url) as store:
        audit = {e.action: e for e in store.history(settings.model_name, limit=10)}
    assert tick.action == "rollout_started", (tick.reason, [e.details for e in audit.values()])
    record = audit["retrain"].details["tuning"]
    refused = record["refused"]
    assert "identity_flips" in refused["failed_checks"], record
    assert refused["best_params"]["mask_identity"] is False
    assert (
        record["trials"] == 0 and "retrained with the champion's parameters" in record["fallback"]
    )
    # the version that goes on is the champion's parameters', and it says what it replaced
    mv = registry.version(version)
    assert mv.tags["loopml.tune.fallback_from"] == refused["version"] != version
    assert json.loads(mv.tags[RECIPE_PARAMS_TAG])["mask_identity"] is True

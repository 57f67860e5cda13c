"""Retraining on the champion's data plus newly labelled feedback, keeping lineage and test split.

The new dataset is the champion's own splits (downloaded from its MLflow run) plus the feedback
texts with their labels. Feedback rows get the domain ``feedback``; a holdout of them joins the
original test split, so the gate compares challenger and champion on the original test split and
on new labelled data (as the ``feedback`` slice) at once; the gate also holds the challenger to
the original test split alone (the trusted holdout, see :mod:`loopml.pipeline.gate`).

Label provenance: every feedback row carries the key id that gave it. Retraining counts the labels
per key, can cap the share one key contributes (``LOOPML_RETRAIN_MAX_KEY_SHARE``), and writes the
counts to the MLflow run (``label_provenance.json``, tag ``loopml.label_keys``) and to the result
that the controller puts in its audit record.

Label noise: with ``LOOPML_NOISE_CHECK`` the new feedback rows first go through the confident-
learning check of :mod:`loopml.labels.noise` (the champion's recipe cross-validated on the
feedback, its train split trusted); rows it marks are held back for review and counted on the
run (``noise_*`` metrics, ``loopml.noise.*`` tags, ``label_noise.json``) and in the result the
controller puts in its audit record.

Tuning inside the loop (ML Test Score, Model 3): with ``LOOPML_RETRAIN_TUNE_TRIALS`` > 0 (8 by
default) a retrain first searches the recipe's declared space with Optuna, from the champion's
parameters (always scored, as the ``start`` trial: the search never returns worse ones on
validation), up to that many trials and ``LOOPML_RETRAIN_TUNE_SECONDS``. A share of the new
labelled rows joins the search's validation rows, so it is scored on the shifted data too; the
best parameters are then fitted on all the new rows (a search costs the challenger no labels);
the version and the run record the search (``loopml.tune.*`` tags, ``tuning.json``) and the
controller's audit record holds it. Parameters the search changed are approved by the
``policy:retrain-tune`` rule of :mod:`loopml.control.approval`, which covers only points of that
declared space. Three guards: the best replaces the champion's parameters only if it gains more
than ``LOOPML_RETRAIN_TUNE_MIN_GAIN``; no search when the new labels, fitted with the champion's
own parameters, lower its trusted validation F1 (better parameters could hide poisoned labels from
the gate); and a tuned version the gate refuses is followed by a retrain with the champion's
parameters, so tuning never leaves the loop worse off than reusing them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from loopml.config import Settings
from loopml.control.approval import approve_by_policy
from loopml.data import DataRules, Dataset, Splits, content_version, load_splits, validate_frame
from loopml.errors import RegistryError, TrainingError
from loopml.labels.noise import NoiseReport, screen_feedback, set_run
from loopml.pipeline.choice import choose_recipe
from loopml.pipeline.gate import FEEDBACK_DOMAIN
from loopml.pipeline.train import TrainResult, train
from loopml.pipeline.tune import Search, declared_space
from loopml.registry import Registry
from loopml.routing import CHAMPION
from loopml.store import open_settings_store

__all__ = [
    "FEEDBACK_DOMAIN",
    "cap_per_key",
    "champion_splits",
    "check_data",
    "new_labeled_rows",
    "record_noise",
    "record_search",
    "retrain",
    "screen_noise",
]

log = logging.getLogger(__name__)


def champion_splits(registry: Registry) -> tuple[Splits, str]:
    """The champion's train/validation/test splits and its dataset source, from MLflow lineage."""
    champion = registry.alias(CHAMPION)
    if champion is None or not champion.run_id:
        raise RegistryError("no champion with a training run: nothing to retrain from")
    try:
        parts = load_splits(registry.client, champion.run_id, ("train", "validation", "test"))
        source = registry.client.get_run(champion.run_id).data.tags.get("loopml.source", "?")
    except MlflowException as exc:
        raise RegistryError(
            f"champion {champion.version}: its data splits are missing: {exc.message}"
        ) from exc
    return Splits(parts["train"], parts["validation"], parts["test"], seed=0), source


def new_labeled_rows(feedback: pd.DataFrame, splits: Splits, labels: set[str]) -> pd.DataFrame:
    """Feedback rows whose text the splits do not hold yet, with a known label (columns text,
    label, domain, key_id: ``unknown`` where the feedback frame has no provenance)."""
    known = set(splits.train["text"]) | set(splits.validation["text"]) | set(splits.test["text"])
    rows = feedback[~feedback["text"].isin(known) & feedback["label"].isin(labels)]
    rows = rows.drop_duplicates("text").assign(domain=FEEDBACK_DOMAIN)
    if "key_id" not in rows.columns:
        rows = rows.assign(key_id="unknown")
    return rows[["text", "label", "domain", "key_id"]]


def cap_per_key(rows: pd.DataFrame, max_share: float) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``rows`` with at most ``max_share`` of them (rounded down, at least 1) from any one key,
    keeping each key's first rows; and the provenance: labels per key, kept and dropped."""
    given = rows["key_id"].value_counts()
    limit = len(rows) if max_share >= 1 else max(1, math.floor(max_share * len(rows)))
    kept = rows[rows.groupby("key_id").cumcount() < limit]
    used = kept["key_id"].value_counts()
    provenance = {
        "labels": len(rows),
        "used": len(kept),
        "max_key_share": max_share,
        "by_key": {str(k): int(v) for k, v in given.items()},
        "dropped_by_cap": {
            str(k): int(v - used.get(k, 0)) for k, v in given.items() if v > used.get(k, 0)
        },
        "top_key_share": round(float(used.max() / len(kept)), 4) if len(kept) else 0.0,
    }
    return kept, provenance


def screen_noise(
    settings: Settings, registry: Registry, old: Splits, rows: pd.DataFrame
) -> tuple[pd.DataFrame, NoiseReport]:
    """``rows`` less the feedback held back as likely mislabelled (:mod:`loopml.labels.noise`),
    checked with the champion's recipe against its train split (trusted), and the report."""
    if not settings.noise_check:
        return rows, NoiseReport.off(settings)
    recipe = choose_recipe(registry).recipe
    with open_settings_store(settings) as store:
        return screen_feedback(settings, store, recipe, old.train, rows, model_name=registry.name)


def record_noise(
    settings: Settings, registry: Registry, result: TrainResult, noise: NoiseReport
) -> None:
    """The noise check's counts on the retrain's run (metrics, ``label_noise.json``), the run on
    the rows it held back, and the report on ``result`` (for the controller's audit record)."""
    result.noise = noise.to_dict()
    if not noise.enabled:
        return
    for name, value in noise.metrics().items():
        registry.client.log_metric(result.run_id, name, value)
    registry.client.log_dict(result.run_id, result.noise, "label_noise.json")
    if noise.held_ids:
        with open_settings_store(settings) as store:
            set_run(store, noise.held_ids, result.run_id)


def check_data(
    settings: Settings, old: Splits, new: pd.DataFrame, source: str, labels: set[str]
) -> None:
    """Validate the champion's data plus the ``new`` feedback rows as training data is validated
    (same schema, label set and bounds); ``ValidationError`` otherwise. Rows are numbered from 1:
    the champion's train, validation and test rows first, then the feedback rows, whose range the
    message names so that a bad row is traced back to the feedback."""
    frame = pd.concat([old.train, old.validation, old.test, new[["text", "label", "domain"]]])
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    first = len(frame) - len(new) + 1
    where = f"{source}+feedback (rows {first}-{len(frame)} are feedback)"
    validate_frame(
        frame, source=where, labels=sorted(labels), rules=DataRules.from_settings(settings)
    )


def retrain(
    settings: Settings,
    registry: Registry,
    feedback: pd.DataFrame,
    *,
    trigger: str,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a challenger on the champion's data plus ``feedback`` (columns text, label).

    ``progress`` is called with each pipeline step's name before it runs (the controller renews
    its lease there, so that one that lost it never registers a version)."""
    old, source = champion_splits(registry)
    labels = set(old.train["label"])
    screened, noise = screen_noise(settings, registry, old, new_labeled_rows(feedback, old, labels))
    new, provenance = cap_per_key(screened, settings.retrain_max_key_share)
    new = new.drop(columns="key_id")  # provenance goes to the run, not into the data's version
    if len(new) < 10:
        raise TrainingError(f"only {len(new)} new labelled texts: not enough to retrain")
    check_data(settings, old, new, source, labels)
    new_train, holdout = _split_off(new, settings.retrain_holdout, settings.seed)
    trials = _trials(settings, registry)
    splits = Splits(
        train=pd.concat([old.train, new_train]),
        validation=old.validation,
        test=pd.concat([old.test, holdout]),
        seed=settings.seed,
    )
    # The search scores trials on a share of the new labels too (the shift is in them); the
    # chosen parameters are then fitted on all of them, so a search costs the model no labels.
    searched, new_valid = _split_off(new_train, settings.validation_size, settings.seed)
    search_splits = Splits(
        train=pd.concat([old.train, searched]),
        validation=pd.concat([old.validation, new_valid]),
        test=splits.test,
        seed=settings.seed,
    )
    skipped = (
        _data_harm(settings, registry, search_splits.train, old.validation) if trials else None
    )
    if skipped is not None:
        # Better parameters could hide what the labels did (poisoned ones: the trusted holdout
        # check compares with the champion): with the champion's own, the gate judges the data.
        log.warning("retraining without a search: %s", skipped)
        trials = 0
    frame = pd.concat([splits.train, splits.validation, splits.test])
    dataset = Dataset(source=f"{source}+feedback", frame=frame, version=content_version(frame))
    keys = json.dumps(provenance["by_key"], sort_keys=True)
    tags = {
        "loopml.kind": "retrain",
        "loopml.trigger": trigger,
        "loopml.feedback_rows": str(len(new)),
        # MLflow caps tag values; the whole table is in label_provenance.json.
        "loopml.label_keys": keys if len(keys) <= 4000 else keys[:3990] + "...",
        "loopml.top_key_share": str(provenance["top_key_share"]),
        **noise.tags(),
    }

    def run(trials: int) -> TrainResult:
        result = train(
            settings,
            dataset=dataset,
            splits=splits,
            search_splits=search_splits if trials else None,
            recipe=None,  # the champion's recipe and parameters; the run records why (choice.py)
            tune_trials=trials,  # searched from them, the start trial
            tune_timeout_s=settings.retrain_tune_seconds,
            tune_min_gain=settings.retrain_tune_min_gain,
            run_name=f"retrain-{trigger}",
            progress=progress,
            tags=tags,
        )
        registry.client.log_dict(result.run_id, provenance, "label_provenance.json")
        result.provenance = provenance
        record_noise(settings, registry, result, noise)
        return result

    result = run(trials)
    if result.tuning is not None:
        result.tuning_record = record_search(registry, result, result.tuning) | {
            "validation_feedback_rows": len(new_valid)
        }
        if result.tuning_record["changed"] and not result.gate.passed:
            result = _fall_back(registry, result, run)
    elif skipped is not None:
        result.tuning_record = {"trials": 0, "skipped": skipped}
        registry.client.set_tag(result.run_id, "loopml.tune.skipped", skipped[:4000])
        registry.set_tags(result.version, {"loopml.tune.skipped": skipped[:4000]})
    return result


def _fall_back(
    registry: Registry, tuned: TrainResult, run: Callable[[int], TrainResult]
) -> TrainResult:
    """Train again with the champion's parameters after the tuned version failed its gate:
    validation macro-F1 is not every check of the gate (a slice can lose), and a search that
    keeps choosing the same refused parameters must not leave the loop worse than reusing
    them. The result's ``tuning_record`` names the refused version and its search."""
    failed = ", ".join(c.name for c in tuned.gate.failures())
    why = (
        f"tuned version {tuned.version} failed the gate ({failed}): retrained with the "
        "champion's parameters"
    )
    log.warning("%s", why)
    result = run(0)
    refused = (tuned.tuning_record or {}) | {"version": tuned.version, "failed_checks": failed}
    result.tuning_record = {"trials": 0, "fallback": why, "refused": refused}
    registry.client.set_tag(result.run_id, "loopml.tune.fallback_from", tuned.version)
    registry.set_tags(result.version, {"loopml.tune.fallback_from": tuned.version})
    return result


def _data_harm(
    settings: Settings, registry: Registry, train_rows: pd.DataFrame, trusted: pd.DataFrame
) -> str | None:
    """Why the retrain's data, fitted with the champion's own recipe and parameters, scores
    worse than the champion on the ``trusted`` validation rows (the champion's, no feedback):
    macro-F1 or a class's F1 lower by more than ``LOOPML_GATE_TRUSTED_TOLERANCE``; None if not.
    One fit: the price of knowing that a search does not mask what the new labels did."""
    champion = registry.alias(CHAMPION)
    if champion is None or trusted.empty:
        return None
    recipe = choose_recipe(registry).recipe
    fitted = recipe.fit(train_rows["text"].tolist(), train_rows["label"].tolist())
    texts, truth = trusted["text"].tolist(), trusted["label"].tolist()
    labels = sorted(set(truth))
    scores = {}
    for who, model in (("champion", registry.load(str(champion.version))), ("data", fitted)):
        predicted = model.predict(texts)
        per_class = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
        scores[who] = {"macro-F1": float(per_class.mean())} | {
            f"F1 of {label}": float(f) for label, f in zip(labels, per_class, strict=True)
        }
    tolerance = settings.gate_trusted_tolerance
    worse = [
        f"{name} {scores['data'][name]:.3f} < {before:.3f}"
        for name, before in scores["champion"].items()
        if scores["data"][name] < before - tolerance
    ]
    if not worse:
        return None
    return (
        f"with champion {champion.version}'s own parameters the new labels score lower on its "
        f"trusted validation rows ({', '.join(worse)}; tolerance {tolerance:g}): no search, "
        "the gate judges the data alone"
    )


def _trials(settings: Settings, registry: Registry) -> int:
    """How many trials this retrain searches: ``LOOPML_RETRAIN_TUNE_TRIALS``, or 0 when the
    champion's recipe declares no search space (a plug-in may not: it is retrained as is)."""
    if settings.retrain_tune_trials == 0:
        return 0
    try:
        declared_space(choose_recipe(registry).recipe.name)
    except TrainingError as exc:
        log.warning("retraining without a search: %s", exc)
        return 0
    return settings.retrain_tune_trials


def _split_off(rows: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``rows`` split in two, the second holding ``share`` of them; stratified where both sides
    can hold every label (scikit-learn refuses otherwise)."""
    counts = rows["label"].value_counts()
    size = math.ceil(share * len(rows))
    fits = counts.min() >= 2 and min(size, len(rows) - size) >= len(counts)
    kept, split = train_test_split(
        rows, test_size=share, random_state=seed, stratify=rows["label"] if fits else None
    )
    return kept, split


def record_search(registry: Registry, result: TrainResult, found: Search) -> dict[str, Any]:
    """Record the retrain's search on its run and version: trials, the start's (champion's
    parameters) and the best validation macro-F1, the space's fingerprint, whether the chosen
    parameters differ from the start, and the policy approval of a change (see
    :func:`loopml.control.approval.approve_by_policy`); returns that record."""
    space = declared_space(found.recipe)
    changed = found.best_params != found.start_params
    approval = approve_by_policy(registry, result.version, space) if changed else None
    record = found.to_dict() | {
        "changed": changed,
        "space": space.fingerprint,
        "space_distributions": space.distributions,
        "approval": approval,
    }
    tags = {
        "loopml.tune.trials": str(found.trials),
        "loopml.tune.start_macro_f1": f"{found.start_macro_f1:.4f}",
        "loopml.tune.best_macro_f1": f"{found.best_macro_f1:.4f}",
        "loopml.tune.changed": str(changed).lower(),
        "loopml.tune.space": space.fingerprint,
    }
    client = registry.client
    for key, value in tags.items():
        client.set_tag(result.run_id, key, value)
    client.log_metric(result.run_id, "tune_trials", float(found.trials))
    client.log_dict(result.run_id, record, "tuning.json")
    registry.set_tags(result.version, tags)
    return record

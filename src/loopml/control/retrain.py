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
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.model_selection import train_test_split

from loopml.config import Settings
from loopml.data import DataRules, Dataset, Splits, content_version, load_splits, validate_frame
from loopml.errors import RegistryError, TrainingError
from loopml.pipeline.gate import FEEDBACK_DOMAIN
from loopml.pipeline.train import TrainResult, train
from loopml.registry import Registry
from loopml.routing import CHAMPION

__all__ = [
    "FEEDBACK_DOMAIN",
    "cap_per_key",
    "champion_splits",
    "check_data",
    "new_labeled_rows",
    "retrain",
]


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
    new, provenance = cap_per_key(
        new_labeled_rows(feedback, old, labels), settings.retrain_max_key_share
    )
    new = new.drop(columns="key_id")  # provenance goes to the run, not into the data's version
    if len(new) < 10:
        raise TrainingError(f"only {len(new)} new labelled texts: not enough to retrain")
    check_data(settings, old, new, source, labels)
    stratify = new["label"] if new["label"].value_counts().min() >= 2 else None
    new_train, holdout = train_test_split(
        new, test_size=settings.retrain_holdout, random_state=settings.seed, stratify=stratify
    )
    splits = Splits(
        train=pd.concat([old.train, new_train]),
        validation=old.validation,
        test=pd.concat([old.test, holdout]),
        seed=settings.seed,
    )
    frame = pd.concat([splits.train, splits.validation, splits.test])
    dataset = Dataset(source=f"{source}+feedback", frame=frame, version=content_version(frame))
    keys = json.dumps(provenance["by_key"], sort_keys=True)
    result = train(
        settings,
        dataset=dataset,
        splits=splits,
        recipe=None,  # the champion's recipe and parameters; the run records why (choice.py)
        run_name=f"retrain-{trigger}",
        progress=progress,
        tags={
            "loopml.kind": "retrain",
            "loopml.trigger": trigger,
            "loopml.feedback_rows": str(len(new)),
            # MLflow caps tag values; the whole table is in label_provenance.json.
            "loopml.label_keys": keys if len(keys) <= 4000 else keys[:3990] + "...",
            "loopml.top_key_share": str(provenance["top_key_share"]),
        },
    )
    registry.client.log_dict(result.run_id, provenance, "label_provenance.json")
    result.provenance = provenance
    return result

"""Retraining on the champion's data plus newly labelled feedback, keeping lineage and test split.

The new dataset is the champion's own splits (downloaded from its MLflow run) plus the feedback
texts with their labels. Feedback rows get the domain ``feedback``; a holdout of them joins the
original test split, so the gate compares challenger and champion on the original test split and
on new labelled data (as the ``feedback`` slice) at once.
"""

from __future__ import annotations

import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.model_selection import train_test_split

from loopml.config import Settings
from loopml.data import Dataset, Splits, content_version, load_splits
from loopml.errors import RegistryError, TrainingError
from loopml.pipeline.train import TrainResult, train
from loopml.registry import Registry
from loopml.routing import CHAMPION

__all__ = ["FEEDBACK_DOMAIN", "champion_splits", "new_labeled_rows", "retrain"]

FEEDBACK_DOMAIN = "feedback"


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
    """Feedback rows whose text the splits do not hold yet, with a known label."""
    known = set(splits.train["text"]) | set(splits.validation["text"]) | set(splits.test["text"])
    rows = feedback[~feedback["text"].isin(known) & feedback["label"].isin(labels)]
    rows = rows.drop_duplicates("text").assign(domain=FEEDBACK_DOMAIN)
    return rows[["text", "label", "domain"]]


def retrain(
    settings: Settings, registry: Registry, feedback: pd.DataFrame, *, trigger: str
) -> TrainResult:
    """Train a challenger on the champion's data plus ``feedback`` (columns text, label)."""
    old, source = champion_splits(registry)
    labels = set(old.train["label"])
    new = new_labeled_rows(feedback, old, labels)
    if len(new) < 10:
        raise TrainingError(f"only {len(new)} new labelled texts: not enough to retrain")
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
    return train(
        settings,
        dataset=dataset,
        splits=splits,
        run_name=f"retrain-{trigger}",
        tags={"loopml.trigger": trigger, "loopml.feedback_rows": str(len(new))},
    )

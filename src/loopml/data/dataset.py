"""Datasets: validated frames with a content-hash version, and deterministic stratified splits."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from loopml.data.sources import BUILTIN_TWEETS, read_source
from loopml.data.validate import DataRules, validate_frame
from loopml.errors import DataError

__all__ = ["Dataset", "Splits", "content_version", "load_dataset", "split_dataset"]

BUILTIN_LABELS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Dataset:
    """A validated dataset: columns ``text``, ``label``, ``domain``; version = content hash."""

    source: str
    frame: pd.DataFrame
    version: str

    @property
    def labels(self) -> list[str]:
        """Sorted class names."""
        return sorted(self.frame["label"].unique())

    def describe(self) -> dict[str, object]:
        """Row count, version, class and domain counts, text length statistics."""
        lengths = self.frame["text"].str.len()
        return {
            "source": self.source,
            "version": self.version,
            "rows": len(self.frame),
            "labels": self.frame["label"].value_counts().to_dict(),
            "domains": self.frame["domain"].value_counts().to_dict(),
            "text_length": {
                "mean": round(float(lengths.mean()), 1),
                "p50": float(lengths.median()),
                "max": int(lengths.max()),
            },
        }


@dataclass(frozen=True)
class Splits:
    """Train, validation and test frames cut from one dataset by one seed."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    seed: int

    def sizes(self) -> dict[str, int]:
        """Rows per split."""
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
        }


def content_version(frame: pd.DataFrame) -> str:
    """A short SHA-256 of the rows' text, label and domain, in order: same content, same version."""
    digest = hashlib.sha256()
    for text, label, domain in frame[["text", "label", "domain"]].itertuples(index=False):
        digest.update(f"{text}\x1f{label}\x1f{domain}\x1e".encode())
    return digest.hexdigest()[:16]


def load_dataset(
    source: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    labels: Sequence[str] | None = None,
    rules: DataRules | None = None,
) -> Dataset:
    """Read and validate ``source`` (with ``rules``' bounds when given); raises ``DataError``
    subclasses on unusable data."""
    frame = read_source(source, text_column=text_column, label_column=label_column)
    if labels is None and source == BUILTIN_TWEETS:
        labels = BUILTIN_LABELS
    frame = validate_frame(frame, source=source, labels=labels, rules=rules)
    frame = frame.astype({"text": str, "label": str, "domain": str})
    return Dataset(source=source, frame=frame, version=content_version(frame))


def _stratum(frame: pd.DataFrame) -> pd.Series:
    # Label x domain keeps per-domain slices stable across splits; rare combinations fall back.
    combo = frame["label"] + "|" + frame["domain"]
    counts = combo.value_counts()
    return combo.where(combo.map(counts) >= 10, frame["label"])


def split_dataset(
    dataset: Dataset, *, seed: int, test_size: float = 0.1, validation_size: float = 0.1
) -> Splits:
    """Deterministic stratified train/validation/test split of ``dataset`` by ``seed``."""
    frame = dataset.frame
    counts = frame["label"].value_counts()
    need = max(2, math.ceil(1 / min(test_size, validation_size)))  # one row per class per split
    small = counts[counts < need]
    if len(small):
        listed = ", ".join(f"{label!r} ({n})" for label, n in small.items())
        raise DataError(
            f"{dataset.source}: too few rows to split: class {listed}; a stratified split with "
            f"{test_size:.0%} test and {validation_size:.0%} validation needs {need} per class"
        )
    rest, test = train_test_split(
        frame, test_size=test_size, random_state=seed, stratify=_stratum(frame)
    )
    val_share = validation_size / (1 - test_size)
    train, validation = train_test_split(
        rest, test_size=val_share, random_state=seed, stratify=_stratum(rest)
    )
    return Splits(train=train, validation=validation, test=test, seed=seed)

"""Datasets: validated frames with a content-hash version, and splits by a hash of each row."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from loopml.data.sources import BUILTIN_TWEETS, read_source
from loopml.data.validate import DataRules, drop_duplicates, validate_frame
from loopml.errors import DataError

__all__ = [
    "Dataset",
    "Splits",
    "content_version",
    "load_dataset",
    "split_buckets",
    "split_dataset",
]

BUILTIN_LABELS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class Dataset:
    """A validated dataset: columns ``text``, ``label``, ``domain``; version = content hash."""

    source: str
    frame: pd.DataFrame
    version: str
    notes: tuple[str, ...] = ()  # what loading changed (repeated texts dropped), in words

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
            "notes": list(self.notes),
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
    notes: list[str] = []
    if rules is not None and rules.drop_duplicates:
        frame, notes = drop_duplicates(frame, source=source)
    frame = validate_frame(frame, source=source, labels=labels, rules=rules)
    frame = frame.astype({"text": str, "label": str, "domain": str})
    return Dataset(source, frame, content_version(frame), notes=tuple(notes))


def split_buckets(texts: pd.Series, seed: int) -> np.ndarray:
    """A number in [0, 1) per row from a hash of its text and ``seed``: what decides its split.

    A row's bucket depends on its own text only, so a row keeps its split whatever else is
    added or removed (TFX's ExampleGen splits by hash buckets for the same reason), and
    duplicates of one text always land in the same split.
    """
    salt = f"loopml-split:{seed}:".encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(salt + t.encode(), digest_size=8).digest(), "big")
            / 2.0**64
            for t in texts
        ),
        dtype=np.float64,
        count=len(texts),
    )


def split_dataset(
    dataset: Dataset, *, seed: int, test_size: float = 0.1, validation_size: float = 0.1
) -> Splits:
    """Deterministic train/validation/test split of ``dataset`` by a hash of each row's text.

    Rows with a bucket (:func:`split_buckets`) below ``test_size`` are test, below
    ``test_size + validation_size`` validation, the rest train: data that grows keeps the old
    rows where they were, so a champion never trained on a row that a later test split holds.
    A class too small to land in every split by hash alone lends its lowest-bucket rows.
    """
    frame = dataset.frame
    counts = frame["label"].value_counts()
    need = max(2, math.ceil(1 / min(test_size, validation_size)))  # one row per class per split
    small = counts[counts < need]
    if len(small):
        listed = ", ".join(f"{label!r} ({n})" for label, n in small.items())
        raise DataError(
            f"{dataset.source}: too few rows to split: class {listed}; a split with "
            f"{test_size:.0%} test and {validation_size:.0%} validation needs {need} per class"
        )
    bucket = pd.Series(split_buckets(frame["text"], seed), index=frame.index)
    part = pd.Series("train", index=frame.index)
    part[bucket < test_size + validation_size] = "validation"
    part[bucket < test_size] = "test"
    _lend_to_empty_splits(frame, bucket, part)
    return Splits(
        train=frame[part == "train"],
        validation=frame[part == "validation"],
        test=frame[part == "test"],
        seed=seed,
    )


def _lend_to_empty_splits(frame: pd.DataFrame, bucket: pd.Series, part: pd.Series) -> None:
    # A class absent from test or validation gets the text of lowest bucket (all its copies) from
    # a split that holds more than one of its rows (train first): 10 rows leave one to spare.
    labels = frame["label"]
    for label in labels.unique():
        rows = labels.index[labels == label]
        for name in ("test", "validation"):
            held = part[rows].value_counts()
            if held.get(name, 0):
                continue
            donor = "train" if held.get("train", 0) > 1 else str(held.idxmax())
            lowest = bucket[rows][part[rows] == donor].idxmin()
            part[frame["text"] == frame.at[lowest, "text"]] = name

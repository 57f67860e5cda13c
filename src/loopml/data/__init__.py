"""Data: sources, validation, versions and splits."""

from __future__ import annotations

from loopml.data.dataset import Dataset, Splits, content_version, load_dataset, split_dataset
from loopml.data.sources import BUILTIN_SOURCES, BUILTIN_TWEETS, domain_of, read_source
from loopml.data.splits import load_splits
from loopml.data.validate import DataRules, validate_frame

__all__ = [
    "BUILTIN_SOURCES",
    "BUILTIN_TWEETS",
    "DataRules",
    "Dataset",
    "Splits",
    "content_version",
    "domain_of",
    "load_dataset",
    "load_splits",
    "read_source",
    "split_dataset",
    "validate_frame",
]

"""The loopml database: engine, migrations and the small set of queries the stages share."""

from __future__ import annotations

from loopml.store._db import Store, open_settings_store, open_store
from loopml.store.actor import acting_as, current_actor
from loopml.store.artifacts import FileHashes, differences, hash_tree
from loopml.store.models import (
    PREDICTION_COLUMNS,
    AuditEntry,
    ControllerLease,
    Feedback,
    FeedbackReview,
    LabelAnnotation,
    LabelItem,
    LabelLease,
    ModelArtifact,
    MonitorResult,
    Prediction,
    RoutingState,
    ServingError,
)
from loopml.store.types import UtcDateTime

__all__ = [
    "PREDICTION_COLUMNS",
    "AuditEntry",
    "ControllerLease",
    "Feedback",
    "FeedbackReview",
    "FileHashes",
    "LabelAnnotation",
    "LabelItem",
    "LabelLease",
    "ModelArtifact",
    "MonitorResult",
    "Prediction",
    "RoutingState",
    "ServingError",
    "Store",
    "UtcDateTime",
    "acting_as",
    "current_actor",
    "differences",
    "hash_tree",
    "open_settings_store",
    "open_store",
]

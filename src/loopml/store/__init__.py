"""The loopml database: engine, migrations and the small set of queries the stages share."""

from __future__ import annotations

from loopml.store._db import Store, open_store
from loopml.store.actor import acting_as, current_actor
from loopml.store.models import (
    PREDICTION_COLUMNS,
    AuditEntry,
    Feedback,
    MonitorResult,
    Prediction,
    RoutingState,
    ServingError,
)
from loopml.store.types import UtcDateTime

__all__ = [
    "PREDICTION_COLUMNS",
    "AuditEntry",
    "Feedback",
    "MonitorResult",
    "Prediction",
    "RoutingState",
    "ServingError",
    "Store",
    "UtcDateTime",
    "acting_as",
    "current_actor",
    "open_store",
]

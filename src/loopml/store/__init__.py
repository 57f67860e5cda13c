"""The loopml database: engine, migrations and the small set of queries the stages share."""

from __future__ import annotations

from loopml.store._db import Store, open_store
from loopml.store.actor import acting_as, current_actor
from loopml.store.models import (
    AuditEntry,
    Feedback,
    MonitorResult,
    Prediction,
    RoutingState,
    ServingError,
)

__all__ = [
    "AuditEntry",
    "Feedback",
    "MonitorResult",
    "Prediction",
    "RoutingState",
    "ServingError",
    "Store",
    "acting_as",
    "current_actor",
    "open_store",
]

"""Column types of the loopml database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator

from loopml._time import as_utc

__all__ = ["UtcDateTime"]


class UtcDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always gives back aware UTC times.

    SQLite keeps no offset and returns naive times; PostgreSQL returns them in the session's time
    zone. Both come back in UTC. On write a naive time is taken to be UTC and an aware one is
    converted to UTC (SQLite would otherwise store its wall-clock time and drop the offset).
    The database type stays ``DateTime(timezone=True)``: no migration is involved.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to aware UTC before the driver sees the value."""
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        return as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Aware UTC whatever the back-end returned."""
        return None if value is None else as_utc(value)

"""Time helpers shared by every layer (no dependencies beyond the standard library)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc"]


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC time; a naive time is taken to be UTC already.

    loopml writes every time in UTC, so a naive value (SQLite, an ISO string without an offset)
    means UTC; an aware one is converted.
    """
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)

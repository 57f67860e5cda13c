"""Routing state and variant names: who serves (champion, optional challenger), in which mode,
at which weight.

The one neutral module that the registry, serving (the reader) and control (the writer) share.
One row per model in ``routing_state``. The controller and the CLI/admin API write it through
:func:`save_routing`; every serving replica polls :func:`load_routing`, so N replicas act as one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from loopml._time import as_utc
from loopml.store import RoutingState, Store

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "SHADOW",
    "SHADOW_SUFFIX",
    "Mode",
    "Routing",
    "effective_mode",
    "lease_expired",
    "load_routing",
    "routing_in",
    "save_routing",
]

CHAMPION = "champion"  # registry alias and variant of the version that serves
CHALLENGER = "challenger"  # registry alias and canary variant of the version under test
PREVIOUS = "previous"  # registry alias of the champion before the last promotion
SHADOW = "shadow"  # variant of the challenger's off-path scores in a shadow rollout
SHADOW_SUFFIX = ":shadow"  # shadow records: request id of the champion's answer + this suffix

Mode = Literal["none", "shadow", "canary"]


@dataclass
class Routing:
    """A snapshot of the routing state of one model."""

    model_name: str
    champion: str | None = None
    challenger: str | None = None
    mode: Mode = "none"
    weight: float = 0.0
    updated_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rollout(self) -> dict[str, Any] | None:
        """The rollout in progress, if any (kept in ``details['rollout']``)."""
        rollout = self.details.get("rollout")
        return rollout if isinstance(rollout, dict) and self.challenger else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model_name": self.model_name,
            "champion": self.champion,
            "challenger": self.challenger,
            "mode": self.mode,
            "weight": self.weight,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "rollout": self.rollout,
        }


def lease_expired(routing: Routing, lease_s: float, now: datetime | None = None) -> bool:
    """Whether the rollout's controller heartbeat is older than ``lease_s`` (or unreadable)."""
    rollout = routing.rollout
    if rollout is None:
        return False
    try:
        beat = datetime.fromisoformat(str(rollout["heartbeat_at"]))
    except (KeyError, TypeError, ValueError):
        return True
    beat = as_utc(beat)
    return ((now or datetime.now(UTC)) - beat).total_seconds() > lease_s


def effective_mode(routing: Routing, lease_s: float, now: datetime | None = None) -> Mode:
    """The mode serving obeys: ``none`` without a challenger, without a rollout record, or when
    the rollout's lease has expired (dead-man switch: the controller rolls back when it returns).
    """
    if routing.mode == "none" or routing.rollout is None:
        return "none"
    return "none" if lease_expired(routing, lease_s, now) else routing.mode


def _from_row(row: RoutingState) -> Routing:
    mode: Mode = row.mode if row.mode in ("none", "shadow", "canary") else "none"  # type: ignore[assignment]
    return Routing(
        row.model_name,
        row.champion_version,
        row.challenger_version,
        mode,
        float(row.weight),
        row.updated_at,
        dict(row.details or {}),
    )


def routing_in(session: Session, model_name: str, *, lock: bool = False) -> Routing:
    """The routing of ``model_name`` read inside ``session`` (row-locked on PostgreSQL if asked)."""
    row = session.get(RoutingState, model_name, with_for_update=lock)
    return _from_row(row) if row is not None else Routing(model_name)


def load_routing(store: Store, model_name: str) -> Routing:
    """The current routing of ``model_name`` (an empty one if nothing was ever written)."""
    with store.session() as session:
        return routing_in(session, model_name)


def save_routing(session: Session, routing: Routing) -> None:
    """Write ``routing`` inside ``session``; the caller's transaction holds the audit entry too."""
    row = session.get(RoutingState, routing.model_name)
    if row is None:
        row = RoutingState(model_name=routing.model_name)
        session.add(row)
    row.champion_version = routing.champion
    row.challenger_version = routing.challenger
    row.mode = routing.mode
    row.weight = routing.weight
    row.details = routing.details
    row.updated_at = datetime.now(UTC)
    session.flush()

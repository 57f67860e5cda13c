"""Does the gate's offline verdict predict the canary's live one? (ML Test Score, Model 2)

At the end of every rollout (promoted or rolled back) its audit record gets the pair measured on
that rollout (:func:`loopml.control.correlation.rollout_pair`): the **offline delta**, the
challenger's test macro-F1 minus the champion's as the gate scored them, and the **live delta**,
the challenger's macro-F1 minus the champion's on the labelled traffic each served during the
rollout. Over the last ``LOOPML_OFFLINE_ONLINE_ROLLOUTS`` ended rollouts this module measures how
often the two agree in sign (a delta of exactly 0 agrees only with 0) and, from three pairs on,
their Pearson correlation. When most of
them disagree, the offline number the gate decides on no longer tells which model is better in
production: :attr:`Agreement.alarm`, `loopml check offline-online` exits 1 and the
``LoopmlOfflineOnlineDisagree`` alert fires.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from loopml.store import AuditEntry, Store

__all__ = [
    "MIN_POINTS",
    "OFFLINE_ONLINE_KEY",
    "ROLLOUT_ENDS",
    "Agreement",
    "RolloutPair",
    "agreement",
]

# The key of the pair in a rollout's final audit record, and the actions that end a rollout.
OFFLINE_ONLINE_KEY = "offline_online"
ROLLOUT_ENDS = ("rollout_promote", "rollout_rollback")
# Fewer pairs than this are no evidence either way: no alarm, no correlation.
MIN_POINTS = 3


@dataclass(frozen=True)
class RolloutPair:
    """The offline and live deltas of one ended rollout (None where it could not be measured)."""

    audit_id: int
    ts: datetime
    outcome: str
    challenger: str | None
    champion: str | None
    offline_delta: float | None
    live_delta: float | None
    notes: str | None = None

    @property
    def complete(self) -> bool:
        """Both deltas were measured."""
        return self.offline_delta is not None and self.live_delta is not None

    @property
    def agrees(self) -> bool | None:
        """Offline and live deltas have the same sign (None unless both were measured)."""
        if self.offline_delta is None or self.live_delta is None:
            return None
        return bool(np.sign(self.offline_delta) == np.sign(self.live_delta))


@dataclass
class Agreement:
    """Sign agreement and correlation of offline and live deltas over the last rollouts."""

    last: int
    pairs: list[RolloutPair] = field(default_factory=list)

    @property
    def points(self) -> int:
        """Ended rollouts with both deltas measured."""
        return sum(p.complete for p in self.pairs)

    @property
    def agreeing(self) -> int:
        """Of those, the ones whose offline and live deltas have the same sign."""
        return sum(bool(p.agrees) for p in self.pairs)

    @property
    def sign_agreement(self) -> float | None:
        """Share of the measured rollouts whose deltas agree in sign."""
        return self.agreeing / self.points if self.points else None

    @property
    def correlation(self) -> float | None:
        """Pearson correlation of the deltas, from ``MIN_POINTS`` pairs on (None if constant)."""
        done = [p for p in self.pairs if p.complete]
        if len(done) < MIN_POINTS:
            return None
        offline = np.array([p.offline_delta for p in done], dtype=float)
        live = np.array([p.live_delta for p in done], dtype=float)
        if offline.std() == 0 or live.std() == 0:
            return None
        r = float(np.corrcoef(offline, live)[0, 1])
        return r if math.isfinite(r) else None

    @property
    def alarm(self) -> bool:
        """Most of at least ``MIN_POINTS`` measured rollouts disagree in sign."""
        return self.points >= MIN_POINTS and 2 * self.agreeing < self.points

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "last": self.last,
            "rollouts": len(self.pairs),
            "points": self.points,
            "agreeing": self.agreeing,
            "sign_agreement": self.sign_agreement,
            "correlation": self.correlation,
            "alarm": self.alarm,
            "pairs": [asdict(p) | {"agrees": p.agrees} for p in self.pairs],
        }


def _pair(entry: AuditEntry) -> RolloutPair:
    recorded = (entry.details or {}).get(OFFLINE_ONLINE_KEY) or {}
    return RolloutPair(
        audit_id=entry.id,
        ts=entry.ts,
        outcome=entry.action.removeprefix("rollout_"),
        # Both end records name the champion as from_version, the challenger as to_version.
        challenger=entry.to_version,
        champion=entry.from_version,
        offline_delta=recorded.get("offline_delta"),
        live_delta=recorded.get("live_delta"),
        notes=recorded.get("notes") if recorded else "not recorded",
    )


def agreement(store: Store, model_name: str, *, last: int) -> Agreement:
    """The offline/live pairs of the newest ``last`` ended rollouts of ``model_name``, newest
    first, and how well they agree."""
    query = (
        select(AuditEntry)
        .where(AuditEntry.model_name == model_name, AuditEntry.action.in_(ROLLOUT_ENDS))
        .order_by(AuditEntry.id.desc())
        .limit(last)
    )
    with store.session() as session:
        entries = list(session.scalars(query))
    return Agreement(last, [_pair(e) for e in entries])

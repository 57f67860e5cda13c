"""The label queue: which logged predictions to label next, leased to one annotator at a time.

``take`` ranks a model's unlabelled logged predictions that still have their text (see
:mod:`loopml.labels.strategies`), then leases the best ones to a holder in one short write
transaction: a ``label_leases`` row per item, until ``expires_at``. While the lease runs nobody
else gets the item; once it expires the item returns to the queue, unless it was sent to an
annotation tool (a ``label_items`` row: its label comes back through the tool); a label for it
(a ``feedback`` row) ends the lease. The write transaction is serialised per model (PostgreSQL: a
transaction-scoped advisory lock; SQLite: its single writer, taken by the transaction's first
statement), so two concurrent takes never lease one item twice nor overspend the budget.

The budget (``LOOPML_LABEL_BUDGET_PER_DAY``) counts, per model, the labels received in the last
24 hours plus the items handed out and not yet labelled (unexpired leases, and items sent to an
annotation tool in the last 24 hours): ``take`` returns at most what it leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from loopml._time import as_utc
from loopml.config import Settings
from loopml.errors import RequestError
from loopml.labels.items import QueueItem
from loopml.labels.strategies import DEFAULT_STRATEGY, STRATEGIES, Candidate, rank
from loopml.store import Feedback, LabelItem, LabelLease, Prediction, Store, open_settings_store

__all__ = [
    "DEFAULT_STRATEGY",
    "MAX_LIMIT",
    "STRATEGIES",
    "Budget",
    "LeaseInfo",
    "budget",
    "drifted_since",
    "item_dict",
    "leases",
    "release",
    "renew",
    "take",
]

DAY = timedelta(hours=1) * 24
MAX_LIMIT = 1000
_CHUNK = 500


@dataclass(frozen=True)
class Budget:
    """A model's label budget now: per day, spent (received + handed out) and left."""

    per_day: int
    received: int
    handed_out: int

    @property
    def used(self) -> int:
        """Labels received in the last 24 h plus items leased and not labelled yet."""
        return self.received + self.handed_out

    @property
    def left(self) -> int:
        """How many more items the queue may hand out now."""
        return max(0, self.per_day - self.used)

    def to_dict(self) -> dict[str, int]:
        """JSON-ready fields plus ``used`` and ``left``."""
        return {**asdict(self), "used": self.used, "left": self.left}


@dataclass(frozen=True)
class LeaseInfo:
    """One running lease."""

    request_id: str
    holder: str
    strategy: str
    priority: float
    leased_at: datetime
    expires_at: datetime


@contextmanager
def _store(settings: Settings, store: Store | None) -> Iterator[Store]:
    if store is not None:
        yield store
        return
    with open_settings_store(settings) as own:
        yield own


def _check(model_name: str, limit: int, strategy: str, holder: str) -> None:
    if not model_name.strip():
        raise RequestError("model: must be a non-empty model name")
    if not 1 <= limit <= MAX_LIMIT:
        raise RequestError(f"limit: must be between 1 and {MAX_LIMIT}, got {limit}")
    if strategy not in STRATEGIES:
        raise RequestError(
            f"strategy: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if not holder.strip() or len(holder) > 200:
        raise RequestError("holder: must be a non-empty name of at most 200 characters")


def take(
    settings: Settings,
    *,
    model_name: str,
    limit: int,
    strategy: str = DEFAULT_STRATEGY,
    holder: str,
    lease_s: float | None = None,
    seed: int | None = None,
    store: Store | None = None,
    now: datetime | None = None,
) -> list[QueueItem]:
    """Up to ``limit`` unlabelled predictions of ``model_name``, best first under ``strategy``,
    each leased to ``holder`` for ``lease_s`` seconds (default ``LOOPML_LABEL_LEASE_S``).

    Returns fewer (or none) when the budget or the unlabelled, unleased predictions run out.
    ``RequestError`` names a bad argument.
    """
    _check(model_name, limit, strategy, holder)
    duration = timedelta(seconds=settings.label_lease_s if lease_s is None else lease_s)
    if duration.total_seconds() <= 0:
        raise RequestError(f"lease_s: must be positive, got {duration.total_seconds()}")
    moment = as_utc(now) if now is not None else datetime.now(UTC)
    with _store(settings, store) as db:
        pool = _candidates(db, model_name, settings.label_queue_pool, moment)
        if not pool:
            return []
        since = drifted_since(db, model_name)
        with db.session() as session:
            expected = min(limit, _budget(session, settings, model_name, moment).left)
        if expected <= 0:
            return []
        ranked = rank(
            pool,
            strategy,
            limit=expected,
            drifted_since=since,
            seed=settings.seed if seed is None else seed,
        )
        return _lease(db, settings, model_name, ranked, limit, strategy, holder, duration, moment)


def _candidates(db: Store, model_name: str, pool: int, now: datetime) -> list[Candidate]:
    """The newest ``pool`` predictions of the model with text, no label and no running lease."""
    labelled = select(Feedback.request_id).where(Feedback.request_id == Prediction.request_id)
    leased = select(LabelLease.request_id).where(
        LabelLease.request_id == Prediction.request_id, LabelLease.expires_at > now
    )
    # a task in an annotation tool returns its label through the tool, whatever its lease did
    sent = select(LabelItem.request_id).where(LabelItem.request_id == Prediction.request_id)
    query = (
        select(Prediction)
        .where(Prediction.model_name == model_name)
        .where(Prediction.text.is_not(None))
        .where(~labelled.exists())
        .where(~leased.exists())
        .where(~sent.exists())
        .order_by(Prediction.ts.desc(), Prediction.request_id)
        .limit(pool)
    )
    with db.session() as session:
        return [
            Candidate(
                request_id=row.request_id,
                model_version=row.model_version,
                text=row.text or "",
                label=row.label,
                probabilities={str(k): float(v) for k, v in (row.probabilities or {}).items()},
                ts=row.ts,
            )
            for row in session.scalars(query)
        ]


def drifted_since(db: Store, model_name: str) -> datetime | None:
    """Start of the window the newest monitoring run of the model flagged as drifted, or None
    when it found no drift (or never ran)."""
    result = db.latest_monitor_result(model_name)
    if result is None:
        return None
    summary: dict[str, Any] = result.summary or {}
    if not summary.get("drift_detected"):
        return None
    first = (summary.get("window") or {}).get("first_ts")
    if not isinstance(first, str):
        return None
    try:
        return as_utc(datetime.fromisoformat(first))
    except ValueError:
        return None


def _lock(session: Session, model_name: str) -> None:
    """Serialise lease writes of one model until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"loopml-label-queue:{model_name}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _clean(session: Session, model_name: str, now: datetime) -> None:
    """Delete the model's leases that ended: expired, or labelled since. On SQLite this first
    write also takes the database's write lock for the rest of the transaction."""
    labelled = select(Feedback.request_id).where(Feedback.request_id == LabelLease.request_id)
    session.execute(
        delete(LabelLease)
        .where(LabelLease.model_name == model_name)
        .where((LabelLease.expires_at <= now) | labelled.exists())
        .execution_options(synchronize_session=False)
    )


def _budget(session: Session, settings: Settings, model_name: str, now: datetime) -> Budget:
    labelled = select(Feedback.request_id).where(Feedback.request_id == LabelLease.request_id)
    handed_out = session.scalar(
        select(func.count())
        .select_from(LabelLease)
        .where(LabelLease.model_name == model_name)
        .where(LabelLease.expires_at > now)
        .where(~labelled.exists())
    )
    # sent to an annotation tool today, not labelled yet, its lease over: still handed out
    sent = session.scalar(
        select(func.count())
        .select_from(LabelItem)
        .where(LabelItem.model_name == model_name)
        .where(LabelItem.pushed_at > now - DAY)
        .where(
            ~select(Feedback.request_id).where(Feedback.request_id == LabelItem.request_id).exists()
        )
        .where(
            ~select(LabelLease.request_id)
            .where(LabelLease.request_id == LabelItem.request_id, LabelLease.expires_at > now)
            .exists()
        )
    )
    received = session.scalar(
        select(func.count())
        .select_from(Feedback)
        .join(Prediction, Prediction.request_id == Feedback.request_id)
        .where(Prediction.model_name == model_name)
        .where(Feedback.ts > now - DAY)
    )
    handed_out = int(handed_out or 0) + int(sent or 0)
    return Budget(settings.label_budget_per_day, int(received or 0), handed_out)


def _taken(session: Session, ids: list[str], now: datetime) -> set[str]:
    """Which of ``ids`` got a label or a running lease since they were ranked."""
    leased = session.scalars(
        select(LabelLease.request_id).where(
            LabelLease.request_id.in_(ids), LabelLease.expires_at > now
        )
    )
    labelled = session.scalars(select(Feedback.request_id).where(Feedback.request_id.in_(ids)))
    sent = session.scalars(select(LabelItem.request_id).where(LabelItem.request_id.in_(ids)))
    return set(leased) | set(labelled) | set(sent)


def _lease(
    db: Store,
    settings: Settings,
    model_name: str,
    ranked: Sequence[tuple[Candidate, float]],
    limit: int,
    strategy: str,
    holder: str,
    duration: timedelta,
    now: datetime,
) -> list[QueueItem]:
    expires = now + duration
    chosen: list[tuple[Candidate, float]] = []
    with db.session() as session:
        _lock(session, model_name)
        _clean(session, model_name, now)
        wanted = min(limit, _budget(session, settings, model_name, now).left)
        for start in range(0, len(ranked), _CHUNK):
            if len(chosen) >= wanted:
                break
            chunk = ranked[start : start + _CHUNK]
            taken = _taken(session, [c.request_id for c, _ in chunk], now)
            free = [(c, p) for c, p in chunk if c.request_id not in taken]
            chosen.extend(free[: wanted - len(chosen)])
        session.add_all(
            LabelLease(
                request_id=c.request_id,
                model_name=model_name,
                holder=holder,
                strategy=strategy,
                priority=p,
                leased_at=now,
                expires_at=expires,
            )
            for c, p in chosen
        )
    return [_item(c, p, model_name, strategy, holder, expires) for c, p in chosen]


def _item(
    c: Candidate, priority: float, model_name: str, strategy: str, holder: str, expires: datetime
) -> QueueItem:
    return QueueItem(
        request_id=c.request_id,
        model_name=model_name,
        model_version=c.model_version,
        text=c.text,
        label=c.label,
        score=max(c.probabilities.values(), default=0.0),
        probabilities=c.probabilities,
        priority=priority,
        strategy=strategy,
        holder=holder,
        lease_expires=expires,
    )


def item_dict(item: QueueItem) -> dict[str, Any]:
    """JSON-ready fields of a queue item (times in ISO 8601)."""
    doc = asdict(item)
    doc["lease_expires"] = item.lease_expires.isoformat()
    return doc


def release(
    settings: Settings,
    request_ids: Sequence[str],
    holder: str,
    *,
    store: Store | None = None,
) -> int:
    """End ``holder``'s leases on ``request_ids`` (the items return to the queue); returns how
    many it ended. Leases of other holders are left alone."""
    return _per_chunk(
        settings,
        store,
        request_ids,
        lambda ids: (
            delete(LabelLease)
            .where(LabelLease.request_id.in_(ids))
            .where(LabelLease.holder == holder)
        ),
    )


def renew(
    settings: Settings,
    request_ids: Sequence[str],
    holder: str,
    *,
    lease_s: float | None = None,
    store: Store | None = None,
    now: datetime | None = None,
) -> int:
    """Extend ``holder``'s running leases on ``request_ids`` by ``lease_s`` from now; returns
    how many it extended (an expired or another holder's lease is not extended)."""
    moment = as_utc(now) if now is not None else datetime.now(UTC)
    expires = moment + timedelta(seconds=settings.label_lease_s if lease_s is None else lease_s)
    return _per_chunk(
        settings,
        store,
        request_ids,
        lambda ids: (
            update(LabelLease)
            .where(LabelLease.request_id.in_(ids))
            .where(LabelLease.holder == holder)
            .where(LabelLease.expires_at > moment)
            .values(expires_at=expires)
        ),
    )


def _per_chunk(
    settings: Settings,
    store: Store | None,
    request_ids: Sequence[str],
    statement: Callable[[list[str]], Any],
) -> int:
    """Run ``statement`` on the distinct ``request_ids`` a chunk at a time (bounded IN lists),
    in one transaction; returns how many rows it touched."""
    ids = list(dict.fromkeys(request_ids))
    if not ids:
        return 0
    with _store(settings, store) as db, db.session() as session:
        touched = 0
        for start in range(0, len(ids), _CHUNK):
            chunk = statement(ids[start : start + _CHUNK])
            result: Any = session.execute(chunk.execution_options(synchronize_session=False))
            touched += int(result.rowcount)
        return touched


def budget(
    settings: Settings, model_name: str, *, store: Store | None = None, now: datetime | None = None
) -> Budget:
    """The model's label budget now."""
    moment = as_utc(now) if now is not None else datetime.now(UTC)
    with _store(settings, store) as db, db.session() as session:
        return _budget(session, settings, model_name, moment)


def leases(
    settings: Settings, model_name: str, *, store: Store | None = None, now: datetime | None = None
) -> list[LeaseInfo]:
    """The model's running leases (unexpired, unlabelled), oldest first."""
    moment = as_utc(now) if now is not None else datetime.now(UTC)
    labelled = select(Feedback.request_id).where(Feedback.request_id == LabelLease.request_id)
    query = (
        select(LabelLease)
        .where(LabelLease.model_name == model_name)
        .where(LabelLease.expires_at > moment)
        .where(~labelled.exists())
        .order_by(LabelLease.leased_at, LabelLease.request_id)
    )
    with _store(settings, store) as db, db.session() as session:
        return [
            LeaseInfo(r.request_id, r.holder, r.strategy, r.priority, r.leased_at, r.expires_at)
            for r in session.scalars(query)
        ]

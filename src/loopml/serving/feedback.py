"""The feedback store: true labels for answered predictions, checked against what was answered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from loopml.errors import NotFoundError, RequestError, StoreError
from loopml.serving.metrics import Metrics
from loopml.serving.predlog import PredictionLog
from loopml.store import Feedback, Prediction, Store

__all__ = ["FeedbackStore"]

_UNAVAILABLE = "the loopml database is unavailable; retry later"


class FeedbackStore:
    """Stores feedback labels for predictions found in the database or still on their way there
    (the prediction log's in-memory index of uncommitted ids: no journal is ever read)."""

    def __init__(self, store: Store, predlog: PredictionLog | None, metrics: Metrics) -> None:
        self.store = store
        self.predlog = predlog
        self.metrics = metrics

    def record(self, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Store true labels for known predictions (all or nothing).

        Raises ``RequestError`` (a repeated id, a label the model does not know),
        ``NotFoundError`` (an id no prediction has) or ``StoreError`` (the database is down).
        """
        ids = [rid for rid, _ in items]
        if len(set(ids)) != len(ids):
            raise RequestError("each request_id may appear only once per feedback request")
        try:
            known = self._lookup(ids)
        except StoreError as exc:
            raise StoreError(_UNAVAILABLE) from exc
        unknown = [rid for rid in ids if rid not in known]
        if unknown:
            self.metrics.feedback.labels("unknown_id").inc(len(unknown))
            raise NotFoundError(
                f"unknown request_id(s): {', '.join(unknown[:10])}"
                " (ids come from POST /v1/predict answers)"
            )
        bad = [(rid, label) for rid, label in items if label not in known[rid][1]]
        if bad:
            self.metrics.feedback.labels("invalid_label").inc(len(bad))
            rid, label = bad[0]
            raise RequestError(
                f"label {label!r} for request_id {rid} is not one of the model's"
                f" classes {sorted(known[rid][1])}"
            )
        self._store(items)
        self.metrics.feedback.labels("accepted").inc(len(items))
        return [
            {
                "request_id": rid,
                "label": label,
                "predicted": known[rid][0],
                "correct": known[rid][0] == label,
            }
            for rid, label in items
        ]

    def _lookup(self, ids: list[str]) -> dict[str, tuple[str, list[str]]]:
        """request id -> (predicted label, classes), from the uncommitted index, else the DB.

        The index is read first: an id leaves it only after its row is committed, so an id
        missing from both was never answered by this process (no race with the writer).
        """
        found: dict[str, tuple[str, list[str]]] = {}
        overflow = False
        if self.predlog is not None:
            found, overflow = self.predlog.pending(ids)
        missing = [rid for rid in ids if rid not in found]
        if missing:
            with self.store.session() as session:
                query = select(Prediction.request_id, Prediction.label, Prediction.probabilities)
                rows = session.execute(query.where(Prediction.request_id.in_(missing)))
                for rid, label, probs in rows:
                    found[rid] = (label, list(probs))
        if overflow and any(rid not in found for rid in ids):
            # More uncommitted records than the index holds: an unknown id may be one of them.
            raise StoreError("predictions are still being stored; retry later")
        return found

    def _store(self, items: list[tuple[str, str]]) -> None:
        dialect = postgresql if self.store.engine.dialect.name == "postgresql" else sqlite
        now = datetime.now(UTC)
        rows = [{"request_id": rid, "ts": now, "label": label} for rid, label in items]
        stmt = dialect.insert(Feedback.__table__)
        # A later label for the same prediction corrects the earlier one.
        stmt = stmt.on_conflict_do_update(
            index_elements=["request_id"],
            set_={"label": stmt.excluded.label, "ts": stmt.excluded.ts},
        )
        try:
            with self.store.session() as session:
                session.execute(stmt, rows)
        except StoreError as exc:
            self.metrics.feedback.labels("error").inc(len(items))
            raise StoreError(_UNAVAILABLE) from exc

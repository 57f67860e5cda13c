"""The feedback store: true labels for answered predictions, checked against what was answered.

Labels train the next model, so each row records who gave it (the key id) and a label once given
never changes through ``POST /v1/feedback`` (409): only :func:`relabel`, an admin action written
to the audit log in the same transaction, changes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from loopml.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RequestError,
    StoreError,
)
from loopml.serving.metrics import Metrics
from loopml.serving.predlog import PredictionLog
from loopml.store import Feedback, Prediction, Store

__all__ = ["FeedbackStore", "relabel"]

_UNAVAILABLE = "the loopml database is unavailable; retry later"


class FeedbackStore:
    """Stores feedback labels for predictions found in the database or still on their way there
    (the prediction log's in-memory index of uncommitted ids: no journal is ever read)."""

    def __init__(self, store: Store, predlog: PredictionLog | None, metrics: Metrics) -> None:
        self.store = store
        self.predlog = predlog
        self.metrics = metrics

    def record(
        self,
        items: list[tuple[str, str]],
        key_id: str,
        model: str | None = None,
        scope: frozenset[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Store true labels for known predictions (all or nothing), given by ``key_id``; with
        ``model``, every id must be a prediction of that model; with ``scope`` (a key scoped
        to models), of one of those (403 otherwise).

        Raises ``NotFoundError`` (an id no prediction has), ``ConflictError`` (an id labelled
        before, an id of another model's prediction,
        before or twice in ``items``, a label the answering model does not know: refusals that
        depend on stored state, not on the request) or ``StoreError`` (the database is down).
        """
        ids = [rid for rid, _ in items]
        if len(set(ids)) != len(ids):
            raise ConflictError("each request_id may appear only once per feedback request")
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
        if model is not None:
            other = [rid for rid in ids if known[rid][2] != model]
            if other:
                self.metrics.feedback.labels("wrong_model").inc(len(other))
                rid = other[0]
                raise ConflictError(
                    f"request_id {rid} is a prediction of model {known[rid][2]!r}, not {model!r}:"
                    f" send its label to /v1/models/{known[rid][2]}/feedback"
                )
        if scope is not None:
            outside = [rid for rid in ids if known[rid][2] not in scope]
            if outside:
                rid = outside[0]
                raise PermissionDeniedError(
                    f"request_id {rid} is a prediction of model {known[rid][2]!r}: this API key"
                    f" is scoped to {', '.join(sorted(scope))}"
                )
        bad = [(rid, label) for rid, label in items if label not in known[rid][1]]
        if bad:
            self.metrics.feedback.labels("invalid_label").inc(len(bad))
            rid, label = bad[0]
            raise ConflictError(
                f"label {label!r} for request_id {rid} is not one of the model's"
                f" classes {sorted(known[rid][1])}"
            )
        self._store(items, key_id)
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

    def _lookup(self, ids: list[str]) -> dict[str, tuple[str, list[str], str]]:
        """request id -> (predicted label, classes, model name), from the uncommitted index,
        else the DB.

        The index is read first: an id leaves it only after its row is committed, so an id
        missing from both was never answered by this process (no race with the writer).
        """
        found: dict[str, tuple[str, list[str], str]] = {}
        overflow = False
        if self.predlog is not None:
            found, overflow = self.predlog.pending(ids)
        missing = [rid for rid in ids if rid not in found]
        if missing:
            with self.store.session() as session:
                query = select(
                    Prediction.request_id,
                    Prediction.label,
                    Prediction.probabilities,
                    Prediction.model_name,
                )
                rows = session.execute(query.where(Prediction.request_id.in_(missing)))
                for rid, label, probs, name in rows:
                    found[rid] = (label, list(probs), name)
        if overflow and any(rid not in found for rid in ids):
            # More uncommitted records than the index holds: an unknown id may be one of them.
            raise StoreError("predictions are still being stored; retry later")
        return found

    def _store(self, items: list[tuple[str, str]], key_id: str) -> None:
        dialect = postgresql if self.store.engine.dialect.name == "postgresql" else sqlite
        now = datetime.now(UTC)
        rows = [{"request_id": r, "ts": now, "label": lb, "key_id": key_id} for r, lb in items]
        ids = [rid for rid, _ in items]
        # One multi-row statement returning what it inserted: a label that a concurrent request
        # stored first is caught too (and this transaction rolled back).
        stmt = (
            dialect.insert(Feedback.__table__)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(Feedback.__table__.c.request_id)
        )
        try:
            with self.store.session() as session:
                taken = list(
                    session.scalars(select(Feedback.request_id).where(Feedback.request_id.in_(ids)))
                )
                if not taken and len(session.execute(stmt).all()) != len(rows):
                    taken = ["(stored concurrently)"]
                if taken:
                    raise ConflictError(
                        f"request_id(s) already labelled: {', '.join(sorted(taken)[:10])};"
                        " a label is given once (an admin can correct it:"
                        " POST /v1/admin/feedback/relabel)"
                    )
        except ConflictError:
            self.metrics.feedback.labels("conflict").inc(len(items))
            raise
        except StoreError as exc:
            self.metrics.feedback.labels("error").inc(len(items))
            raise StoreError(_UNAVAILABLE) from exc


def relabel(
    store: Store, *, request_id: str, label: str, reason: str, actor: str, model_name: str
) -> dict[str, Any]:
    """Change the stored label of ``request_id`` (an admin action) and audit it, atomically.

    ``NotFoundError`` when the request id has no label yet (``POST /v1/feedback`` gives the
    first one), ``ConflictError`` for a prediction of another model than ``model_name`` or a
    label the answering model does not know, ``RequestError`` for no reason.
    """
    if not reason.strip():
        raise RequestError("reason: required (say why the label is corrected)")
    with store.session() as session:
        row = session.get(Feedback, request_id, with_for_update=True)
        if row is None:
            raise NotFoundError(
                f"request_id {request_id} has no feedback label to correct"
                " (the first label goes through POST /v1/feedback)"
            )
        answer = session.execute(
            select(Prediction.model_name, Prediction.probabilities).where(
                Prediction.request_id == request_id
            )
        ).first()
        if answer is not None and answer.model_name != model_name:
            raise ConflictError(
                f"request_id {request_id} is a prediction of model {answer.model_name!r}, not"
                f" {model_name!r}: correct it as that model's (?model={answer.model_name},"
                f" --model {answer.model_name})"
            )
        probs = answer.probabilities if answer is not None else None
        if probs is not None and label not in probs:
            raise ConflictError(
                f"label {label!r} for request_id {request_id} is not one of the model's"
                f" classes {sorted(probs)}"
            )
        before = {"label": row.label, "key_id": row.key_id}
        row.label, row.key_id, row.ts = label, "admin", datetime.now(UTC)
        store.audit(
            actor=actor,
            action="feedback_relabel",
            model_name=model_name,
            from_version=None,
            to_version=None,
            reason=reason,
            details={
                "request_id": request_id,
                "from_label": before["label"],
                "to_label": label,
                "from_key_id": before["key_id"],
            },
            session=session,
        )
    return {"request_id": request_id, "label": label, "previous": before}

"""Privacy controls on logged data: retention (``loopml data purge``) and the deletion of one
subject's data (``loopml data forget``). See ``docs/privacy.md``.

Rows are deleted in chunks, each its own short transaction: on SQLite a long delete would hold
the write lock that the prediction-log writer needs (it retries, but its journal would grow).
Both operations are written to the audit log with counts only, never a text or its hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from loopml.config import Settings
from loopml.errors import RequestError
from loopml.store import Feedback, Prediction, Store, current_actor, open_settings_store
from loopml.store.deadletter import purge_dead_letter

__all__ = ["forget", "purge"]

_CHUNK = 2000


def _delete_ids(store: Store, ids: Sequence[str]) -> tuple[int, int]:
    """Delete the feedback and predictions of ``ids``; (predictions, feedback) deleted."""
    predictions = feedback = 0
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        with store.session() as session:
            fb = session.execute(delete(Feedback).where(Feedback.request_id.in_(chunk)))
            pr = session.execute(delete(Prediction).where(Prediction.request_id.in_(chunk)))
            feedback += int(getattr(fb, "rowcount", 0) or 0)
            predictions += int(getattr(pr, "rowcount", 0) or 0)
    return predictions, feedback


def _old_ids(store: Store, cutoff: datetime) -> list[str]:
    with store.session() as session:
        return list(session.scalars(select(Prediction.request_id).where(Prediction.ts < cutoff)))


def _purge_reports(folder: Path, cutoff: datetime) -> int:
    """Remove monitoring report files (they quote logged texts) last written before ``cutoff``."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.iterdir():
        if path.is_file() and path.stat().st_mtime < cutoff.timestamp():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def purge(
    settings: Settings,
    *,
    older_than_days: float | None = None,
    now: datetime | None = None,
    audit_if_empty: bool = True,
) -> dict[str, Any]:
    """Delete predictions, feedback, report files and dead-letter lines older than
    ``older_than_days`` (default
    ``LOOPML_RETENTION_DAYS``); feedback goes with its prediction. Returns the counts. The
    controller's daily purge passes ``audit_if_empty=False``: no audit record for nothing."""
    days = settings.retention_days if older_than_days is None else older_than_days
    if days < 0:
        raise RequestError(f"--older-than must be 0 days or more, got {days:g}")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    with open_settings_store(settings) as store:
        predictions, feedback = _delete_ids(store, _old_ids(store, cutoff))
        with store.session() as session:
            # Labels whose prediction is already gone (deleted earlier) go too.
            orphans = session.execute(delete(Feedback).where(Feedback.ts < cutoff))
            feedback += int(getattr(orphans, "rowcount", 0) or 0)
        reports = _purge_reports(settings.reports_dir, cutoff)
        dead = purge_dead_letter(settings.spool_dir, cutoff.timestamp())
        counts = {
            "older_than_days": days,
            "cutoff": cutoff.isoformat(),
            "predictions": predictions,
            "feedback": feedback,
            "report_files": reports,
            "dead_letter_lines": dead,
        }
        if not audit_if_empty and not (predictions or feedback or reports or dead):
            return counts
        store.audit(
            actor=current_actor(),
            action="purge",
            model_name=settings.model_name,
            from_version=None,
            to_version=None,
            reason=f"retention: data older than {days:g} days",
            details=counts,
        )
    return counts


def _text_hash(text: str) -> str:
    # The hash serving logs for every text (``text_hash``), also with LOOPML_LOG_TEXT=false.
    return hashlib.sha256(text.encode()).hexdigest()


def forget(
    settings: Settings,
    *,
    key_id: str | None = None,
    request_ids: Iterable[str] = (),
    texts: Iterable[str] = (),
    reason: str = "",
) -> dict[str, Any]:
    """Delete one subject's predictions and feedback, found by the API key id that gave
    feedback (its labels and the predictions they label), by request ids, or by exact texts.

    Returns the counts and the request ids asked for that no prediction row holds (not logged
    yet, or already gone); the audit record holds counts only.
    """
    asked = sorted(set(request_ids))
    hashes = sorted({_text_hash(t) for t in texts})
    if key_id is None and not asked and not hashes:
        raise RequestError("name whose data to forget: --key-id, --request-id or --text")
    with open_settings_store(settings) as store:
        with store.session() as session:
            ids = set(asked)
            if key_id is not None:
                query = select(Feedback.request_id).where(Feedback.key_id == key_id)
                ids |= set(session.scalars(query))
            if hashes:
                query = select(Prediction.request_id).where(Prediction.text_hash.in_(hashes))
                ids |= set(session.scalars(query))
            logged = set(
                session.scalars(
                    select(Prediction.request_id).where(Prediction.request_id.in_(asked))
                )
            )
        predictions, feedback = _delete_ids(store, sorted(ids))
        counts: dict[str, Any] = {
            "predictions": predictions,
            "feedback": feedback,
            "request_ids_not_found": [rid for rid in asked if rid not in logged],
        }
        store.audit(
            actor=current_actor(),
            action="forget",
            model_name=settings.model_name,
            from_version=None,
            to_version=None,
            reason=reason or "data subject deletion",
            details={
                "key_id": key_id,
                "request_ids": len(asked),
                "texts": len(hashes),
                "predictions": predictions,
                "feedback": feedback,
            },
        )
    return counts

"""Privacy controls on logged data: retention (``loopml data purge``) and the deletion of one
subject's data (``loopml data forget``). See ``docs/privacy.md``.

Both also remove the deleted texts from every training run's split files in MLflow (see
:mod:`loopml.data.scrub`), before the database rows go: retraining reads the champion's splits
back, so a text left there would be learned again by every later model.

Rows are deleted in chunks, each its own short transaction: on SQLite a long delete would hold
the write lock that the prediction-log writer needs (it retries, but its journal would grow).
Both operations are written to the audit log with counts only, never a text or its hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from loopml.config import Settings
from loopml.data.scrub import scrub_splits, text_hash
from loopml.errors import RequestError
from loopml.store import Feedback, Prediction, Store, current_actor, open_settings_store
from loopml.store.deadletter import purge_dead_letter

__all__ = ["forget", "purge"]

_CHUNK = 2000

#: the domain retraining gives rows that came from logged feedback (pipeline.gate.FEEDBACK_DOMAIN)
FEEDBACK_DOMAIN = "feedback"


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


def _old_ids(store: Store, cutoff: datetime) -> tuple[list[str], set[str]]:
    """The request ids logged before ``cutoff`` and the hashes of texts that only they hold
    (a text also logged since is not expired)."""
    with store.session() as session:
        rows = session.execute(
            select(Prediction.request_id, Prediction.text_hash).where(Prediction.ts < cutoff)
        ).all()
        hashes = {h for _, h in rows if h}
        ordered = sorted(hashes)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            query = select(Prediction.text_hash).where(
                Prediction.ts >= cutoff, Prediction.text_hash.in_(chunk)
            )
            hashes -= set(session.scalars(query))
    return [rid for rid, _ in rows], hashes


def _hashes_of(store: Store, ids: Sequence[str]) -> set[str]:
    """The text hashes of the predictions ``ids``."""
    found: set[str] = set()
    with store.session() as session:
        for start in range(0, len(ids), _CHUNK):
            chunk = list(ids[start : start + _CHUNK])
            query = select(Prediction.text_hash).where(Prediction.request_id.in_(chunk))
            found |= {h for h in session.scalars(query) if h}
    return found


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
    ``LOOPML_RETENTION_DAYS``); feedback goes with its prediction, and the expired texts leave
    the feedback rows of the training splits in MLflow. Returns the counts. The
    controller's daily purge passes ``audit_if_empty=False``: no audit record for nothing."""
    days = settings.retention_days if older_than_days is None else older_than_days
    if days < 0:
        raise RequestError(f"--older-than must be 0 days or more, got {days:g}")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    with open_settings_store(settings) as store:
        old, expired = _old_ids(store, cutoff)
        # Retention covers logged data: only the splits' feedback rows, not the operator's corpus.
        scrubbed = scrub_splits(settings, expired, domain=FEEDBACK_DOMAIN)
        predictions, feedback = _delete_ids(store, old)
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
            "split_rows": scrubbed["rows"],
            "split_runs": scrubbed["runs"],
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

    Every training split row with one of those texts (any domain: the subject's text wherever
    it came from) is removed from the run files in MLflow first. Returns the counts, the runs
    rewritten and the request ids asked for that no prediction row holds (not logged yet, or
    already gone); the audit record holds counts and run ids only.
    """
    asked = sorted(set(request_ids))
    hashes = sorted({text_hash(t) for t in texts})
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
        scrubbed = scrub_splits(settings, set(hashes) | _hashes_of(store, sorted(ids)))
        predictions, feedback = _delete_ids(store, sorted(ids))
        counts: dict[str, Any] = {
            "predictions": predictions,
            "feedback": feedback,
            "split_rows": scrubbed["rows"],
            "split_runs": scrubbed["runs"],
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
                "split_rows": scrubbed["rows"],
                "split_runs": scrubbed["runs"],
            },
        )
    return counts

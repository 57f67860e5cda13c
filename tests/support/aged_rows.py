"""Predictions and feedback of a chosen age in the loopml database, for retention tests."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from loopml.store import Feedback, Prediction, Store

__all__ = ["NOW", "label", "log", "remaining"]

NOW = datetime.now(UTC)


def log(store: Store, *, age_days: float, text: str | None = "a tweet", n: int = 1) -> list[str]:
    """Write ``n`` predictions made ``age_days`` ago; their request ids."""
    ids = [uuid.uuid4().hex for _ in range(n)]
    with store.session() as session:
        for i, rid in enumerate(ids):
            body = None if text is None else f"{text} {i}"
            session.add(
                Prediction(
                    request_id=rid,
                    ts=NOW - timedelta(days=age_days),
                    model_name="sentiment",
                    model_version="1",
                    variant="champion",
                    text=body,
                    text_hash=hashlib.sha256((body or text or "").encode()).hexdigest(),
                    text_length=len(body or ""),
                    label="positive",
                    probabilities={"negative": 0.1, "neutral": 0.2, "positive": 0.7},
                    latency_ms=1.0,
                )
            )
    return ids


def label(store: Store, ids: list[str], *, key_id: str, age_days: float = 0) -> None:
    with store.session() as session:
        for rid in ids:
            session.add(
                Feedback(
                    request_id=rid,
                    ts=NOW - timedelta(days=age_days),
                    label="negative",
                    key_id=key_id,
                )
            )


def remaining(store: Store) -> tuple[set[str], set[str]]:
    with store.session() as session:
        return (
            set(session.scalars(select(Prediction.request_id))),
            set(session.scalars(select(Feedback.request_id))),
        )

"""Logged predictions for the label-queue tests, written as serving writes them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from loopml.config import Settings
from loopml.store import Feedback, Prediction, open_store

__all__ = ["give_labels", "log_predictions"]


def log_predictions(
    settings: Settings,
    texts: Sequence[str],
    probabilities: Sequence[dict[str, float]],
    *,
    model_name: str | None = None,
    start: datetime | None = None,
    prefix: str = "r",
) -> list[str]:
    """Log one prediction per text (one second apart from ``start``); returns the request ids."""
    start = start or datetime.now(UTC) - timedelta(hours=1)
    ids = [f"{prefix}{i}" for i in range(len(texts))]
    with open_store(settings.db_url) as store, store.session() as session:
        for i, (text, probs) in enumerate(zip(texts, probabilities, strict=True)):
            session.add(
                Prediction(
                    request_id=ids[i],
                    ts=start + timedelta(seconds=i),
                    model_name=model_name or settings.model_name,
                    model_version="1",
                    variant="champion",
                    text=text,
                    text_hash=hashlib.sha256(text.encode()).hexdigest(),
                    text_length=len(text),
                    label=max(probs, key=probs.__getitem__),
                    probabilities=dict(probs),
                    latency_ms=1.0,
                )
            )
    return ids


def give_labels(settings: Settings, request_ids: Sequence[str], label: str = "neutral") -> None:
    """Store feedback for ``request_ids`` now."""
    with open_store(settings.db_url) as store, store.session() as session:
        for rid in request_ids:
            session.add(Feedback(request_id=rid, ts=datetime.now(UTC), label=label, key_id="t"))

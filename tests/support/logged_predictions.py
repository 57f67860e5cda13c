"""Predictions written to the loopml database as serving logs them, for monitoring tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from loopml.config import Settings
from loopml.recipes.base import TextClassifier
from loopml.store import Feedback, Prediction, open_store

__all__ = ["insert_predictions"]


def insert_predictions(
    settings: Settings,
    version: str,
    classifier: TextClassifier,
    texts: Sequence[str],
    truth: Sequence[str] | None,
    *,
    log_text: bool = True,
    start: datetime | None = None,
) -> None:
    """Log predictions of ``texts`` as serving does, with feedback for every row in ``truth``."""
    start = start or datetime.now(UTC) - timedelta(hours=1)
    proba = classifier.predict_proba(list(texts))
    with open_store(settings.db_url) as store, store.session() as session:
        for i, text in enumerate(texts):
            rid = hashlib.sha256(f"{version}-{start}-{i}-{text}".encode()).hexdigest()[:32]
            probs = {c: float(p) for c, p in zip(classifier.classes, proba[i], strict=True)}
            session.add(
                Prediction(
                    request_id=rid,
                    ts=start + timedelta(seconds=i),
                    model_name=settings.model_name,
                    model_version=version,
                    variant="champion",
                    text=text if log_text else None,
                    text_hash=hashlib.sha256(text.encode()).hexdigest(),
                    text_length=len(text),
                    label=max(probs, key=probs.__getitem__),
                    probabilities=probs,
                    latency_ms=1.0,
                )
            )
            if truth is not None:
                session.add(Feedback(request_id=rid, ts=start, label=truth[i]))

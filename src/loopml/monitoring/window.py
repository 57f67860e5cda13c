"""Reading a window of logged predictions (and their feedback) from the loopml database."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from loopml._time import as_utc
from loopml.errors import StoreError
from loopml.store import Feedback, Prediction, Store

__all__ = ["WINDOW_COLUMNS", "as_utc", "load_window"]

WINDOW_COLUMNS = ["request_id", "ts", "text", "length", "label", "confidence", "truth"]


def load_window(
    store: Store,
    *,
    model_name: str,
    model_version: str,
    window: int | None,
    since: datetime | None,
) -> pd.DataFrame:
    """The newest ``window`` predictions of one model version (or all since ``since``).

    Columns: request_id, ts, text (None when not logged), length, label, confidence (probability of
    the predicted class) and truth (the feedback label, None when there is none).
    """
    query = (
        select(
            Prediction.request_id,
            Prediction.ts,
            Prediction.text,
            Prediction.text_length.label("length"),
            Prediction.label,
            Prediction.probabilities,
            Feedback.label.label("truth"),
        )
        .outerjoin(Feedback, Feedback.request_id == Prediction.request_id)
        .where(Prediction.model_name == model_name, Prediction.model_version == model_version)
        .order_by(Prediction.ts.desc())
    )
    if since is not None:
        query = query.where(Prediction.ts >= as_utc(since))
    if window is not None:
        query = query.limit(window)
    try:
        with store.engine.connect() as conn:
            result = conn.execute(query)
            frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read predictions: {type(exc).__name__}: {exc.args[0]}") from exc
    frame["length"] = frame["length"].astype(float)
    frame["confidence"] = [max(p.values()) if p else float("nan") for p in frame["probabilities"]]
    return frame[WINDOW_COLUMNS]

"""Live numbers per variant from the prediction log, feedback and serving errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from sqlalchemy import func, select

from loopml.control.analysis import VariantStats
from loopml.routing import SHADOW_SUFFIX
from loopml.store import Feedback, Prediction, ServingError, Store

__all__ = ["LiveMacroF1", "collect", "labeled_feedback", "live_macro_f1"]
_LATENCY_ROWS = 20_000


def _frame(store: Store, model_name: str, versions: list[str], since: datetime) -> pd.DataFrame:
    # Joined in SQL (an IN list of ids breaks past 65,535 bound parameters on PostgreSQL).
    # Shadow records carry the champion's request id plus a suffix.
    frames = []
    for shadow in (False, True):
        key = Feedback.request_id + SHADOW_SUFFIX if shadow else Feedback.request_id
        variant = Prediction.variant == "shadow" if shadow else Prediction.variant != "shadow"
        query = (
            select(
                Prediction.request_id,
                Prediction.model_version.label("version"),
                Prediction.variant,
                Prediction.label,
                Prediction.latency_ms,
                Feedback.label.label("truth"),
            )
            .outerjoin(Feedback, key == Prediction.request_id)
            .where(
                Prediction.model_name == model_name,
                Prediction.ts >= since,
                Prediction.model_version.in_(versions),
                variant,
            )
        )
        with store.session() as session:
            result = session.execute(query)
            frames.append(pd.DataFrame(result.all(), columns=list(result.keys())))
    preds = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    preds["base_id"] = preds["request_id"].str.removesuffix(SHADOW_SUFFIX)
    return preds


def _errors(store: Store, model_name: str, version: str, variant: str, since: datetime) -> int:
    query = select(func.coalesce(func.sum(ServingError.errors), 0)).where(
        ServingError.model_name == model_name,
        ServingError.model_version == version,
        ServingError.variant == variant,
        ServingError.ts >= since,
    )
    with store.session() as session:
        return int(session.execute(query).scalar_one())


def _stats(rows: pd.DataFrame, errors: int) -> VariantStats:
    labeled = rows[rows["truth"].notna()]
    latency = rows["latency_ms"].tail(_LATENCY_ROWS)
    return VariantStats(
        requests=len(rows),
        errors=errors,
        p99_ms=float(np.percentile(latency, 99)) if len(latency) else None,
        labeled=len(labeled),
        correct=int((labeled["label"] == labeled["truth"]).sum()),
    )


def collect(
    store: Store, model_name: str, *, champion: str, challenger: str, mode: str, since: datetime
) -> tuple[VariantStats, VariantStats, tuple[int, int] | None]:
    """Champion and challenger stats since ``since``; in shadow mode also the paired counts."""
    frame = _frame(store, model_name, [champion, challenger], since)
    ch_variant = "shadow" if mode == "shadow" else "challenger"
    champ_rows = frame[(frame["variant"] == "champion") & (frame["version"] == champion)]
    ch_rows = frame[(frame["variant"] == ch_variant) & (frame["version"] == challenger)]
    champ = _stats(champ_rows, _errors(store, model_name, champion, "champion", since))
    chall = _stats(ch_rows, _errors(store, model_name, challenger, ch_variant, since))
    paired = None
    if mode == "shadow":
        both = champ_rows.merge(ch_rows, on="base_id", suffixes=("_c", "_s"))
        both = both[both["truth_c"].notna()]
        right_c = both["label_c"] == both["truth_c"]
        right_s = both["label_s"] == both["truth_c"]
        paired = (int((right_c & ~right_s).sum()), int((~right_c & right_s).sum()))
    return champ, chall, paired


@dataclass(frozen=True)
class LiveMacroF1:
    """Macro-F1 of champion and challenger on the labelled traffic each served, over the classes
    those labels hold (the same for both)."""

    labels: list[str]
    champion_labeled: int
    challenger_labeled: int
    champion_macro_f1: float | None
    challenger_macro_f1: float | None

    @property
    def delta(self) -> float | None:
        """Challenger minus champion (None when either side has no labels)."""
        if self.champion_macro_f1 is None or self.challenger_macro_f1 is None:
            return None
        return round(self.challenger_macro_f1 - self.champion_macro_f1, 6)


def live_macro_f1(
    store: Store, model_name: str, *, champion: str, challenger: str, mode: str, since: datetime
) -> LiveMacroF1:
    """Live macro-F1 of both variants on their predictions with feedback since ``since`` (a
    shadow record carries the feedback of the champion's request it shadowed)."""
    frame = _frame(store, model_name, [champion, challenger], since)
    ch_variant = "shadow" if mode == "shadow" else "challenger"
    sides = {
        "champion": frame[(frame["variant"] == "champion") & (frame["version"] == champion)],
        "challenger": frame[(frame["variant"] == ch_variant) & (frame["version"] == challenger)],
    }
    labeled = {k: v[v["truth"].notna()] for k, v in sides.items()}
    labels = sorted({str(t) for rows in labeled.values() for t in rows["truth"]})
    scores: dict[str, float | None] = {}
    for side, rows in labeled.items():
        scores[side] = (
            round(
                float(
                    f1_score(
                        rows["truth"].astype(str),
                        rows["label"].astype(str),
                        labels=labels,
                        average="macro",
                        zero_division=0,
                    )
                ),
                6,
            )
            if len(rows)
            else None
        )
    return LiveMacroF1(
        labels,
        len(labeled["champion"]),
        len(labeled["challenger"]),
        scores["champion"],
        scores["challenger"],
    )


def labeled_feedback(store: Store, model_name: str) -> pd.DataFrame:
    """Texts with feedback labels and who gave them (columns text, label, key_id; ``unknown``
    for labels older than provenance), newest first, one row per text."""
    query = (
        select(Prediction.text, Feedback.label, Feedback.key_id)
        .join(Feedback, Feedback.request_id == Prediction.request_id)
        .where(Prediction.model_name == model_name, Prediction.text.is_not(None))
        .order_by(Feedback.ts.desc())
    )
    with store.session() as session:
        result = session.execute(query)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    frame["key_id"] = frame["key_id"].fillna("unknown")
    return frame.drop_duplicates("text").reset_index(drop=True)

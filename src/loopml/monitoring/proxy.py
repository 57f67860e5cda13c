"""Does the offline metric predict the live one? (ML Test Score, Model 2)

The champion's test macro-F1, recorded when it was trained, is the offline proxy the gate
decides on. Beside it goes the live macro-F1 of the same model from feedback labels, both
averaged over the same classes (those the live labels hold: a window of airline complaints may
hold no neutral tweet). A gap beyond ``LOOPML_MONITOR_MAX_OFFLINE_GAP`` means the offline number
no longer tells how the model does in production.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import pandas as pd
from sklearn.metrics import f1_score

__all__ = ["OfflineLive", "compare_offline_live", "offline_class_f1"]

GapStatus = Literal["ok", "alarm", "insufficient_data"]


@dataclass(frozen=True)
class OfflineLive:
    """Offline test macro-F1 beside live macro-F1 of the same model, on the same classes."""

    offline_macro_f1: float
    labels: list[str]
    offline_macro_f1_same_labels: float | None
    live_macro_f1_same_labels: float | None
    gap: float | None
    labeled: int
    max_gap: float
    status: GapStatus

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def reason(self) -> str | None:
        """The alarm's sentence, or None without an alarm."""
        if self.status != "alarm" or self.gap is None:
            return None
        return (
            f"offline/live gap: test macro-F1 {self.offline_macro_f1_same_labels:.3f} vs live "
            f"{self.live_macro_f1_same_labels:.3f} on {', '.join(self.labels)} "
            f"(gap {self.gap:.3f} > {self.max_gap})"
        )


def offline_class_f1(metrics: dict[str, float]) -> dict[str, float]:
    """Per-class test F1 (``f1_<label>`` metrics of a training run; slices left out)."""
    return {
        name.removeprefix("f1_"): value
        for name, value in metrics.items()
        if name.startswith("f1_") and not name.startswith("f1_domain_")
    }


def compare_offline_live(
    offline_macro_f1: float,
    class_f1: dict[str, float],
    truth: pd.Series,
    predicted: pd.Series,
    *,
    min_labeled: int,
    max_gap: float,
) -> OfflineLive:
    """Compare the offline scores with ``predicted`` against ``truth`` (rows without truth are
    ignored), over the classes both the live labels and the offline evaluation hold."""
    mask = truth.notna().to_numpy()
    truth, predicted = truth[mask].astype(str), predicted[mask].astype(str)
    labels = sorted(set(truth) & set(class_f1))
    if len(truth) < min_labeled or not labels:
        return OfflineLive(
            offline_macro_f1, labels, None, None, None, len(truth), max_gap, "insufficient_data"
        )
    live = float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0))
    offline = sum(class_f1[label] for label in labels) / len(labels)
    gap = offline - live
    status: GapStatus = "alarm" if gap > max_gap else "ok"
    return OfflineLive(
        offline_macro_f1,
        labels,
        round(offline, 6),
        round(live, 6),
        round(gap, 6),
        len(truth),
        max_gap,
        status,
    )

"""Live quality: accuracy and macro-F1 of predictions that received feedback, with intervals."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["Quality", "live_quality", "macro_f1", "wilson_interval"]

QualityStatus = Literal["ok", "alarm", "insufficient_data"]
_Z95 = 1.959964


@dataclass(frozen=True)
class Quality:
    """Live accuracy and macro-F1 with 95% intervals, and whether it breaks its floor."""

    labeled: int
    accuracy: float | None
    accuracy_ci: tuple[float, float] | None
    macro_f1: float | None
    macro_f1_ci: tuple[float, float] | None
    floor: float
    min_labeled: int
    status: QualityStatus

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (well-behaved near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _f1_from_confusion(cm: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Macro-F1 of one or many confusion matrices (..., k, k), rows = truth, columns = predicted.

    Classes absent from both truth and predictions are left out, as scikit-learn does.
    """
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    denom = cm.sum(axis=-1) + cm.sum(axis=-2)  # 2TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
        result: npt.NDArray[np.float64] = np.nanmean(f1, axis=-1)
    return result


def _confusion(truth: pd.Series, predicted: pd.Series) -> npt.NDArray[np.float64]:
    keys = sorted(set(truth) | set(predicted))
    index = {k: i for i, k in enumerate(keys)}
    cm = np.zeros((len(keys), len(keys)), dtype=np.float64)
    np.add.at(cm, (truth.map(index).to_numpy(), predicted.map(index).to_numpy()), 1)
    return cm


def macro_f1(truth: pd.Series, predicted: pd.Series) -> float:
    """Macro-F1 over the classes seen in ``truth`` or ``predicted``."""
    return float(_f1_from_confusion(_confusion(truth, predicted)))


def _bootstrap_f1(cm: npt.NDArray[np.float64], *, resamples: int, seed: int) -> tuple[float, float]:
    # Resampling rows with replacement is a multinomial draw over the confusion cells: exact, and
    # it costs the same for 100 or 100,000 labeled rows.
    n = int(cm.sum())
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cm.ravel() / n, size=resamples).reshape(resamples, *cm.shape)
    scores = _f1_from_confusion(draws.astype(np.float64))
    low, high = np.nanpercentile(scores, [2.5, 97.5])
    return (float(low), float(high))


def live_quality(
    truth: pd.Series,
    predicted: pd.Series,
    *,
    floor: float,
    min_labeled: int,
    seed: int,
    resamples: int = 1000,
) -> Quality:
    """Quality of ``predicted`` against ``truth`` (rows without truth are ignored).

    The alarm fires only when the whole interval of macro-F1 lies under ``floor``: a few unlucky
    labels must not trigger a retrain.
    """
    truth, predicted = truth.reset_index(drop=True), predicted.reset_index(drop=True)
    mask = truth.notna()
    truth, predicted = truth[mask].astype(str), predicted[mask].astype(str)
    n = len(truth)
    if n == 0:
        return Quality(0, None, None, None, None, floor, min_labeled, "insufficient_data")
    correct = int((truth.to_numpy() == predicted.to_numpy()).sum())
    cm = _confusion(truth, predicted)
    f1 = float(_f1_from_confusion(cm))
    f1_ci = _bootstrap_f1(cm, resamples=resamples, seed=seed)
    status: QualityStatus = "ok"
    if n < min_labeled:
        status = "insufficient_data"
    elif f1_ci[1] < floor:
        status = "alarm"
    return Quality(
        n, correct / n, wilson_interval(correct, n), f1, f1_ci, floor, min_labeled, status
    )

"""Confidence bounds on macro-F1 by bootstrap over test rows, for the gate's noisy comparisons.

A test split of a few hundred rows moves macro-F1 by a few points from one draw to the next (on
the demo's 600 test rows the default recipe and the unigram baseline swap places by up to 0.04
across seeds). A check that compares point estimates then fails good models by chance; the gate
instead fails a model only when the evidence puts it below the bar with ``level`` confidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["macro_f1_delta_upper", "macro_f1_upper"]

_RESAMPLES = 1000


def _codes(values: Sequence[str], labels: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return np.fromiter((index.get(v, -1) for v in values), dtype=np.int64, count=len(values))


def _macro_f1(truth: np.ndarray, predicted: np.ndarray, n_labels: int) -> np.ndarray:
    # Row-wise macro-F1 of resampled (truth, predicted) matrices; a class neither true nor
    # predicted in a resample scores 0, as scikit-learn's zero_division=0 does.
    scores = np.zeros(truth.shape[0])
    for c in range(n_labels):
        is_true, is_pred = truth == c, predicted == c
        tp = (is_true & is_pred).sum(axis=1)
        denominator = is_true.sum(axis=1) + is_pred.sum(axis=1)
        scores += np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    return scores / n_labels


def _resampled(
    truth: Sequence[str], predicted: Sequence[Sequence[str]], labels: list[str], seed: int
) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(truth), size=(_RESAMPLES, len(truth)))
    t = _codes(truth, labels)[rows]
    return [_macro_f1(t, _codes(p, labels)[rows], len(labels)) for p in predicted]


def macro_f1_upper(
    truth: Sequence[str],
    predicted: Sequence[str],
    labels: list[str],
    *,
    level: float,
    seed: int = 0,
) -> float:
    """The one-sided ``level`` upper bound of macro-F1 over ``labels`` (percentile bootstrap)."""
    if not len(truth):
        return 0.0
    (scores,) = _resampled(truth, [predicted], labels, seed)
    return float(np.quantile(scores, level))


def macro_f1_delta_upper(
    truth: Sequence[str],
    a: Sequence[str],
    b: Sequence[str],
    labels: list[str],
    *,
    level: float,
    seed: int = 0,
) -> float:
    """The one-sided ``level`` upper bound of macro-F1(a) - macro-F1(b) on the same rows, by a
    paired bootstrap (both models scored on each resample: their shared noise cancels)."""
    if not len(truth):
        return 0.0
    first, second = _resampled(truth, [a, b], labels, seed)
    return float(np.quantile(first - second, level))

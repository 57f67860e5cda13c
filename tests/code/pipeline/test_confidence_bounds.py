from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from loopml.pipeline.confidence import macro_f1_delta_upper, macro_f1_upper

LABELS = ["negative", "neutral", "positive"]


def _noisy(n: int, accuracy: float, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    truth = rng.choice(LABELS, n).tolist()
    predicted = [t if rng.random() < accuracy else str(rng.choice(LABELS)) for t in truth]
    return truth, predicted


def test_the_upper_bound_lies_above_the_score_and_tightens_with_rows() -> None:
    widths = []
    for n in (60, 600, 6000):
        truth, predicted = _noisy(n, 0.6, seed=n)
        point = f1_score(truth, predicted, average="macro", labels=LABELS, zero_division=0)
        upper = macro_f1_upper(truth, predicted, LABELS, level=0.95)
        assert upper > point
        widths.append(upper - point)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]
    # About 1.645 standard errors: on 600 rows of a 0.7 macro-F1 model, ~0.03.
    assert 0.015 < widths[1] < 0.06


def test_a_paired_difference_is_tighter_than_either_score() -> None:
    truth, a = _noisy(600, 0.6, seed=1)
    b = list(a)
    for i in range(0, 600, 20):  # b differs from a on 30 rows only
        b[i] = truth[i] if a[i] != truth[i] else "neutral"
    single = macro_f1_upper(truth, a, LABELS, level=0.95) - f1_score(
        truth, a, average="macro", labels=LABELS
    )
    delta = f1_score(truth, a, average="macro", labels=LABELS) - f1_score(
        truth, b, average="macro", labels=LABELS
    )
    paired = macro_f1_delta_upper(truth, a, b, LABELS, level=0.95) - delta
    assert 0 < paired < single / 2
    assert macro_f1_delta_upper(truth, a, a, LABELS, level=0.95) == pytest.approx(0.0)

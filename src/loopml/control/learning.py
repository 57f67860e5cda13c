"""Reachable quality: what the champion's recipe would score on the new labels if retrained now.

After a promotion the loop keeps learning while labels accrue: the policy compares the live
macro-F1 of the champion with a learning-curve estimate made from offline evidence. The estimate
is a k-fold cross-validation over the labelled texts the champion has not trained on (the *new
labels*): each fold's model is the champion's recipe fitted on the champion's training split plus
the other folds, and it predicts the held-out fold; the pooled predictions give one macro-F1 on
every new label. That is the score a retrain on the labels available now would reach on traffic
like them, a little conservatively (each fold sees (k-1)/k of the new labels, the retrain 80%).
See ``docs/loop.md``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold, StratifiedKFold

from loopml.data import Splits
from loopml.recipes import Recipe, TextClassifier
from loopml.registry import Registry
from loopml.routing import CHAMPION

__all__ = [
    "FOLDS",
    "Reachable",
    "learned_from_feedback",
    "reachable_macro_f1",
]

#: three fits per estimate: about one retrain's cost, paid only when enough new labels arrived
FOLDS = 3


@dataclass(frozen=True)
class Reachable:
    """A learning-curve estimate of the macro-F1 a retrain would reach on the new labels."""

    macro_f1: float
    labels: int  # new labels it was estimated on
    folds: int
    recipe: str
    seconds: float
    #: the champion's own macro-F1 on the same labels, and the 95% bootstrap interval of the
    #: paired difference (reachable - champion): the same rows, so their noise mostly cancels
    champion_macro_f1: float | None = None
    gap_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def learned_from_feedback(registry: Registry) -> bool:
    """Whether the champion was trained on feedback rows (a retrain tags its run with them)."""
    champion = registry.alias(CHAMPION)
    if champion is None or not champion.run_id:
        return False
    tags = registry.client.get_run(champion.run_id).data.tags
    return int(tags.get("loopml.feedback_rows", "0") or 0) > 0


def _folds(labels: pd.Series, k: int, seed: int) -> list[tuple[Any, Any]]:
    # Stratified when every class can fill every fold; plain k-fold otherwise (tiny classes).
    if labels.value_counts().min() >= k:
        splitter: StratifiedKFold | KFold = StratifiedKFold(k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(k, shuffle=True, random_state=seed)
    return list(splitter.split(labels.to_frame(), labels))


def _paired_interval(
    truth: np.ndarray[Any, Any],
    ours: np.ndarray[Any, Any],
    theirs: np.ndarray[Any, Any],
    *,
    seed: int,
    resamples: int = 300,
) -> tuple[float, float]:
    """95% bootstrap interval of macro-F1(ours) - macro-F1(theirs), resampling rows together."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(truth), len(truth))
        diffs.append(
            f1_score(truth[i], ours[i], average="macro")
            - f1_score(truth[i], theirs[i], average="macro")
        )
    low, high = np.percentile(diffs, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def reachable_macro_f1(
    splits: Splits,
    new: pd.DataFrame,
    *,
    recipe: Recipe,
    champion: TextClassifier | None = None,
    folds: int = FOLDS,
    seed: int = 0,
) -> Reachable:
    """Cross-validated macro-F1 of ``recipe`` (the champion's, see ``pipeline.choice``) trained
    on ``splits.train`` plus the other folds of ``new`` (columns text, label), predicting each
    held-out fold of ``new``; with ``champion``, also its macro-F1 on ``new`` and the interval of
    the paired difference."""
    started = time.perf_counter()
    new = new.reset_index(drop=True)
    base_texts = splits.train["text"].astype(str).tolist()
    base_labels = splits.train["label"].astype(str).tolist()
    predicted = pd.Series(index=new.index, dtype=object)
    for fit_idx, held_idx in _folds(new["label"], folds, seed):
        fit = new.iloc[fit_idx]
        model = recipe.fit(base_texts + fit["text"].tolist(), base_labels + fit["label"].tolist())
        predicted.iloc[held_idx] = model.predict(new["text"].iloc[held_idx].tolist())
    truth, reached = new["label"].astype(str).to_numpy(), predicted.astype(str).to_numpy()
    score = round(float(f1_score(truth, reached, average="macro")), 4)
    own, interval = None, None
    if champion is not None:
        served = np.asarray(champion.predict(new["text"].tolist()), dtype=str)
        own = round(float(f1_score(truth, served, average="macro")), 4)
        interval = _paired_interval(truth, reached, served, seed=seed)
    seconds = round(time.perf_counter() - started, 2)
    return Reachable(score, len(new), folds, recipe.name, seconds, own, interval)

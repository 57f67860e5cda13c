"""Numerical stability of a fitted model (Monitoring 5 of the ML Test Score).

Two problems, two answers:

- **non-finite numbers** (NaN or infinite coefficients or probabilities, probabilities that do not
  sum to 1): the model is unusable, training fails with :class:`~loopml.errors.TrainingError`
  before anything is registered;
- **the solver stopped at its iteration limit** (scikit-learn's ``ConvergenceWarning``): the model
  works but its weights depend on ``max_iter`` rather than on the data. Training goes on; the run
  and the version are tagged ``loopml.converged=false`` and the gate fails the check
  ``solver_converged``, so the version is never promoted without a forced, audited promotion.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from loopml.errors import TrainingError
from loopml.recipes.base import Recipe, TextClassifier

__all__ = ["Fit", "check_finite", "fit_checked"]

_SUM_TOLERANCE = 1e-3


@dataclass
class Fit:
    """A fitted classifier and whether its solver converged (with the solver's words if not)."""

    classifier: TextClassifier
    converged: bool
    warning: str = ""


def fit_checked(recipe: Recipe, texts: Sequence[str], labels: Sequence[str]) -> Fit:
    """Fit ``recipe``, noting a ``ConvergenceWarning`` instead of letting it escape (pytest turns
    warnings into errors; users would see it scroll by and be lost)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier = recipe.fit(texts, labels)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    problems = [
        str(w.message).splitlines()[0].rstrip(":")
        for w in caught
        if w.category is ConvergenceWarning
    ]
    return Fit(classifier, converged=not problems, warning="; ".join(problems))


def _parameters(classifier: TextClassifier) -> dict[str, np.ndarray]:
    """Fitted arrays of a scikit-learn pipeline's steps (``coef_``, ``intercept_``), if any."""
    pipeline = getattr(classifier, "pipeline", None)
    steps = getattr(pipeline, "named_steps", {})
    found = {}
    for step, est in steps.items():
        for attr in ("coef_", "intercept_"):
            value = getattr(est, attr, None)
            if value is not None:
                found[f"{step}.{attr}"] = np.asarray(value, dtype=np.float64)
    return found


def check_finite(classifier: TextClassifier, texts: Sequence[str]) -> None:
    """Raise ``TrainingError`` when the model's parameters or its probabilities on ``texts`` are
    not finite, or the probabilities of a text do not sum to 1."""
    for name, values in _parameters(classifier).items():
        bad = int((~np.isfinite(values)).sum())
        if bad:
            raise TrainingError(
                f"numerically unstable model: {bad} non-finite value(s) in {name}; "
                "try a smaller C or scaled features"
            )
    proba = np.asarray(classifier.predict_proba(list(texts)), dtype=np.float64)
    rows = np.flatnonzero(~np.isfinite(proba).all(axis=1))
    if len(rows):
        raise TrainingError(
            f"numerically unstable model: non-finite probabilities for {len(rows)} of "
            f"{len(proba)} test texts (first at test row {int(rows[0]) + 1})"
        )
    sums = proba.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > _SUM_TOLERANCE)
    if len(off):
        raise TrainingError(
            f"numerically unstable model: probabilities of {len(off)} test texts do not sum "
            f"to 1 (test row {int(off[0]) + 1}: {sums[off[0]]:.4f})"
        )

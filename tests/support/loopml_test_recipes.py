"""Test-only recipes, registered in ``loopml.recipes.base.RECIPES`` by the tests that use them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from loopml.recipes.base import TextClassifier
from loopml.recipes.tfidf_logreg import TfidfLogReg

__all__ = ["NanRecipe"]


class _NanEvery(TextClassifier):
    """A real fitted model whose probabilities turn NaN for every ``step``-th text."""

    def __init__(self, inner: TextClassifier, step: int) -> None:
        self.inner = inner
        self.classes = list(inner.classes)
        self.step = step

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        proba = self.inner.predict_proba(texts).copy()
        proba[self.step - 1 :: self.step] = np.nan
        return proba


class NanRecipe(TfidfLogReg):
    """tfidf-logreg whose fitted model answers NaN probabilities for every 50th text."""

    name = "nan-test"

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> _NanEvery:  # type: ignore[override]
        return _NanEvery(super().fit(texts, labels), 50)

"""TF-IDF word n-grams + logistic regression: the fast, strong baseline for short texts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from loopml.errors import TrainingError
from loopml.recipes.base import Recipe, TextClassifier

__all__ = ["SklearnTextClassifier", "TfidfLogReg", "strip_urls"]

_URL = re.compile(r"https?://\S+|www\.\S+")


def strip_urls(text: str) -> str:
    """Lower-case ``text`` and drop URLs.

    Without it, appending a link flips "@united my flight was great" to negative: URLs mark
    news-like tweets in the corpus. Dropping them costs ~0.003 macro-F1 and buys URL invariance.
    """
    return _URL.sub(" ", text.lower())


class SklearnTextClassifier(TextClassifier):
    """A fitted scikit-learn pipeline whose last step has ``predict_proba``."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.classes = [str(c) for c in pipeline.classes_]

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Class probabilities for ``texts``."""
        return np.asarray(self.pipeline.predict_proba(list(texts)), dtype=np.float64)

    def vocabulary(self) -> set[str]:
        """Terms the vectorizer knows (used for out-of-vocabulary drift)."""
        vectorizer: TfidfVectorizer = self.pipeline.named_steps["tfidf"]
        return {t for t in vectorizer.vocabulary_ if " " not in t}


class TfidfLogReg(Recipe):
    """TF-IDF (1-2 grams, sublinear tf) + multinomial logistic regression."""

    name: ClassVar[str] = "tfidf-logreg"
    defaults: ClassVar[dict[str, Any]] = {
        "C": 4.0,
        "ngram_max": 2,
        "min_df": 2,
        "max_features": 0,
        "sublinear_tf": True,
        "strip_urls": True,
        "class_weight": "none",
        "max_iter": 1000,
    }

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> SklearnTextClassifier:
        """Fit the pipeline; parameter errors become ``TrainingError``."""
        p = self.params
        if p["C"] <= 0:
            raise TrainingError(f"recipe {self.name}: C must be > 0, got {p['C']}")
        if p["class_weight"] not in ("none", "balanced"):
            raise TrainingError(f"recipe {self.name}: class_weight must be 'none' or 'balanced'")
        pipeline = Pipeline(
            [
                (
                    "tfidf",
                    TfidfVectorizer(
                        ngram_range=(1, int(p["ngram_max"])),
                        min_df=int(p["min_df"]),
                        max_features=int(p["max_features"]) or None,
                        sublinear_tf=bool(p["sublinear_tf"]),
                        preprocessor=strip_urls if p["strip_urls"] else None,
                        dtype=np.float32,
                    ),
                ),
                (
                    "clf",
                    LogisticRegression(
                        C=float(p["C"]),
                        max_iter=int(p["max_iter"]),
                        class_weight=None if p["class_weight"] == "none" else "balanced",
                    ),
                ),
            ]
        )
        try:
            pipeline.fit(list(texts), list(labels))
        except ValueError as exc:
            raise TrainingError(f"recipe {self.name}: fit failed: {exc}") from exc
        return SklearnTextClassifier(pipeline)

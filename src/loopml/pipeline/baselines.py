"""Simple baselines a candidate must beat on its own test split (ML Test Score, Model 5).

A model that a majority-class guess or a plain unigram TF-IDF logistic regression matches
is not worth its complexity: the gate holds every candidate to ``baseline + margin``
(``LOOPML_GATE_BASELINE_MARGIN``) for each baseline here. The unigram model also sets what a
first model (no champion yet) must reach on each slice and on the behavioral tests: what the
data allows, rather than numbers tuned for one task.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline

from loopml.recipes.tfidf_logreg import SklearnTextClassifier

__all__ = ["BASELINES", "Baselines", "baseline_scores", "fit_baselines"]

#: Baseline names, as they appear in the gate's check names (``baseline_<name>``).
BASELINES = ("majority", "unigram_tfidf_logreg")


def _macro_f1(truth: list[str], predicted: list[str], labels: list[str]) -> float:
    return float(f1_score(truth, predicted, average="macro", labels=labels, zero_division=0))


@dataclass(frozen=True)
class Baselines:
    """The baselines fitted on one training split: the majority class and a unigram model."""

    majority: str
    unigram: SklearnTextClassifier

    def predictions(self, texts: list[str]) -> dict[str, list[str]]:
        """Each baseline's label per text, by name."""
        return {
            "majority": [self.majority] * len(texts),
            "unigram_tfidf_logreg": self.unigram.predict(texts),
        }


def fit_baselines(train: pd.DataFrame) -> Baselines:
    """Fit both baselines on ``train`` (columns text, label)."""
    texts, labels = train["text"].astype(str).tolist(), train["label"].astype(str).tolist()
    # Unigrams and scikit-learn's defaults (C=1): the plainest text model there is. TF-IDF rather
    # than raw counts: the same model class, but lbfgs converges several times faster on it.
    unigram = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
    unigram.fit(texts, labels)
    majority = str(pd.Series(labels).value_counts().idxmax())
    return Baselines(majority, SklearnTextClassifier(unigram))


def baseline_scores(
    train: pd.DataFrame, test: pd.DataFrame, predicted: dict[str, list[str]] | None = None
) -> dict[str, float]:
    """Test macro-F1 of each baseline fitted on ``train`` (or of its ``predicted`` labels),
    scored like :func:`~loopml.pipeline.evaluate.evaluate` scores a candidate (every label seen)."""
    if predicted is None:
        predicted = fit_baselines(train).predictions(test["text"].astype(str).tolist())
    truth = test["label"].astype(str).tolist()
    classes = sorted(set(truth) | set(train["label"].astype(str)))
    return {name: _macro_f1(truth, labels, classes) for name, labels in predicted.items()}

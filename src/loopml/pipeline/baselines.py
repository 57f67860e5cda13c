"""Simple baselines a candidate must beat on its own test split (ML Test Score, Model 5).

A model that a majority-class guess or a plain unigram TF-IDF logistic regression matches
is not worth its complexity: the gate holds every candidate to ``baseline + margin``
(``LOOPML_GATE_BASELINE_MARGIN``) for each baseline here.
"""

from __future__ import annotations

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline

__all__ = ["BASELINES", "baseline_scores"]

#: Baseline names, as they appear in the gate's check names (``baseline_<name>``).
BASELINES = ("majority", "unigram_tfidf_logreg")


def _macro_f1(truth: list[str], predicted: list[str], labels: list[str]) -> float:
    return float(f1_score(truth, predicted, average="macro", labels=labels, zero_division=0))


def baseline_scores(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """Test macro-F1 of each baseline fitted on ``train`` (columns text, label), scored like
    :func:`~loopml.pipeline.evaluate.evaluate` scores a candidate (over every label seen)."""
    texts, labels = train["text"].astype(str).tolist(), train["label"].astype(str).tolist()
    truth = test["label"].astype(str).tolist()
    classes = sorted(set(truth) | set(labels))
    majority = pd.Series(labels).value_counts().idxmax()
    # Unigrams and scikit-learn's defaults (C=1): the plainest text model there is. TF-IDF rather
    # than raw counts: the same model class, but lbfgs converges several times faster on it.
    unigram = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
    unigram.fit(texts, labels)
    predicted = [str(p) for p in unigram.predict(test["text"].astype(str).tolist())]
    return {
        "majority": _macro_f1(truth, [str(majority)] * len(truth), classes),
        "unigram_tfidf_logreg": _macro_f1(truth, predicted, classes),
    }

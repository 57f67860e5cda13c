"""A loopml recipe from outside loopml: character n-gram TF-IDF + Complement Naive Bayes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import make_pipeline

from loopml.recipes import Recipe, TextClassifier


class CharNBParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.3, gt=0, description="additive smoothing")
    char_max: int = Field(5, ge=2, le=8, description="longest character n-gram")
    min_df: int = Field(2, ge=1)


class CharNBClassifier(TextClassifier):
    """The fitted pipeline (pickled into the model: this module must be installed to load it)."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.classes = [str(c) for c in pipeline.classes_]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(list(texts)), dtype=np.float64)


class CharNB(Recipe):
    name: ClassVar[str] = "char-nb"
    Params: ClassVar[type[BaseModel]] = CharNBParams
    params: CharNBParams

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {
            "alpha": trial.suggest_float("alpha", 0.01, 3.0, log=True),
            "char_max": trial.suggest_int("char_max", 3, 6),
        }

    def pip_requirements(self) -> list[str]:
        return [*super().pip_requirements(), "scikit-learn", "loopml-char-nb"]

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> CharNBClassifier:
        p = self.params
        vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, p.char_max), min_df=p.min_df, sublinear_tf=True
        )
        pipeline = make_pipeline(vectorizer, ComplementNB(alpha=p.alpha))
        return CharNBClassifier(pipeline.fit(list(texts), list(labels)))

"""Feature ablation of the tfidf-logreg recipe (Data 2 and 3 of the ML Test Score).

Each feature of the recipe is switched off alone; the model is refitted and scored on validation
macro-F1, with its vocabulary size and pickled size. A feature earns its place when turning it
off does not raise macro-F1 beyond a tolerance; its cost is the vocabulary and bytes it adds.
``benchmarks/ablation.py`` runs it on the full corpus; a test runs it on a sample.
"""

from __future__ import annotations

import pickle
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from loopml.recipes import get_recipe
from loopml.recipes.tfidf_logreg import SklearnTextClassifier

__all__ = ["FEATURES", "AblationRow", "ablate"]

#: feature -> the parameters that turn it off (the recipe's defaults keep every feature on)
FEATURES: dict[str, dict[str, Any]] = {
    "url_stripping": {"strip_urls": False},
    "bigrams": {"ngram_max": 1},
    "sublinear_tf": {"sublinear_tf": False},
    "min_df": {"min_df": 1},
}


@dataclass
class AblationRow:
    """One variant: the full recipe, or the recipe without ``feature``; means over the folds."""

    feature: str
    params: dict[str, Any]
    macro_f1: float
    delta: float  # full model minus this variant: > 0 means the feature helps
    vocabulary: int
    model_bytes: int
    fit_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _fit_score(
    params: dict[str, Any], texts: np.ndarray, labels: np.ndarray, folds: list[Any]
) -> tuple[float, int, int, float]:
    scores, vocab, size, seconds = [], [], [], []
    for train_idx, val_idx in folds:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # Without sublinear tf or min_df the solver may need more steps; the score is what
            # is compared here (training itself flags non-convergence, pipeline.stability).
            warnings.simplefilter("ignore")
            model = get_recipe("tfidf-logreg", params).fit(
                texts[train_idx].tolist(), labels[train_idx].tolist()
            )
        seconds.append(time.perf_counter() - t0)
        predicted = model.predict(texts[val_idx].tolist())
        scores.append(f1_score(labels[val_idx], predicted, average="macro"))
        assert isinstance(model, SklearnTextClassifier)  # the recipe ablated is tfidf-logreg
        vocab.append(len(model.pipeline.named_steps["tfidf"].vocabulary_))
        size.append(len(pickle.dumps(model)))
    return (
        float(np.mean(scores)),
        int(np.mean(vocab)),
        int(np.mean(size)),
        float(np.mean(seconds)),
    )


def ablate(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    folds: int = 3,
    seed: int = 42,
    validation: tuple[Sequence[str], Sequence[str]] | None = None,
) -> list[AblationRow]:
    """The full recipe, then each of :data:`FEATURES` switched off, scored by stratified
    ``folds``-fold cross-validation on ``texts`` (or on a fixed ``validation`` pair when given:
    ``texts`` then only train)."""
    x, y = np.asarray(texts, dtype=object), np.asarray(labels, dtype=object)
    if validation is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        cuts = list(splitter.split(x, y))
    else:
        n = len(x)
        x = np.concatenate([x, np.asarray(validation[0], dtype=object)])
        y = np.concatenate([y, np.asarray(validation[1], dtype=object)])
        cuts = [(np.arange(n), np.arange(n, len(x)))]
    full = _fit_score({}, x, y, cuts)
    rows = [AblationRow("none (full recipe)", {}, full[0], 0.0, full[1], full[2], full[3])]
    for feature, params in FEATURES.items():
        f1, vocab, size, seconds = _fit_score(params, x, y, cuts)
        rows.append(
            AblationRow(f"without {feature}", params, f1, full[0] - f1, vocab, size, seconds)
        )
    return rows

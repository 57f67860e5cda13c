"""Feature ablation of the tfidf-logreg recipe (Data 2 and 3 of the ML Test Score).

:func:`feature_evidence` (Data 2, ``loopml check features``): each feature group switched on
and off on the same cross-validation folds; a group the defaults keep must raise macro-F1 with a
one-sided 95% lower bound above zero (paired bootstrap over rows), or it is dropped.
:func:`ablate` (Data 3, ``benchmarks/ablation.py``): each kept feature switched off alone, with
the vocabulary and the bytes it costs.
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

__all__ = [
    "FEATURES",
    "FEATURE_GROUPS",
    "AblationRow",
    "FeatureEvidence",
    "FeatureReport",
    "ablate",
    "feature_evidence",
    "kept_features",
]

#: feature -> the parameters that turn it off (the recipe's defaults keep every feature on)
FEATURES: dict[str, dict[str, Any]] = {
    "url_stripping": {"strip_urls": False},
    "bigrams": {"ngram_max": 1},
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


#: feature group -> {parameter: (value with the group on, value with it off)}. Two groups are
#: off by default for reasons of their own, and measured all the same: ``url_terms`` (tokens
#: of URLs: stripping them buys URL invariance, a behavioral test) and ``rare_terms`` (terms seen
#: in one training document: min_df=2 quarters the vocabulary and the model, Data 3).
#: ``mask_identity`` is absent: a fairness requirement the gate enforces, not a feature.
FEATURE_GROUPS: dict[str, dict[str, tuple[Any, Any]]] = {
    "url_terms": {"strip_urls": (False, True)},
    "bigrams": {"ngram_max": (2, 1)},
    "sublinear_tf": {"sublinear_tf": (True, False)},
    "rare_terms": {"min_df": (1, 2)},
}


def kept_features(defaults: dict[str, Any] | None = None) -> list[str]:
    """The groups of :data:`FEATURE_GROUPS` that tfidf-logreg's ``defaults`` (its own when
    None) switch on: the ones that must help."""
    from loopml.recipes.tfidf_logreg import TfidfLogRegParams

    base = TfidfLogRegParams(**(defaults or {})).model_dump()
    return [
        name
        for name, switch in FEATURE_GROUPS.items()
        if all(base[k] == on for k, (on, _) in switch.items())
    ]


@dataclass
class FeatureEvidence:
    """What one feature group adds to macro-F1, on out-of-fold predictions of every row."""

    feature: str
    kept: bool  # on in the recipe's defaults
    with_params: dict[str, Any]
    without_params: dict[str, Any]
    macro_f1_with: float
    macro_f1_without: float
    delta: float  # with minus without
    lower: float  # one-sided ``level`` lower bound of delta (paired bootstrap over rows)

    @property
    def helps(self) -> bool:
        """The evidence puts the gain above zero with the stated confidence."""
        return self.lower > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self) | {"helps": self.helps}


@dataclass
class FeatureReport:
    """Every feature group of the default recipe; passes when each kept one helps."""

    rows: int
    folds: int
    level: float
    seed: int
    features: list[FeatureEvidence]

    @property
    def failing(self) -> list[str]:
        """Kept feature groups whose gain's lower bound is not above zero."""
        return [f.feature for f in self.features if f.kept and not f.helps]

    @property
    def passed(self) -> bool:
        """Every kept feature group helps."""
        return not self.failing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "rows": self.rows,
            "folds": self.folds,
            "level": self.level,
            "seed": self.seed,
            "passed": self.passed,
            "failing": self.failing,
            "features": [f.to_dict() for f in self.features],
        }


def _out_of_fold(
    params: dict[str, Any], texts: np.ndarray, labels: np.ndarray, folds: list[Any]
) -> list[str]:
    # Each row predicted by the model that did not train on it: every row is a test row once.
    predicted = np.empty(len(texts), dtype=object)
    for train_idx, test_idx in folds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # see _fit_score
            model = get_recipe("tfidf-logreg", params).fit(
                texts[train_idx].tolist(), labels[train_idx].tolist()
            )
        predicted[test_idx] = model.predict(texts[test_idx].tolist())
    return [str(p) for p in predicted]


def feature_evidence(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    folds: int = 2,
    seed: int = 42,
    level: float = 0.95,
    defaults: dict[str, Any] | None = None,
    features: Sequence[str] | None = None,
) -> FeatureReport:
    """Each of :data:`FEATURE_GROUPS` on and off against the recipe's ``defaults`` (its own
    when None), on the same stratified ``folds``-fold cuts; the gain in macro-F1 over the
    out-of-fold predictions of all rows, with a one-sided ``level`` lower bound from a paired
    bootstrap over rows (:mod:`loopml.pipeline.confidence`). ``features`` limits the groups."""
    from loopml.pipeline.confidence import macro_f1_delta_upper
    from loopml.recipes.tfidf_logreg import TfidfLogRegParams

    base = TfidfLogRegParams(**(defaults or {})).model_dump()
    x, y = np.asarray(texts, dtype=object), np.asarray(labels, dtype=object)
    cuts = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y))
    truth = [str(v) for v in y]
    classes = sorted(set(truth))
    kept_groups = kept_features(defaults)
    base_predicted = _out_of_fold(base, x, y, cuts)
    found = []
    for feature in FEATURE_GROUPS if features is None else features:
        switch = FEATURE_GROUPS[feature]
        on = {k: v[0] for k, v in switch.items()}
        off = {k: v[1] for k, v in switch.items()}
        kept = feature in kept_groups
        other = _out_of_fold(base | (off if kept else on), x, y, cuts)
        with_, without = (base_predicted, other) if kept else (other, base_predicted)
        f1_with = float(f1_score(truth, with_, average="macro", labels=classes))
        f1_without = float(f1_score(truth, without, average="macro", labels=classes))
        # lower bound of (with - without) = minus the upper bound of (without - with)
        upper = macro_f1_delta_upper(truth, without, with_, classes, level=level, seed=seed)
        found.append(
            FeatureEvidence(
                feature, kept, on, off, f1_with, f1_without, f1_with - f1_without, -upper
            )
        )
    return FeatureReport(len(truth), folds, level, seed, found)

"""Explain one prediction: which tokens drove each class (ML Test Score, infrastructure 5).

The method works for every recipe, since a ``TextClassifier`` guarantees only ``predict_proba``
and ``classes``: leave-one-token-out occlusion. Each whitespace token is deleted in turn, every
variant is scored in one ``predict_proba`` call, and a token's attribution to a class is the drop
of that class's probability without it (positive: the token pushes towards the class). It is
exact for what it measures, deterministic, and costs one batch of ``tokens + 1`` texts.

A linear text model (a scikit-learn pipeline ending in a classifier with ``coef_``, as
tfidf-logreg is) also gets its own contributions: tf-idf weight times coefficient, per term
(n-grams included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopml.config import Settings
from loopml.errors import RequestError, UnknownVersionError
from loopml.recipes.base import TextClassifier
from loopml.routing import CHALLENGER, CHAMPION, PREVIOUS

__all__ = ["MAX_TOKENS", "Explanation", "explain", "explain_version"]

#: Longer texts are refused: the cost is one batch of tokens + 1 texts of the text's length.
MAX_TOKENS = 256

_TOKEN = re.compile(r"\S+")


@dataclass
class Explanation:
    """The prediction of one text and, per class, the tokens pushing towards and away from it."""

    text: str
    label: str
    probabilities: dict[str, float]
    tokens: list[dict[str, Any]]
    classes: dict[str, dict[str, Any]]
    linear: dict[str, dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (documented in docs/explain.md)."""
        return self.meta | {
            "method": "occlusion",
            "text": self.text,
            "label": self.label,
            "probabilities": self.probabilities,
            "tokens": self.tokens,
            "classes": self.classes,
            "linear": self.linear,
        }


def explain(model: TextClassifier, text: str, *, top: int = 5) -> Explanation:
    """Explain ``model``'s answer for ``text`` by leave-one-token-out occlusion."""
    if top < 1:
        raise RequestError(f"top: must be at least 1, got {top}")
    spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    if not spans:
        raise RequestError("text: must not be empty or blank")
    if len(spans) > MAX_TOKENS:
        raise RequestError(
            f"text: {len(spans)} tokens is over the explain limit of {MAX_TOKENS} tokens"
        )
    # Deleting the span keeps the rest of the text byte for byte as it was.
    variants = [text[:s] + text[e:] for s, e in spans]
    proba = np.asarray(model.predict_proba([text, *variants]), dtype=np.float64)
    base, without = proba[0], proba[1:]
    drops = base[None, :] - without  # (tokens, classes)
    classes = [str(c) for c in model.classes]
    tokens = [
        {
            "index": i,
            "token": text[s:e],
            "start": s,
            "end": e,
            "attribution": {c: _num(drops[i, k]) for k, c in enumerate(classes)},
        }
        for i, (s, e) in enumerate(spans)
    ]
    words = [(text[s:e], i) for i, (s, e) in enumerate(spans)]
    per_class = {
        c: {"probability": _num(base[k])} | _ranked(words, drops[:, k], top)
        for k, c in enumerate(classes)
    }
    return Explanation(
        text=text,
        label=classes[int(base.argmax())],
        probabilities={c: _num(base[k]) for k, c in enumerate(classes)},
        tokens=tokens,
        classes=per_class,
        linear=_linear(model, text, classes, top),
    )


def explain_version(settings: Settings, version: str, text: str, *, top: int = 5) -> Explanation:
    """Explain registered ``version`` (a number, or an alias such as ``champion``) on ``text``."""
    if len(text) > settings.max_text_chars:
        raise RequestError(
            f"text: {len(text)} characters is over the limit of {settings.max_text_chars}"
            " (LOOPML_MAX_TEXT_CHARS)"
        )
    from loopml.registry import Registry  # MLflow: only when a registered version is asked for

    registry = Registry(settings)
    if version in (CHAMPION, CHALLENGER, PREVIOUS):
        mv = registry.alias(version)
        if mv is None:
            raise UnknownVersionError(f"model {registry.name!r} has no {version} version")
    else:
        mv = registry.version(version)
    explanation = explain(registry.load(str(mv.version)), text, top=top)
    explanation.meta = {"model_name": registry.name, "model_version": str(mv.version)}
    return explanation


def _num(value: Any) -> float:
    # Six decimals: stable JSON across platforms, finer than any decision made on it.
    return round(float(value), 6)


def _ranked(items: list[tuple[str, int]], weights: Any, top: int) -> dict[str, list[Any]]:
    """The ``top`` items with the largest positive and the largest negative weights."""
    rows = [(_num(w), index, token) for (token, index), w in zip(items, weights, strict=True)]
    towards = sorted((r for r in rows if r[0] > 0), key=lambda r: (-r[0], r[1]))
    away = sorted((r for r in rows if r[0] < 0), key=lambda r: (r[0], r[1]))
    return {
        side: [{"token": token, "index": index, "weight": w} for w, index, token in chosen[:top]]
        for side, chosen in (("towards", towards), ("away", away))
    }


def _linear(
    model: TextClassifier, text: str, classes: list[str], top: int
) -> dict[str, dict[str, Any]] | None:
    """Term x coefficient contributions of a linear scikit-learn text pipeline, else None."""
    pipeline = getattr(model, "pipeline", None)
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2:
        return None
    vectorizer, clf = steps[0][1], steps[1][1]
    coef = getattr(clf, "coef_", None)
    vocabulary = getattr(vectorizer, "vocabulary_", None)
    if coef is None or not isinstance(vocabulary, dict) or not hasattr(vectorizer, "transform"):
        return None
    coef = np.asarray(coef, dtype=np.float64)
    if coef.shape[0] == 1 and len(classes) == 2:
        coef = np.vstack([-coef[0], coef[0]])  # binary: one row, for the second class
    if coef.shape[0] != len(classes):
        return None
    row = vectorizer.transform([text]).tocsr()
    columns, values = row.indices, row.data.astype(np.float64)
    # The text's own n-grams name its columns: get_feature_names_out() would build all of them.
    names = {vocabulary[t]: t for t in vectorizer.build_analyzer()(text) if t in vocabulary}
    terms = [(str(names.get(int(j), j)), int(j)) for j in columns]
    intercepts = np.asarray(getattr(clf, "intercept_", np.zeros(len(classes))), dtype=np.float64)
    if intercepts.shape[0] == 1 and len(classes) == 2:
        intercepts = np.array([-intercepts[0], intercepts[0]])
    out = {}
    for k, c in enumerate(classes):
        ranked = _ranked(terms, values * coef[k, columns], top)
        out[c] = {
            "intercept": _num(intercepts[k]),
            "towards": [{"term": r["token"], "weight": r["weight"]} for r in ranked["towards"]],
            "away": [{"term": r["token"], "weight": r["weight"]} for r in ranked["away"]],
        }
    return out

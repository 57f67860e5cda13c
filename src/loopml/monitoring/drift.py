"""Drift checks: a window of predictions against the champion's reference data.

One decision function, :func:`detect_drift`, serves ``loopml monitor`` and the rate tests. Every
check yields a distance and drifts when it reaches its threshold (as Evidently decides):

- ``text``: Evidently's text drift, the ROC AUC of a classifier told to separate window texts from
  reference texts (0.5 = indistinguishable);
- ``length``, ``urls``, ``mentions``, ``hashtags``, ``non_ascii``, ``oov``, ``confidence``: the
  Wasserstein distance normed by the reference standard deviation (Evidently's ``wasserstein``);
- ``label``: the Jensen-Shannon distance of predicted-class shares (Evidently's ``jensenshannon``);
- ``embedding`` (encoder models only): Evidently's embedding drift ``model`` method, the ROC AUC
  of a classifier told to separate the window's sentence embeddings from the reference's.

Distances rather than p-values: on a 100,000-row window every p-value is tiny, while a distance
stays a measure of how much changed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.spatial import distance
from scipy.stats import wasserstein_distance

from loopml.config import Settings, setting, settings_of
from loopml.monitoring.descriptors import (
    SURFACE_DESCRIPTORS,
    model_vocabulary,
    oov_rates,
    surface_descriptors,
)
from loopml.recipes.base import TextClassifier

__all__ = [
    "Check",
    "Reference",
    "Thresholds",
    "build_reference",
    "detect_drift",
    "embedding_drift_auc",
    "jensenshannon_distance",
    "observe",
    "sample_rows",
    "text_drift_auc",
    "wasserstein_norm",
]

Status = Literal["ok", "drift", "unavailable"]
TEXT_METHOD = "abs_text_content_drift"
EMBEDDING_METHOD = "model"
Embedder = Callable[[Sequence[str]], Any]


@dataclass(frozen=True)
class Thresholds:
    """Drift thresholds and the minimum rows a check needs (from settings)."""

    text_auc: float = setting("monitor_text_auc_threshold")
    descriptor: float = setting("monitor_descriptor_threshold")
    confidence: float = setting("monitor_confidence_threshold")
    label: float = setting("monitor_label_threshold")
    min_samples: int = setting("monitor_min_samples")
    embedding_auc: float = setting("monitor_embedding_auc_threshold")

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        """The ``monitor_*`` thresholds of ``settings``."""
        return settings_of(cls, settings)


@dataclass(frozen=True)
class Check:
    """The outcome of one drift check."""

    kind: str
    group: Literal["input", "prediction"]
    method: str
    score: float | None
    threshold: float
    status: Status
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class Reference:
    """What a window is compared with.

    ``inputs``: a sample of the training split (text and surface descriptors).
    ``outputs``: the model's predictions on the validation split (label, confidence, OOV rate):
    held-out rows, because on its own training rows a model is more confident than in production.
    ``embeddings``: for encoder models, sentence embeddings of a sample of ``inputs``' texts, and
    ``embed``, the model's encoder, which embeds the window's texts the same way.
    """

    inputs: pd.DataFrame
    outputs: pd.DataFrame
    classes: list[str]
    vocabulary: frozenset[str] | None
    embeddings: Any = field(default=None, repr=False, compare=False)
    embed: Embedder | None = field(default=None, repr=False, compare=False)


def sample_rows(frame: pd.DataFrame, cap: int, *, seed: int) -> pd.DataFrame:
    """At most ``cap`` rows of ``frame``, drawn at random (all of them when it is small enough)."""
    if len(frame) <= cap:
        return frame
    return frame.sample(n=cap, random_state=seed)


def observe(classifier: TextClassifier, texts: Sequence[str]) -> pd.DataFrame:
    """What serving logs for ``texts``: text, length, predicted label and its confidence."""
    proba = classifier.predict_proba(list(texts))
    classes = np.asarray(classifier.classes, dtype=object)
    return pd.DataFrame(
        {
            "text": list(texts),
            "length": [float(len(t)) for t in texts],
            "label": classes[proba.argmax(axis=1)],
            "confidence": proba.max(axis=1),
        }
    )


def build_reference(
    train_texts: Sequence[str],
    validation_texts: Sequence[str],
    classifier: TextClassifier,
    *,
    cap: int,
    seed: int,
    embedding_cap: int = 1000,
) -> Reference:
    """The reference of a model version from its training and validation texts (with
    ``embedding_cap`` training texts embedded, for models that expose ``embed``)."""
    train = sample_rows(pd.DataFrame({"text": list(train_texts)}), cap, seed=seed)
    inputs = pd.concat(
        [train.reset_index(drop=True), surface_descriptors(train["text"]).reset_index(drop=True)],
        axis=1,
    )
    validation = sample_rows(pd.DataFrame({"text": list(validation_texts)}), cap, seed=seed)
    outputs = observe(classifier, validation["text"].tolist())
    vocabulary = model_vocabulary(classifier)
    if vocabulary is not None:
        outputs["oov"] = oov_rates(outputs["text"], vocabulary)
    embed = getattr(classifier, "embed", None)
    embed = embed if callable(embed) else None
    embeddings = None
    if embed is not None:
        embeddings = embed(sample_rows(train, embedding_cap, seed=seed)["text"].tolist())
    return Reference(
        inputs=inputs,
        outputs=outputs,
        classes=list(classifier.classes),
        vocabulary=vocabulary,
        embeddings=embeddings,
        embed=embed,
    )


def wasserstein_norm(reference: ArrayLike, current: ArrayLike) -> float:
    """Wasserstein distance divided by the reference's standard deviation (as Evidently)."""
    ref = np.asarray(reference, dtype=np.float64)
    norm = max(float(np.std(ref)), 0.001)
    return float(wasserstein_distance(ref, np.asarray(current, dtype=np.float64)) / norm)


def jensenshannon_distance(reference: pd.Series, current: pd.Series, classes: list[str]) -> float:
    """Jensen-Shannon distance (natural log) between the class shares of two label series."""
    keys = sorted(set(classes) | set(reference.unique()) | set(current.unique()))
    ref = reference.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
    cur = current.value_counts().reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
    return float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum()))


def text_drift_auc(reference: pd.Series, current: pd.Series, threshold: float) -> float:
    """Evidently's text drift: ROC AUC of a domain classifier, reference vs current texts."""
    from evidently import DataDefinition, Report
    from evidently import Dataset as EvidentlyDataset
    from evidently.metrics import ValueDrift

    definition = DataDefinition(text_columns=["text"])
    report = Report([ValueDrift(column="text", method=TEXT_METHOD, threshold=threshold)])
    with warnings.catch_warnings():
        # Evidently and scikit-learn warn about their own internals (convergence, pandas idioms).
        warnings.simplefilter("ignore")
        snapshot = report.run(
            EvidentlyDataset.from_pandas(
                pd.DataFrame({"text": current}), data_definition=definition
            ),
            EvidentlyDataset.from_pandas(
                pd.DataFrame({"text": reference}), data_definition=definition
            ),
        )
    value = snapshot.dict()["metrics"][0]["value"]
    return float(value)


def embedding_drift_auc(reference: Any, current: Any) -> float:
    """Evidently's embedding drift (``model`` method): ROC AUC of a classifier separating the
    current embeddings from the reference's, on a held-out half (0.5 = indistinguishable).

    Called directly rather than through a ``Report``: the report adds ~45 s of per-column
    statistics on 384 columns for the same number."""
    from evidently.metrics.embeddings import ModelDriftMethod

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score, _, _ = ModelDriftMethod(threshold=0.5)(
            pd.DataFrame(np.asarray(current)), pd.DataFrame(np.asarray(reference))
        )
    return float(score)


def _check(
    kind: str, group: Literal["input", "prediction"], method: str, score: float, threshold: float
) -> Check:
    status: Status = "drift" if score >= threshold else "ok"
    return Check(kind, group, method, round(score, 6), threshold, status)


def _unavailable(
    kind: str, group: Literal["input", "prediction"], method: str, threshold: float, note: str
) -> Check:
    return Check(kind, group, method, None, threshold, "unavailable", note)


def _text_checks(reference: Reference, window: pd.DataFrame, t: Thresholds) -> list[Check]:
    texts = window["text"].dropna() if "text" in window else pd.Series([], dtype=object)
    kinds = ["text", *SURFACE_DESCRIPTORS[1:]]
    if len(texts) < t.min_samples:
        note = (
            "texts are not logged (LOOPML_LOG_TEXT=false)"
            if texts.empty
            else (f"only {len(texts)} logged texts (minimum {t.min_samples})")
        )
        checks = [_unavailable("text", "input", TEXT_METHOD, t.text_auc, note)]
        checks += [_unavailable(k, "input", "wasserstein", t.descriptor, note) for k in kinds[1:]]
        checks.append(_unavailable("oov", "input", "wasserstein", t.descriptor, note))
        checks.append(_unavailable("embedding", "input", EMBEDDING_METHOD, t.embedding_auc, note))
        return checks
    ref = reference.inputs
    checks = [
        _check(
            "text", "input", TEXT_METHOD, text_drift_auc(ref["text"], texts, t.text_auc), t.text_auc
        )
    ]
    current = surface_descriptors(texts)
    for kind in SURFACE_DESCRIPTORS[1:]:
        score = wasserstein_norm(ref[kind], current[kind])
        checks.append(_check(kind, "input", "wasserstein", score, t.descriptor))
    if reference.vocabulary is None or "oov" not in reference.outputs:
        checks.append(
            _unavailable(
                "oov",
                "input",
                "wasserstein",
                t.descriptor,
                "not applicable: the model's recipe exposes no vocabulary",
            )
        )
    else:
        score = wasserstein_norm(reference.outputs["oov"], oov_rates(texts, reference.vocabulary))
        checks.append(_check("oov", "input", "wasserstein", score, t.descriptor))
    checks.append(_embedding_check(reference, texts, t))
    return checks


def _embedding_check(reference: Reference, texts: pd.Series, t: Thresholds) -> Check:
    if reference.embed is None or reference.embeddings is None:
        note = "not applicable: the model's recipe has no sentence encoder"
        return _unavailable("embedding", "input", EMBEDDING_METHOD, t.embedding_auc, note)
    # as many window texts as reference embeddings: a balanced two-sample test
    rows = min(len(texts), len(reference.embeddings))
    current = reference.embed(texts.sample(n=rows, random_state=0).tolist())
    score = embedding_drift_auc(reference.embeddings, current)
    return _check("embedding", "input", EMBEDDING_METHOD, score, t.embedding_auc)


def detect_drift(
    reference: Reference, window: pd.DataFrame, thresholds: Thresholds, *, cap: int, seed: int
) -> list[Check]:
    """Run every drift check on ``window`` (columns text (may be None), length, label, confidence).

    Windows larger than ``cap`` are sampled down first; the result does not depend on the order
    of rows.
    """
    sample = sample_rows(window, cap, seed=seed)
    t = thresholds
    length = wasserstein_norm(reference.inputs["length"], sample["length"])
    checks = [_check("length", "input", "wasserstein", length, t.descriptor)]
    checks += _text_checks(reference, sample, t)
    label = jensenshannon_distance(reference.outputs["label"], sample["label"], reference.classes)
    checks.append(_check("label", "prediction", "jensenshannon", label, t.label))
    confidence = wasserstein_norm(reference.outputs["confidence"], sample["confidence"])
    checks.append(_check("confidence", "prediction", "wasserstein", confidence, t.confidence))
    return checks

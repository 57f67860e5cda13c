"""Evaluation of a classifier on a test split: quality, slices, behavior, latency."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from loopml.pipeline.behavioral import BehavioralReport, run_behavioral_tests
from loopml.recipes.base import TextClassifier

__all__ = [
    "Evaluation",
    "domain_f1",
    "evaluate",
    "plot_confusion_matrix",
    "score",
    "single_latency_ms",
]


@dataclass
class Evaluation:
    """Every number the gate and the reports need about one model on one test split."""

    metrics: dict[str, float]
    domain_f1: dict[str, float]
    labels: list[str]
    confusion: list[list[int]]
    behavioral: BehavioralReport
    latency_p99_ms: float
    #: test macro-F1 of the simple baselines (:mod:`loopml.pipeline.baselines`), by name
    baselines: dict[str, float] = field(default_factory=dict)
    #: per test row: label, domain, predicted (for the gate's confidence bounds; not exported)
    rows: pd.DataFrame | None = field(default=None, repr=False)
    #: each baseline's prediction per test row, in ``rows``' order
    baseline_predicted: dict[str, list[str]] = field(default_factory=dict, repr=False)
    #: the unigram baseline's F1 per domain slice and balanced behavioral pass rate
    baseline_domain_f1: dict[str, float] = field(default_factory=dict)
    baseline_behavioral: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "metrics": self.metrics,
            "domain_f1": self.domain_f1,
            "labels": self.labels,
            "confusion": self.confusion,
            "behavioral": self.behavioral.to_dict(),
            "latency_p99_ms": self.latency_p99_ms,
            "baselines": self.baselines,
        }

    def flat_metrics(self) -> dict[str, float]:
        """Metrics with MLflow-friendly names, slices and behavior included."""
        flat = dict(self.metrics)
        flat.update({f"f1_domain_{d}": v for d, v in self.domain_f1.items()})
        flat["behavioral_pass_rate"] = self.behavioral.pass_rate
        flat["identity_flips"] = float(len(self.behavioral.identity_flips()[0]))
        flat["latency_p99_ms"] = self.latency_p99_ms
        flat.update({f"baseline_{n}_macro_f1": v for n, v in self.baselines.items()})
        return flat


def single_latency_ms(model: TextClassifier, texts: list[str], *, calls: int = 300) -> float:
    """In-process p99 latency of one single-text prediction, in milliseconds."""
    model.predict_proba(texts[:1])  # warm caches before timing
    timings = []
    for i in range(calls):
        start = time.perf_counter()
        model.predict_proba([texts[i % len(texts)]])
        timings.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(timings, 99))


def domain_f1(test: pd.DataFrame, predicted: list[str]) -> dict[str, float]:
    """Macro-F1 of ``predicted`` per domain slice of ``test``, over the classes each holds."""
    out = {}
    frame = test.assign(predicted=predicted)
    for domain, group in frame.groupby("domain"):
        # Average over the classes the slice really holds, for candidate and champion alike: a
        # single stray prediction of an absent class must not swing the slice score.
        present = sorted(group["label"].unique())
        score = f1_score(
            group["label"], group["predicted"], average="macro", labels=present, zero_division=0
        )
        out[str(domain)] = float(score)
    return out


def evaluate(model: TextClassifier, test: pd.DataFrame, *, seed: int = 0) -> Evaluation:
    """Evaluate ``model`` on ``test`` (columns text, label, domain)."""
    texts = test["text"].tolist()
    truth = test["label"].tolist()
    predicted = model.predict(texts)
    labels = sorted(set(truth) | set(model.classes))
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(
            f1_score(truth, predicted, average="macro", labels=labels, zero_division=0)
        ),
    }
    for i, label in enumerate(labels):
        metrics[f"precision_{label}"] = float(precision[i])
        metrics[f"recall_{label}"] = float(recall[i])
        metrics[f"f1_{label}"] = float(f1[i])
    return Evaluation(
        metrics=metrics,
        domain_f1=domain_f1(test, predicted),
        labels=labels,
        confusion=confusion_matrix(truth, predicted, labels=labels).tolist(),
        behavioral=run_behavioral_tests(model, texts, seed=seed),
        latency_p99_ms=single_latency_ms(model, texts),
        rows=pd.DataFrame(
            {"label": truth, "domain": test["domain"].tolist(), "predicted": predicted}
        ),
    )


def score(model: TextClassifier, test: pd.DataFrame) -> dict[str, float]:
    """Macro-F1 and per-class F1 (``f1_<label>``) of ``model`` on ``test``: quality only."""
    truth = test["label"].tolist()
    predicted = model.predict(test["text"].tolist())
    labels = sorted(set(truth) | set(model.classes))
    f1 = f1_score(truth, predicted, average=None, labels=labels, zero_division=0)
    out = {"macro_f1": float(np.mean(f1))}
    out.update({f"f1_{label}": float(f1[i]) for i, label in enumerate(labels)})
    return out


def plot_confusion_matrix(evaluation: Evaluation, path: Path, *, title: str) -> Path:
    """Write the confusion matrix as a PNG (headless) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(evaluation.confusion)
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(evaluation.labels))
    ax.set_xticks(ticks, evaluation.labels, rotation=30)
    ax.set_yticks(ticks, evaluation.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=color)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

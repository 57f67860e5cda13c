"""Training/serving skew: do the probabilities serving logged match the registered model's?

Takes the newest logged predictions of one model version (their texts and the probabilities the
server answered) and recomputes them offline with the version loaded from the registry, as
training evaluated it. Any difference means serving does not run the model training produced
(a different preprocessing, a stale file, a changed library): ML Test Score, Monitoring 3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from loopml.config import Settings
from loopml.errors import MonitorError
from loopml.registry import Registry
from loopml.routing import CHAMPION
from loopml.store import Prediction, open_settings_store

__all__ = ["SkewReport", "check_skew"]


@dataclass
class SkewReport:
    """Largest difference between logged and recomputed probabilities of one version."""

    model_name: str
    model_version: str
    rows: int
    tolerance: float
    max_abs_diff: float
    share_above: float
    label_mismatches: int
    worst: list[dict[str, Any]] = field(default_factory=list)
    skipped_without_text: int = 0

    @property
    def passed(self) -> bool:
        """No logged probability differs from the recomputed one by more than ``tolerance``."""
        return self.share_above == 0.0 and self.label_mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self) | {"passed": self.passed}


def _logged(settings: Settings, version: str, sample: int) -> tuple[pd.DataFrame, int]:
    base = select(
        Prediction.request_id, Prediction.text, Prediction.label, Prediction.probabilities
    )
    query = (
        base.where(
            Prediction.model_name == settings.model_name, Prediction.model_version == version
        )
        .order_by(Prediction.ts.desc())
        .limit(sample)
    )
    with (
        open_settings_store(settings) as store,
        store.session() as session,
    ):
        result = session.execute(query)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    with_text = frame[frame["text"].notna()] if len(frame) else frame
    return with_text.reset_index(drop=True), len(frame) - len(with_text)


def check_skew(settings: Settings, *, version: str | None = None, sample: int = 1000) -> SkewReport:
    """Compare the newest ``sample`` logged predictions of ``version`` (default: the champion)
    with the registered model's probabilities for the same texts."""
    if sample < 1:
        raise MonitorError(f"sample must be at least 1 prediction, got {sample}")
    registry = Registry(settings)
    if version is None:
        champion = registry.alias(CHAMPION)
        if champion is None:
            raise MonitorError(f"model {settings.model_name!r} has no champion: give --version")
        version = str(champion.version)
    model = registry.load(version)
    frame, skipped = _logged(settings, version, sample)
    tolerance = settings.skew_tolerance
    if frame.empty:
        return SkewReport(settings.model_name, version, 0, tolerance, 0.0, 0.0, 0, [], skipped)
    recomputed = model.predict_proba(frame["text"].tolist())
    # A class the log lacks counts as probability 0: a model with other classes is skew too.
    logged = np.array(
        [[float(p.get(c, 0.0)) for c in model.classes] for p in frame["probabilities"]]
    )
    diff = np.abs(recomputed - logged).max(axis=1)
    labels = [model.classes[i] for i in recomputed.argmax(axis=1)]
    mismatches = int((frame["label"] != pd.Series(labels)).sum())
    order = np.argsort(-diff)[:5]
    worst = [
        {"request_id": frame["request_id"][i], "abs_diff": float(diff[i])}
        for i in order
        if diff[i] > tolerance
    ]
    return SkewReport(
        model_name=settings.model_name,
        model_version=version,
        rows=len(frame),
        tolerance=tolerance,
        max_abs_diff=float(diff.max()),
        share_above=float((diff > tolerance).mean()),
        label_mismatches=mismatches,
        worst=worst,
        skipped_without_text=skipped,
    )

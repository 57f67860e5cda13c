"""ML Test Score, Monitoring 3: the controller's tick checks training/serving skew in production.

A real model, real stores (SQLite, then PostgreSQL): predictions logged as serving computes them
pass; predictions a serving with another preprocessing computed (mentions and hashtags stripped
before the model, the logged text left whole) are found by the next due check, reported by the tick,
put on the audit log and exported as ``loopml_skew_detected 1``. The check runs at most every
``LOOPML_SKEW_INTERVAL_S``: in between, the previous result is carried forward.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from logged_predictions import insert_predictions

from loopml.config import Settings
from loopml.control.controller import Controller
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.monitoring import MonitorCollector
from loopml.pipeline.train import train
from loopml.recipes.base import TextClassifier
from loopml.registry import Registry
from loopml.store import open_store

pytestmark = pytest.mark.slow

SAMPLE = 200


class StrippingServer:
    """A serving path whose preprocessing differs from training's: it drops @mentions and
    #hashtags before the model sees the text."""

    def __init__(self, model: TextClassifier) -> None:
        self.model = model
        self.classes = model.classes

    @staticmethod
    def strip(text: str) -> str:
        return re.sub(r"[@#]\w+", " ", text)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba([self.strip(t) for t in texts])


def _gauges(store: object, name: str) -> dict[str, float]:
    collector = MonitorCollector(store, name, ttl=0)  # type: ignore[arg-type]
    return {f.name: f.samples[0].value for f in collector.collect() if f.samples}


def test_the_tick_finds_skew_reports_audits_and_exports_it(
    backend_settings: Settings, tweets: Dataset
) -> None:
    s = backend_settings.model_copy(
        update={"monitor_interval_s": 0, "skew_interval_s": 3600, "skew_sample": SAMPLE}
    )
    frame = tweets.frame[tweets.frame["domain"] != "airline"]
    train_rows = frame.sample(3000, random_state=0)
    version = train(s, dataset=Dataset("non-airline", train_rows, content_version(train_rows)))
    registry = Registry(s)
    model = registry.load(version.version)
    rest = frame.drop(train_rows.index)
    with_tags = rest[rest["text"].str.contains(r"[@#]\w", regex=True)]
    clean, skewed = rest.sample(400, random_state=1), with_tags.sample(SAMPLE, random_state=2)
    start = datetime.now(UTC) - timedelta(hours=2)
    with open_store(s.db_url) as store:
        promote(store, registry, version.version, force=True, reason="skew test")
        insert_predictions(s, version.version, model, clean["text"].tolist(), None, start=start)
        controller = Controller(s, store)
        now = datetime.now(UTC)

        first = controller.tick(now=now)
        assert first.monitor is not None and first.skew is not None, first
        assert (first.skew["passed"], first.skew["rows"]) == (True, SAMPLE)
        assert first.skew["max_abs_diff"] < 1e-6
        assert first.to_dict()["skew"]["passed"] is True
        assert _gauges(store, s.model_name)["loopml_skew_detected"] == 0.0

        # A serving path that strips mentions and hashtags logs the newest predictions.
        texts = skewed["text"].tolist()
        later = start + timedelta(hours=1)
        insert_predictions(s, version.version, StrippingServer(model), texts, None, start=later)
        # Within LOOPML_SKEW_INTERVAL_S the previous result is carried, not recomputed.
        carried = controller.tick(now=now + timedelta(minutes=5))
        assert carried.skew == first.skew

        found = controller.tick(now=now + timedelta(hours=2))
        assert found.skew is not None and found.skew["passed"] is False, found.skew
        expected = np.abs(
            model.predict_proba(texts)
            - model.predict_proba([StrippingServer.strip(t) for t in texts])
        ).max(axis=1)
        assert found.skew["rows"] == SAMPLE
        assert found.skew["share_above"] == pytest.approx(float((expected > 1e-6).mean()))
        assert found.skew["share_above"] > 0.5
        assert found.skew["max_abs_diff"] == pytest.approx(float(expected.max()))
        assert found.skew["checked_at"] == (now + timedelta(hours=2)).isoformat()

        audit = [e for e in store.history(s.model_name) if e.action == "skew_detected"]
        assert len(audit) == 1 and audit[0].to_version == version.version
        assert audit[0].details["share_above"] == found.skew["share_above"]
        assert "logged predictions differ from the registered model's" in audit[0].reason

        gauges = _gauges(store, s.model_name)
        assert gauges["loopml_skew_detected"] == 1.0
        assert gauges["loopml_skew_rows"] == SAMPLE
        assert gauges["loopml_skew_max_abs_diff"] == pytest.approx(float(expected.max()))
        assert gauges["loopml_skew_last_check_timestamp_seconds"] == pytest.approx(
            (now + timedelta(hours=2)).timestamp()
        )

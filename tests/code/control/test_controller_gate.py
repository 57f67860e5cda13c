"""A retrain the gate refuses: no rollout, and the decision says which checks failed and by
how much."""

from __future__ import annotations

import pytest
from logged_predictions import insert_predictions

from loopml.config import Settings
from loopml.control.controller import Controller
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.routing import load_routing
from loopml.store import open_store


@pytest.mark.slow
def test_a_retrain_the_gate_refuses_is_not_rolled_out_and_says_why(
    settings: Settings, tweets: Dataset
) -> None:
    # no model answers in a microsecond: this gate refuses every candidate
    settings = settings.model_copy(
        update={
            "monitor_interval_s": 0,
            "retrain_cooldown_s": 0,
            "retrain_min_labeled": 200,
            "gate_max_p99_latency_ms": 0.001,
        }
    )
    others = tweets.frame[tweets.frame["domain"] != "airline"].sample(3000, random_state=0)
    version = train(settings, dataset=Dataset("non-airline", others, content_version(others)))
    registry = Registry(settings)
    airline = tweets.frame[tweets.frame["domain"] == "airline"].sample(800, random_state=0)
    with open_store(settings.db_url) as store:
        promote(store, registry, version.version, force=True, reason="gate test")
        insert_predictions(
            settings,
            version.version,
            registry.load(version.version),
            airline["text"].tolist(),
            airline["label"].tolist(),
        )
        tick = Controller(settings, store).tick()
        assert tick.action == "retrain_rejected", tick
        assert tick.reason.startswith("gate failed: latency_p99_ms "), tick.reason
        assert tick.reason.endswith("(threshold 0.001)"), tick.reason
        routing = load_routing(store, settings.model_name)
        assert (routing.champion, routing.rollout) == (version.version, None)
        audit = store.history(settings.model_name, limit=5)[0]
        assert (audit.action, audit.to_version) == ("retrain_rejected", tick.version)
        assert "latency_p99_ms" in audit.reason

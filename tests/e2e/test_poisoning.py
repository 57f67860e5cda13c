"""Attack 1 of issue 10, replayed: poisoned feedback must not reach the serving model.

On main, a predict-only client posted 1,000 "negative" labels for its own positive texts; the
controller retrained, the challenger passed the gate and went out as a canary calling "the crew
was great" negative. Now: the predict-only client is refused (403, nothing stored); a client with
a feedback key that poisons its own predictions gets a retrained model that fails the trusted
holdout of the gate, so no rollout starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from serving_helpers import Server, free_port, query

from loopml.config import Settings
from loopml.control import rollout
from loopml.control.live import labeled_feedback
from loopml.control.promotion import promote
from loopml.control.retrain import retrain
from loopml.data import Dataset
from loopml.errors import RolloutError
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.routing import load_routing
from loopml.serving.auth import key_id
from loopml.store import open_store

PRED = "attacker-predict-key-0123456789"
FEED = "partner-feedback-key-0123456789"


def predict_all(http: httpx.Client, texts: list[str], key: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(0, len(texts), 250):
        resp = http.post(
            "/v1/predict", json={"texts": texts[i : i + 250]}, headers={"X-API-Key": key}
        )
        assert resp.status_code == 200, resp.text
        out += resp.json()["predictions"]
    return out


@pytest.mark.slow
def test_poisoned_feedback_is_refused_or_stopped_by_the_trusted_holdout(
    settings: Settings, small_tweets: Dataset, tweets: Dataset, home: Path
) -> None:
    s = settings.model_copy(update={"gate_min_slice_f1": 0.2, "retrain_tune_trials": 8})
    store, registry = open_store(s.db_url), Registry(s)
    train(s, dataset=small_tweets)
    promote(store, registry, "1")

    seen = set(small_tweets.frame["text"])
    positive = tweets.frame[
        (tweets.frame["label"] == "positive") & ~tweets.frame["text"].isin(seen)
    ]
    attack = positive["text"].sample(2000, random_state=1).tolist()

    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    env |= {
        "LOOPML_HOME": str(home),
        "LOOPML_CONFIG": str(home / "absent.toml"),
        "LOOPML_API_KEYS": f"{PRED},{FEED}:predict+feedback",
        "LOOPML_PREDLOG_FLUSH_INTERVAL_S": "0.05",
    }
    server = Server(home, env, port=free_port()).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            # 1. The attack as on main: a predict-only key labels 1,000 of its answers.
            answers = predict_all(http, attack[:1000], PRED)
            labels = [{"request_id": a["request_id"], "label": "negative"} for a in answers]
            refused = http.post("/v1/feedback", json=labels, headers={"X-API-Key": PRED})
            assert refused.status_code == 403, refused.text
            assert "'feedback' role" in refused.json()["error"]

            # 2. A key that may label poisons its own predictions instead.
            answers = predict_all(http, attack[1000:], FEED)
            labels = [{"request_id": a["request_id"], "label": "negative"} for a in answers]
            taken = http.post("/v1/feedback", json=labels, headers={"X-API-Key": FEED})
            assert taken.status_code == 200 and taken.json()["accepted"] == 1000
    finally:
        server.stop()
    counts = query(s.db_url, "select key_id, count(*) from feedback group by key_id")
    assert dict(counts) == {key_id(FEED): 1000}  # nothing of the refused attempt

    # 3. The controller's retraining on those labels: it records who gave them...
    feedback = labeled_feedback(store, registry.name)
    result = retrain(s, registry, feedback, trigger="drift")
    assert result.provenance is not None
    assert result.provenance["by_key"] == {key_id(FEED): 1000}
    assert result.provenance["top_key_share"] == 1.0
    # ...searches no parameters (the labels lower the champion's own parameters' trusted
    # validation F1: a search could mask that, Model 3's tuning leaves it to the gate)...
    assert result.tuning is None and result.tuning_record is not None
    assert "no search, the gate judges the data alone" in result.tuning_record["skipped"]
    # ...and the gate fails it on the trusted holdout, whatever the poisoned feedback slice says.
    checks = {c.name: c for c in result.gate.checks}
    for name in ("macro_f1", "f1_domain_feedback", "trusted_macro_f1", "trusted_f1_positive"):
        c = checks[name]
        print(f"{name}: {c.value:.4f} vs {c.threshold:.4f} ({'pass' if c.passed else 'FAIL'})")
    print("failed checks:", [c.name for c in result.gate.failures()])
    assert not result.gate.passed
    assert not checks["trusted_f1_positive"].passed
    assert checks["f1_domain_feedback"].passed  # the poisoned slice alone would have let it in
    model = registry.load(result.version)
    proba = model.predict_proba(["the crew was great"])[0]
    negative = proba[model.classes.index("negative")]
    print(f"poisoned model: P(negative | 'the crew was great') = {negative:.2f}")

    # 4. So nothing rolls out: the controller's path refuses a version whose gate failed.
    with pytest.raises(RolloutError, match="gate"):
        rollout.start(s, store, registry, result.version, reason="controller", source="controller")
    routing = load_routing(store, registry.name)
    assert (routing.champion, routing.challenger, routing.mode) == ("1", None, "none")
    store.dispose()

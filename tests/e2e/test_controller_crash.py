"""A controller killed with -9 during a canary leaves a consistent state and resumes safely."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from loopml.config import Settings
from loopml.control import rollout
from loopml.control.promotion import promote
from loopml.data import Dataset
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.routing import CHALLENGER, CHAMPION, load_routing
from loopml.store import Feedback, Prediction, Store, open_store

ENV = {
    "LOOPML_CONTROLLER_INTERVAL_S": "0.2",
    # The killed controller's lease expires soon after: the restarted one waits for that.
    "LOOPML_CONTROLLER_LEASE_S": "5",
    "LOOPML_ROLLOUT_STEP_MIN_S": "0",
    "LOOPML_ROLLOUT_MIN_REQUESTS": "30",
    "LOOPML_ROLLOUT_MIN_LABELED": "30",
    "LOOPML_GATE_MIN_SLICE_F1": "0.2",
}


def controller(home: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    env |= ENV | {"LOOPML_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "loopml", "controller", "--json", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def traffic(store: Store, champion: str, challenger: str, n: int = 40) -> None:
    now = datetime.now(UTC)
    with store.session() as session:
        for version, variant in ((champion, "champion"), (challenger, "challenger")):
            for _ in range(n):
                rid = uuid.uuid4().hex
                session.add(
                    Prediction(
                        request_id=rid,
                        ts=now,
                        model_name="sentiment",
                        model_version=version,
                        variant=variant,
                        text=None,
                        text_hash="h",
                        text_length=3,
                        label="neutral",
                        probabilities={},
                        latency_ms=2.0,
                    )
                )
                session.add(Feedback(request_id=rid, ts=now, label="neutral"))


def consistent(store: Store, registry: Registry) -> None:
    routing = load_routing(store, "sentiment")
    aliases = registry.aliases()
    assert aliases[CHAMPION] == routing.champion
    if routing.rollout is None:
        assert (routing.challenger, routing.mode, routing.weight) == (None, "none", 0.0)
    else:
        assert routing.challenger == aliases.get(CHALLENGER)
        assert routing.weight in routing.rollout["steps"]
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"


@pytest.fixture
def two_versions(
    settings: Settings, small_tweets: Dataset, monkeypatch: pytest.MonkeyPatch
) -> tuple[Store, Registry]:
    """Version 1 is the champion, version 2 a candidate; the env is the controller's."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    s = settings.model_copy(update={"gate_min_slice_f1": 0.2})
    store, registry = open_store(s.db_url), Registry(s)
    train(s, dataset=small_tweets)
    promote(store, registry, "1")
    train(s, dataset=small_tweets)
    return store, registry


@pytest.mark.slow
def test_kill_9_during_canary_then_resume(two_versions: tuple[Store, Registry], home: Path) -> None:
    store, registry = two_versions
    rollout.start(registry.settings, store, registry, "2", mode="canary", reason="crash test")
    before = load_routing(store, "sentiment").rollout
    assert before is not None

    proc = controller(home)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until it has ticked (heartbeat moved)
        current = load_routing(store, "sentiment").rollout
        if current and current["heartbeat_at"] != before["heartbeat_at"]:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the controller never ticked: " + proc.stderr.read().decode()[-2000:])
    traffic(store, "1", "2")
    time.sleep(0.5)  # let it act on the traffic (advance)...
    proc.send_signal(signal.SIGKILL)  # ...and kill it wherever it is
    proc.wait(timeout=10)
    consistent(store, registry)

    # Restarted, it resumes the same rollout: never a second start, never a lost split.
    for _ in range(6):
        traffic(store, "1", "2")
        once_the_lease_expired(home)
        consistent(store, registry)
        if load_routing(store, "sentiment").rollout is None:
            break
    actions = [e.action for e in reversed(store.history("sentiment"))]
    assert actions.count("rollout_start_canary") == 1
    assert actions[-1] == "rollout_promote", actions
    assert registry.aliases()[CHAMPION] == "2"


def once_the_lease_expired(home: Path) -> None:
    """``controller --once`` until it no longer finds the killed controller's lease (exit 3)."""
    deadline = time.monotonic() + 120
    while True:
        again = controller(home, "--once")
        _, err = again.communicate(timeout=120)
        if again.returncode != 3 or time.monotonic() > deadline:
            break
        assert b"holds the lease" in err
        time.sleep(0.5)
    assert again.returncode == 0, err.decode()[-2000:]


@pytest.mark.slow
def test_alias_moved_without_commit_is_reconciled(
    two_versions: tuple[Store, Registry], home: Path
) -> None:
    store, registry = two_versions
    registry.move_alias(CHAMPION, "2")  # what a crash between alias move and commit leaves
    proc = controller(home, "--once")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert registry.aliases()[CHAMPION] == "1"
    assert store.history("sentiment")[0].action == "reconcile"

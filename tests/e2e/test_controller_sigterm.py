"""`loopml controller` stopped by SIGTERM (docker stop, a pod's termination) in the middle of a
retrain: it abandons the retrain cleanly and exits 0 well within the 75 s grace period; no MLflow
run stays RUNNING, the audit log says what was abandoned, routing is untouched, and the next
controller run retrains normally."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopml_test_recipes import register_plugins
from mlflow.tracking import MlflowClient

from loopml.config import Settings
from loopml.control.promotion import promote
from loopml.data import Dataset
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.routing import CHAMPION, load_routing
from loopml.store import open_store
from loopml.tracking import experiment_id

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 75  # terminationGracePeriodSeconds, docker stop -t 75

# A plug-in recipe whose fit takes ten minutes in a process that has SLOW_FIT_MARKER set (the
# controller under test), after writing that file: a retrain surely in progress at the signal.
SLOW_RECIPE = """
import os, time
from pathlib import Path
from typing import ClassVar
from loopml_test_recipes import BagOfWordsNB

class SlowFit(BagOfWordsNB):
    name: ClassVar[str] = "test-slow-fit"

    def fit(self, texts, labels):
        marker = os.environ.get("SLOW_FIT_MARKER")
        if marker:
            Path(marker).write_text("fitting")
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                time.sleep(0.05)
        return super().fit(texts, labels)
"""

# Every tick monitors, the quality floor is out of reach (a quality alarm), a few labels retrain.
ENV = {
    "LOOPML_CONTROLLER_INTERVAL_S": "1",
    "LOOPML_MONITOR_INTERVAL_S": "0",
    "LOOPML_MONITOR_MIN_SAMPLES": "100",
    "LOOPML_MONITOR_MIN_LABELED": "100",
    "LOOPML_MONITOR_MIN_MACRO_F1": "0.99",
    "LOOPML_RETRAIN_MIN_LABELED": "50",
    "LOOPML_GATE_MIN_SLICE_F1": "0.2",
    # one fit per retrain, the one the test pauses: a search would fit (and pause) per trial;
    # the search is tested in tests/code/control/test_retrain_tune.py
    "LOOPML_RETRAIN_TUNE_TRIALS": "0",
    "LOOPML_NOISE_CHECK": "false",  # likewise: its cross-validation fits before the run opens
}


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "slow_fit_recipe.py").write_text(SLOW_RECIPE)
    register_plugins(monkeypatch, folder, {"test-slow-fit": "slow_fit_recipe:SlowFit"})
    return folder


@pytest.fixture
def busy_home(
    settings: Settings,
    tweets: Dataset,
    small_tweets: Dataset,
    plugins: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """A champion of the slow recipe (fast here: no marker) and labelled traffic on tweets it
    was not trained on, which alarms."""
    from logged_predictions import insert_predictions

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    s = settings.model_copy(update={"gate_min_slice_f1": 0.2})
    result = train(s, dataset=small_tweets, recipe="test-slow-fit")
    with open_store(s.db_url) as store:
        # The gate of a naive-Bayes first version may fail on 4,000 tweets: not what this tests.
        promote(store, Registry(s), result.version, force=True, reason="test champion")
    unseen = tweets.frame.drop(index=small_tweets.frame.index)
    frame = unseen.sample(300, random_state=1)
    model = Registry(s).load(result.version)
    insert_predictions(s, result.version, model, list(frame["text"]), list(frame["label"]))
    return s


def controller(home: Path, plugins: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    path = [str(ROOT / "src"), str(plugins), str(ROOT / "tests" / "support")]
    env |= ENV | extra | {"LOOPML_HOME": str(home), "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.Popen(
        [sys.executable, "-m", "loopml", "controller", "--json", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def runs_by_status(settings: Settings) -> dict[str, list[str]]:
    client = MlflowClient(settings.mlflow_uri)
    out: dict[str, list[str]] = {}
    for run in client.search_runs([experiment_id(settings, client)], max_results=1000):
        out.setdefault(run.info.status, []).append(run.info.run_id)
    return out


# "": the single-model controller (LOOPML_MODEL_NAME, the main thread); "sentiment": the
# multi-model one (LOOPML_MODELS), whose model loops run in threads of their own.
@pytest.mark.parametrize("models", ["", "sentiment"], ids=["one-model", "models"])
def test_sigterm_mid_retrain_abandons_it_and_exits_0_within_the_grace(
    busy_home: Settings, home: Path, plugins: Path, tmp_path: Path, models: str
) -> None:
    settings = busy_home
    registry = Registry(settings)
    with open_store(settings.db_url) as store:
        routing_before = load_routing(store, settings.model_name)
        audit_before = len(store.history(settings.model_name, limit=1000))
    assert runs_by_status(settings).get("RUNNING") is None

    marker = tmp_path / "fitting"
    proc = controller(home, plugins, SLOW_FIT_MARKER=str(marker), LOOPML_MODELS=models)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"the controller never started a retrain:\n{out}\n{err[-3000:]}")
            time.sleep(0.1)
        time.sleep(1)  # well inside the fit
        running = runs_by_status(settings).get("RUNNING", [])
        assert len(running) == 1, "the retrain's MLflow run should be open at the signal"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"still running {GRACE_S} s after SIGTERM:\n{err[-3000:]}")
        stopped_s = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\n[controller] SIGTERM mid-retrain: exited {proc.returncode} in {stopped_s:.2f} s")
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert stopped_s < GRACE_S

    ticks = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert ticks[-1]["action"] == "retrain_abandoned", ticks
    assert "SIGTERM during retrain" in ticks[-1]["reason"]

    statuses = runs_by_status(settings)
    assert "RUNNING" not in statuses, statuses
    killed = MlflowClient(settings.mlflow_uri).get_run(running[0])
    assert killed.info.status == "KILLED"
    assert killed.data.tags["loopml.abandoned"] == "SIGTERM: the controller stopped"

    with open_store(settings.db_url) as store:
        history = store.history(settings.model_name, limit=1000)
        assert len(history) == audit_before + 1
        assert history[0].action == "retrain_abandoned"
        assert running[0] in history[0].reason and history[0].details["signal"] == "SIGTERM"
        routing_after = load_routing(store, settings.model_name)
    assert routing_after.champion == routing_before.champion
    assert routing_after.challenger is None and routing_after.rollout is None
    assert registry.aliases()[CHAMPION] == routing_before.champion

    # The next controller (no slow fit now) retrains at its first tick: an abandoned retrain
    # does not count for the cooldown.
    again = controller(home, plugins, "--once", LOOPML_MODELS=models)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    tick = json.loads(out.splitlines()[-1])
    assert tick["action"] in ("rollout_started", "retrain_rejected"), tick
    assert "RUNNING" not in runs_by_status(settings) or tick["action"] == "rollout_started"
    with open_store(settings.db_url) as store:
        actions = [e.action for e in store.history(settings.model_name, limit=5)]
    assert actions[0].startswith("rollout_start") or actions[0] == "retrain_rejected", actions


def test_sigterm_between_ticks_exits_0_at_once(
    settings: Settings, home: Path, plugins: Path
) -> None:
    """Idle (no champion yet: each tick is quick), waiting for its next tick."""
    proc = controller(home, plugins, LOOPML_CONTROLLER_INTERVAL_S="30")
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("{"), line  # the first tick ran; now it waits 30 s
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=GRACE_S)
        stopped_s = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\n[controller] SIGTERM between ticks: exited {proc.returncode} in {stopped_s:.2f} s")
    assert proc.returncode == 0, err[-3000:]
    assert stopped_s < 20  # the next tick is 30 s away: it did not wait for it
    assert "stopped by SIGTERM" in err

"""Two `loopml controller` processes at once, and one killed with SIGKILL mid-retrain (issue 19,
rows 5 and 6), on SQLite and PostgreSQL.

Two started together after an alarm with enough labels: exactly one retrains; the other exits 3
naming the holder of the lease and does nothing; no MLflow run is left RUNNING (but the rollout's
own). A controller killed after registering a version and before its gate verdict: while it
works, a new one exits 3; once it was killed and its lease expired, the next one closes the dead
one's run as FAILED, marks the version ``interrupted`` (never rolled out), records
``retrain_interrupted`` and waits out the cooldown instead of retraining again.

The retrain pauses where the test needs it by a plug-in recipe (env vars of the controller
process): in the candidate's fit until a file appears, or in the champion's predictions during
the gate, i.e. after the candidate version was registered with its hashes.
"""

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
from loopml.registry import GATE_TAG, Registry
from loopml.routing import load_routing
from loopml.store import open_store
from loopml.tracking import experiment_id

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

PAUSING_RECIPE = """
import os, time
from pathlib import Path
from typing import ClassVar
from loopml_test_recipes import BagOfWordsClassifier, BagOfWordsNB

FITTED = []  # a candidate was fitted in this process


def hold(marker):
    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.05)


class PausingClassifier(BagOfWordsClassifier):
    candidate = False

    def predict_proba(self, texts):
        # The champion scored by the gate, once this process fitted a candidate: the candidate
        # version is registered by then.
        marker = os.environ.get("PAUSE_GATE_MARKER")
        if marker and FITTED and not self.candidate:
            hold(marker)
        return super().predict_proba(texts)


class Pausing(BagOfWordsNB):
    name: ClassVar[str] = "test-pausing"

    def fit(self, texts, labels):
        folder = os.environ.get("PAUSE_FIT_DIR")
        if folder:
            Path(folder, f"fitting-{os.getpid()}").write_text("fitting")
            deadline = time.monotonic() + 600
            while not Path(folder, "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        model = PausingClassifier(super().fit(texts, labels).pipeline)
        if os.environ.get("PAUSE_GATE_MARKER"):
            model.candidate = True
            FITTED.append(True)
        return model
"""

# Every tick monitors, the quality floor is out of reach (a quality alarm), a few labels retrain.
ENV = {
    "LOOPML_CONTROLLER_INTERVAL_S": "1",
    "LOOPML_CONTROLLER_LEASE_S": "10",
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
    (folder / "pausing_recipe.py").write_text(PAUSING_RECIPE)
    register_plugins(monkeypatch, folder, {"test-pausing": "pausing_recipe:Pausing"})
    return folder


@pytest.fixture
def alarmed(
    backend_settings: Settings,
    tweets: Dataset,
    small_tweets: Dataset,
    plugins: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """A champion of the pausing recipe (no pause in this process) and 300 labelled predictions
    of tweets it was not trained on, which alarm."""
    from logged_predictions import insert_predictions

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    s = backend_settings.model_copy(update={"gate_min_slice_f1": 0.2})
    result = train(s, dataset=small_tweets, recipe="test-pausing")
    with open_store(s.db_url) as store:
        promote(store, Registry(s), result.version, force=True, reason="test champion")
    unseen = tweets.frame.drop(index=small_tweets.frame.index)
    frame = unseen.sample(300, random_state=1)
    model = Registry(s).load(result.version)
    insert_predictions(s, result.version, model, list(frame["text"]), list(frame["label"]))
    return s


def controller(home: Path, plugins: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    stores = {
        k: os.environ[k] for k in ("LOOPML_TRACKING_URI", "LOOPML_DATABASE_URL") if k in os.environ
    }
    path = [str(ROOT / "src"), str(plugins), str(ROOT / "tests" / "support")]
    env |= ENV | stores | extra
    env |= {"LOOPML_HOME": str(home), "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.Popen(
        [sys.executable, "-m", "loopml", "controller", "--json", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def runs(settings: Settings, status: str) -> dict[str, str]:
    """Run id -> run name of the experiment's runs in ``status``."""
    client = MlflowClient(settings.mlflow_uri)
    found = client.search_runs([experiment_id(settings, client)], max_results=1000)
    return {r.info.run_id: r.info.run_name for r in found if r.info.status == status}


def wait_until(ready: object, what: str, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 300
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            for proc in procs:
                proc.kill()
            errors = "\n".join(proc.communicate()[1][-2000:] for proc in procs)
            pytest.fail(f"{what} never happened:\n{errors}")
        time.sleep(0.1)


def test_two_controllers_started_together_exactly_one_retrains(
    alarmed: Settings, home: Path, plugins: Path, tmp_path: Path
) -> None:
    settings = alarmed
    pause = tmp_path / "pause"
    pause.mkdir()
    procs = [controller(home, plugins, "--once", PAUSE_FIT_DIR=str(pause)) for _ in range(2)]
    try:
        # The holder retrains (and waits in its fit); the other is done by then, or (without a
        # lease) fitting too.
        wait_until(
            lambda: any(p.poll() is not None for p in procs) or len(list(pause.iterdir())) > 1,
            "a controller finishing or both fitting",
            procs,
        )
        (pause / "go").write_text("go")
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    codes = [p.returncode for p in procs]
    print(f"\n[lease] two controllers at once: exit codes {codes}")
    assert sorted(codes) == [0, 3], [err[-3000:] for _, err in results]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    loser_err = results[loser][1]
    assert "another controller holds the lease of model 'sentiment'" in loser_err, loser_err
    assert f":{procs[winner].pid}:" in loser_err  # the holder, named
    assert "did nothing" in loser_err and "Traceback" not in loser_err
    assert results[loser][0] == ""  # no tick on stdout

    tick = json.loads(results[winner][0].splitlines()[-1])
    assert tick["action"] in ("rollout_started", "retrain_rejected"), tick
    with open_store(settings.db_url) as store:
        actions = [e.action for e in store.history(settings.model_name, limit=1000)]
        routing = load_routing(store, settings.model_name)
    assert sum(a in ("retrain", "retrain_rejected") for a in actions) == 1, actions
    assert len(Registry(settings).versions()) == 2  # the champion and one challenger
    retrains = [n for n in runs(settings, "FINISHED").values() if n.startswith("retrain")]
    assert len(retrains) == 1
    # Nothing RUNNING, but the run of the rollout in progress.
    rollout_run = (routing.rollout or {}).get("run_id")
    assert set(runs(settings, "RUNNING")) <= {rollout_run}


def test_sigkill_mid_retrain_then_the_next_controller_recovers(
    alarmed: Settings, home: Path, plugins: Path, tmp_path: Path
) -> None:
    settings = alarmed
    registry = Registry(settings)
    marker = tmp_path / "paused"
    proc = controller(home, plugins, "--once", PAUSE_GATE_MARKER=str(marker))
    try:
        wait_until(marker.exists, "the retrain reaching its gate", [proc])
        # Row 6's state: the version registered with its hashes, no verdict, the run RUNNING.
        new = max(int(mv.version) for mv in registry.versions())
        assert new == 2 and GATE_TAG not in registry.version("2").tags
        with open_store(settings.db_url) as store:
            assert store.artifacts(settings.model_name, "2")
        (running,) = runs(settings, "RUNNING")
        # Meanwhile (it renews its lease while it works) another controller does nothing.
        busy = controller(home, plugins, "--once")
        out, err = busy.communicate(timeout=300)
        assert busy.returncode == 3, err[-3000:]
        assert f":{proc.pid}:" in err and out == ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Once its lease expired, the next one takes over and recovers (polling: the expiry is 10 s).
    deadline = time.monotonic() + 300
    while True:
        again = controller(home, plugins, "--once")
        out, err = again.communicate(timeout=300)
        if again.returncode != 3 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert again.returncode == 0, err[-3000:]
    tick = json.loads(out.splitlines()[-1])
    print(f"\n[lease] after SIGKILL mid-retrain, the next controller: {tick['action']}")
    assert tick["action"] == "wait" and "cooldown" in tick["reason"], tick

    client = MlflowClient(settings.mlflow_uri)
    assert client.get_run(running).info.status == "FAILED"
    assert runs(settings, "RUNNING") == {}
    version = registry.version("2")
    assert version.tags[GATE_TAG] == "interrupted"
    assert registry.gate_verdict(version) == "interrupted"
    assert len(registry.versions()) == 2  # it did not retrain again
    with open_store(settings.db_url) as store:
        history = store.history(settings.model_name, limit=1000)
        routing = load_routing(store, settings.model_name)
    (record,) = [e for e in history if e.action == "retrain_interrupted"]
    assert record.to_version == "2" and running in record.details["mlflow_runs"]
    assert f":{proc.pid}:" in record.details["previous_holder"]
    assert routing.challenger is None and routing.rollout is None  # never rolled out

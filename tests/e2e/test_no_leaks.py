"""Nothing piles up: monitoring runs and controller retrains leave no temporary folders, and a
soak of the controller loop keeps the temporary folder, the disk and the memory flat.

TMPDIR (and ``tempfile.tempdir``, which Python caches) points into the test's folder, so every
temporary entry made by loopml, MLflow or scikit-learn in this process is counted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import pytest
from logged_predictions import insert_predictions

from loopml.config import Settings, load_settings
from loopml.control.controller import Controller
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.monitoring import run_monitor
from loopml.pipeline.train import train
from loopml.recipes.base import TextClassifier
from loopml.registry import Registry
from loopml.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder of this process (and of any child), watched by the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _champion(settings: Settings, tweets: Dataset) -> tuple[str, TextClassifier, pd.DataFrame]:
    """A champion trained on 4,000 non-airline tweets; 1,000 held-out ones logged as served."""
    others = tweets.frame[tweets.frame["domain"] != "airline"].sample(5000, random_state=0)
    rows, held_out = others.iloc[:4000], others.iloc[4000:]
    version = train(settings, dataset=Dataset("non-airline", rows, content_version(rows))).version
    registry = Registry(settings)
    with open_store(settings.db_url) as store:
        promote(store, registry, version, force=True, reason="leak test")
    model = registry.load(version)
    insert_predictions(settings, version, model, held_out["text"].tolist(), None)
    return version, model, held_out


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _disk_kb(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024


def test_monitor_and_a_controller_retrain_leave_no_temporary_entries(
    probe: Path, home: Path, tweets: Dataset
) -> None:
    settings = load_settings(
        monitor_interval_s=0, retrain_cooldown_s=0, retrain_min_labeled=200
    ).prepare()
    version, model, _ = _champion(settings, tweets)
    before = _entries(probe)

    assert run_monitor(settings).verdict == "ok"
    assert _entries(probe) == before, "run_monitor left temporary entries"

    # Airline traffic with feedback: drift, then a retrain on the new labels and a rollout.
    airline = tweets.frame[tweets.frame["domain"] == "airline"].sample(1200, random_state=0)
    insert_predictions(
        settings, version, model, airline["text"].tolist(), airline["label"].tolist()
    )
    with open_store(settings.db_url) as store:
        tick = Controller(settings, store).tick()
    assert tick.action in ("rollout_started", "retrain_rejected"), tick
    assert tick.version is not None  # a retrain ran: it trained, evaluated and registered
    assert _entries(probe) == before, "the controller's retrain left temporary entries"


def test_controller_soak_keeps_temp_disk_and_memory_flat(
    probe: Path, home: Path, tweets: Dataset
) -> None:
    """30 monitoring ticks (LOOPML_MONITOR_INTERVAL_S=0: each tick is a full monitoring run, as
    every 5 minutes in production). After 5 warm-up ticks: no new temporary entry, the report
    folder holds the newest 5 runs, the disk grows by the run records only, memory stays."""
    keep, warm_up, ticks = 5, 5, 30
    settings = load_settings(monitor_interval_s=0, monitor_keep_reports=keep).prepare()
    _champion(settings, tweets)
    with open_store(settings.db_url) as store:
        controller = Controller(settings, store)
        for _ in range(warm_up):
            assert controller.tick().action == "none"
        temp, disk, rss = _entries(probe), _disk_kb(home), _rss_mb()
        for _ in range(ticks - warm_up):
            tick = controller.tick()
            assert tick.monitor is not None and tick.monitor.verdict == "ok", tick
        temp_after, disk_after, rss_after = _entries(probe), _disk_kb(home), _rss_mb()
    runs = list((home / "reports").glob("monitor-*.json"))
    grown_kb = (disk_after - disk) / (ticks - warm_up)
    print(
        f"\nsoak: {ticks - warm_up} ticks after warm-up: temp entries {len(temp)} -> "
        f"{len(temp_after)}; LOOPML_HOME {disk} -> {disk_after} KB ({grown_kb:.0f} KB/tick); "
        f"RSS {rss:.0f} -> {rss_after:.0f} MB"
    )
    assert temp_after == temp
    assert len(runs) == keep
    # Each run adds its database rows and its summary page and JSON to MLflow (about 10 KB);
    # before the fix the reports and their MLflow copies added about 15,000 KB a run.
    assert grown_kb < 100
    assert rss_after - rss < 50

"""run_monitor end to end: a real champion in MLflow, real predictions in SQLite, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import mlflow
import pandas as pd
import pytest
from logged_predictions import insert_predictions
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select
from typer.testing import CliRunner

from loopml.cli import app as cli_app
from loopml.cli import parse_since
from loopml.config import Settings, load_settings
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.monitoring import run_monitor
from loopml.monitoring.metrics import MonitorCollector
from loopml.pipeline.train import train
from loopml.recipes.base import TextClassifier
from loopml.registry import Registry
from loopml.store import MonitorResult, open_store

pytestmark = pytest.mark.slow


class World(NamedTuple):
    home: Path
    version: str
    classifier: TextClassifier
    held_out: pd.DataFrame
    airline: pd.DataFrame


@pytest.fixture(scope="module")
def world(tweets: Dataset, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A champion trained on 4,000 non-airline tweets; held-out and airline tweets to serve."""
    home = tmp_path_factory.mktemp("monitor-home")
    settings = load_settings(home=home).prepare()
    frame = tweets.frame
    others = frame[frame["domain"] != "airline"].sample(5200, random_state=0)
    train_rows, held_out = others.iloc[:4000], others.iloc[4000:]
    ds = Dataset("builtin:tweets[non-airline sample]", train_rows, content_version(train_rows))
    result = train(settings, dataset=ds)
    registry = Registry(settings)
    promote(open_store(settings.db_url), registry, result.version, force=True, reason="test")
    airline = frame[frame["domain"] == "airline"].sample(1200, random_state=0)
    return World(home, result.version, registry.load(result.version), held_out, airline)


def _settings(world: World, db: str, **overrides: object) -> Settings:
    return load_settings(home=world.home, database_url=f"sqlite:///{world.home / db}", **overrides)


def test_in_domain_window_is_ok_and_everything_is_written(world: World) -> None:
    settings = _settings(world, "ok.db")
    insert_predictions(
        settings,
        world.version,
        world.classifier,
        world.held_out["text"].tolist(),
        world.held_out["label"].tolist(),
    )
    report = run_monitor(settings, window=1000)

    assert report.verdict == "ok", report.summary.reasons
    assert not report.alarm
    summary = report.to_dict()
    assert summary["window"]["rows"] == 1000
    assert summary["quality"]["labeled"] == 1000
    low, high = summary["quality"]["macro_f1_ci"]
    assert low <= summary["quality"]["macro_f1"] <= high
    assert {c["kind"] for c in summary["checks"]} >= {
        "text",
        "length",
        "oov",
        "label",
        "confidence",
        "mentions",
    }
    assert report.report_path.read_text().startswith("<!doctype html>")
    assert json.loads(report.json_path.read_text())["verdict"] == "ok"
    assert len(report.evidently_paths) == 2
    assert all(p.stat().st_size > 10_000 for p in report.evidently_paths)

    store = open_store(settings.db_url)
    with store.session() as session:
        row = session.scalars(select(MonitorResult)).one()
        assert (row.verdict, row.window_size, row.model_version) == ("ok", 1000, world.version)
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.tags["loopml.kind"] == "monitor"
    assert "drift.text" in run.data.metrics

    registry = CollectorRegistry()
    registry.register(MonitorCollector(store, settings.model_name))
    text = generate_latest(registry).decode()
    model = f'model="{settings.model_name}"'
    assert f"loopml_drift_detected{{{model}}} 0.0" in text
    assert f'loopml_drift_score{{kind="text",{model}}}' in text
    assert f"loopml_live_macro_f1{{{model}}} " in text
    assert f'loopml_monitor_verdict{{{model},verdict="ok"}} 1.0' in text


def test_airline_window_drifts_and_cli_exits_1(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(world, "drift.db")
    insert_predictions(
        settings,
        world.version,
        world.classifier,
        world.airline["text"].tolist(),
        world.airline["label"].tolist(),
    )
    monkeypatch.setenv("LOOPML_HOME", str(world.home))
    monkeypatch.setenv("LOOPML_DATABASE_URL", settings.db_url)
    result = CliRunner().invoke(cli_app, ["monitor", "--window", "1000", "--json"])

    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["drift_detected"] is True
    assert summary["verdict"] == "quality_alarm"  # airline macro-F1 is far under 0.6
    drifted = {c["kind"] for c in summary["checks"] if c["status"] == "drift"}
    assert {"text", "mentions", "confidence"} <= drifted


def test_unlogged_text_keeps_prediction_drift_and_quality(world: World) -> None:
    settings = _settings(world, "notext.db")
    insert_predictions(
        settings,
        world.version,
        world.classifier,
        world.airline["text"].tolist(),
        world.airline["label"].tolist(),
        log_text=False,
    )
    report = run_monitor(settings, window=1000)

    status = {c.kind: c.status for c in report.assessment.checks}
    assert status["text"] == status["oov"] == status["mentions"] == "unavailable"
    assert status["confidence"] == "drift"
    assert report.assessment.quality.labeled == 1000
    assert report.summary.window.text_logged is False


def test_small_window_is_insufficient_never_drift(world: World) -> None:
    settings = _settings(world, "small.db")
    insert_predictions(
        settings, world.version, world.classifier, world.airline["text"].tolist()[:50], None
    )
    report = run_monitor(settings)

    assert report.verdict == "insufficient_data"
    assert not report.alarm
    assert report.assessment.checks == []


def test_since_selects_by_time(world: World) -> None:
    settings = _settings(world, "since.db")
    old = datetime.now(UTC) - timedelta(days=3)
    insert_predictions(
        settings,
        world.version,
        world.classifier,
        world.airline["text"].tolist()[:400],
        None,
        start=old,
    )
    insert_predictions(
        settings, world.version, world.classifier, world.held_out["text"].tolist()[:400], None
    )
    report = run_monitor(settings, since=datetime.now(UTC) - timedelta(days=1))

    assert report.summary.window.rows == 400
    assert report.verdict == "ok", report.summary.reasons


def test_usage_errors_exit_2(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPML_HOME", str(world.home))
    runner = CliRunner()
    for args in (
        ["--window", "10", "--since", "1h"],
        ["--since", "yesterday-ish"],
        ["--window", "0"],
    ):
        assert runner.invoke(cli_app, ["monitor", *args]).exit_code == 2


def test_parse_since() -> None:
    now = datetime(2026, 1, 2, 12, tzinfo=UTC)
    assert parse_since("2h", now=now) == datetime(2026, 1, 2, 10, tzinfo=UTC)
    assert parse_since("1d", now=now) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_since("2026-01-01T00:00:00") == datetime(2026, 1, 1, tzinfo=UTC)

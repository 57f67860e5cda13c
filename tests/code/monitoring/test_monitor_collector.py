"""MonitorCollector: the gauges of the newest monitoring result, from a real database; a scrape
never hangs on a database that does not answer. (Two workers: tests/deploy/test_alertmanager.py.)"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from loopml.monitoring import MonitorCollector
from loopml.serving.metrics import Metrics
from loopml.store import MonitorResult, Store, open_store


def _summary(verdict: str) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "drift_detected": verdict == "drift",
        "quality_alarm": verdict == "quality_alarm",
        "window": {"rows": 800},
        "checks": [{"kind": "text", "score": 0.9 if verdict == "drift" else 0.5, "threshold": 0.6}],
        "quality": {"labeled": 0},
    }


def _add(store: Store, verdict: str, model: str = "sentiment") -> None:
    with store.session() as session:
        session.add(
            MonitorResult(
                ts=datetime.now(UTC),
                model_name=model,
                model_version="1",
                window_size=800,
                verdict=verdict,
                summary=_summary(verdict),
                report_path=None,
            )
        )


def _drift(collector: MonitorCollector) -> float | None:
    for family in collector.collect():
        if family.name == "loopml_drift_detected":
            return float(family.samples[0].value)
    return None


def test_reads_the_newest_result_once_per_ttl(tmp_path: Any) -> None:
    with open_store(f"sqlite:///{tmp_path / 'loopml.db'}") as store:
        collector = MonitorCollector(store, "sentiment", ttl=3600)
        assert _drift(collector) is None  # no monitoring run yet: no gauges, no error
        _add(store, "drift")
        assert _drift(collector) is None  # cached for the ttl
        collector.ttl = 0
        assert _drift(collector) == 1.0
        _add(store, "ok")
        assert _drift(collector) == 0.0


def test_single_process_metrics_export_the_collector(tmp_path: Any) -> None:
    with open_store(f"sqlite:///{tmp_path / 'loopml.db'}") as store:
        _add(store, "drift")
        metrics = Metrics()
        metrics.add_collector(MonitorCollector(store, "sentiment"))
        lines = metrics.render().decode().splitlines()
        assert lines.count('loopml_drift_detected{model="sentiment"} 1.0') == 1


def test_one_collector_exports_every_models_result_under_one_name(tmp_path: Any) -> None:
    with open_store(f"sqlite:///{tmp_path / 'loopml.db'}") as store:
        _add(store, "drift", "topic")
        _add(store, "ok")
        metrics = Metrics()
        metrics.add_collector(MonitorCollector(store, ["sentiment", "topic", "no-run-yet"]))
        lines = metrics.render().decode().splitlines()
    drift = [line for line in lines if line.startswith("loopml_drift_detected")]
    assert sorted(drift) == [
        'loopml_drift_detected{model="sentiment"} 0.0',
        'loopml_drift_detected{model="topic"} 1.0',
    ]
    assert lines.count("# TYPE loopml_drift_detected gauge") == 1
    assert 'loopml_monitor_verdict{model="topic",verdict="drift"} 1.0' in lines


@pytest.mark.postgres
def test_a_blocked_database_does_not_hang_the_scrape(postgres_db: str) -> None:
    """A table lock makes the collector's SELECT wait, as a hung database would: the scrape
    answers with the values read before, and the next read after the lock shows the new ones."""
    with open_store(postgres_db) as store:
        _add(store, "drift")
        collector = MonitorCollector(store, "sentiment", ttl=0, timeout=0.5)
        assert _drift(collector) == 1.0
        with psycopg.connect(postgres_db) as locker:
            _add(store, "ok")
            locker.execute("LOCK TABLE monitor_results IN ACCESS EXCLUSIVE MODE")
            seen: list[float | None] = []
            scrapes = threading.Thread(target=lambda: seen.extend(_drift(collector) for _ in "ab"))
            scrapes.start()
            scrapes.join(30)  # generous: each scrape waits 0.5 s at most
            assert not scrapes.is_alive(), "a scrape hung on the locked table"
            assert seen == [1.0, 1.0]  # the last values read; one read in flight, not two
            reader = collector._reader
            assert reader is not None and reader.is_alive()
            locker.rollback()  # releases the lock
        reader.join(30)
        assert _drift(collector) == 0.0

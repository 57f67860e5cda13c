"""A real Prometheus scrapes a real /metrics endpoint on loopback, evaluates loopml's rules, and
answers a query for a monitoring gauge through its HTTP API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import start_http_server

from loopml.monitoring.metrics import MonitorCollector
from loopml.serving.metrics import Metrics
from loopml.store import MonitorResult, open_store

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"

pytestmark = pytest.mark.slow

SUMMARY: dict[str, Any] = {
    "verdict": "drift",
    "drift_detected": True,
    "quality_alarm": False,
    "model_created_at": 1_700_000_000.0,
    "window": {"rows": 500},
    "checks": [
        {"kind": "text", "score": 0.97, "threshold": 0.6},
        {"kind": "mentions", "score": 1.0, "threshold": 0.25},
    ],
    "quality": {
        "labeled": 300,
        "accuracy": 0.5,
        "macro_f1": 0.48,
        "macro_f1_ci": [0.42, 0.53],
        "floor": 0.6,
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def metrics_port(tmp_path: Path) -> Iterator[int]:
    """Serving metrics plus the monitoring collector over a real SQLite store, on loopback."""
    store = open_store(f"sqlite:///{tmp_path / 'loopml.db'}")
    with store.session() as session:
        session.add(
            MonitorResult(
                ts=datetime.now(UTC),
                model_name="sentiment",
                model_version="3",
                window_size=500,
                verdict="drift",
                summary=SUMMARY,
                report_path=None,
            )
        )
    metrics = Metrics()
    assert metrics.registry is not None
    metrics.http_requests.labels("/v1/predict", "POST", "200", "3", "champion", "sentiment").inc(5)
    metrics.registry.register(MonitorCollector(store, "sentiment"))
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        yield port
    finally:
        server.shutdown()
        thread.join(timeout=5)
        store.dispose()


@pytest.fixture
def prometheus(tmp_path: Path, metrics_port: int) -> Iterator[str]:
    """A Prometheus on a free loopback port, scraping ``metrics_port`` every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: apt-get install -y prometheus")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    config.pop("alerting")  # no Alertmanager here: test_alertmanager.py delivers alerts
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query(base: str, expr: str, *, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5).json()
            if reply.get("status") == "success" and reply["data"]["result"]:
                return list(reply["data"]["result"])
        except (httpx.TransportError, ValueError):
            pass  # not listening yet, or still starting (503 with a plain-text body)
        time.sleep(0.5)
    raise AssertionError(f"Prometheus returned nothing for {expr!r} within {timeout} s")


def test_prometheus_scrapes_loopml_and_evaluates_rules(prometheus: str) -> None:
    assert _query(prometheus, 'up{job="loopml"}')[0]["value"][1] == "1"
    assert _query(prometheus, "loopml_drift_detected")[0]["value"][1] == "1"
    scores = {
        r["metric"]["kind"]: float(r["value"][1])
        for r in _query(prometheus, "loopml:drift_score:max")
    }
    assert scores == {"text": 0.97, "mentions": 1.0}
    requests = _query(prometheus, "loopml_http_requests_total")
    assert requests[0]["metric"]["route"] == "/v1/predict"
    alert = _query(prometheus, 'ALERTS{alertname="LoopmlDriftDetected"}')
    assert alert[0]["metric"]["alertstate"] == "pending"  # it holds for 5 minutes before firing

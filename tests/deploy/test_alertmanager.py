"""Alerts that reach someone: loopml's Alertmanager configuration is valid and routes by severity,
and a drift verdict in the loopml database travels through a real loopml server (two workers),
a real Prometheus and a real Alertmanager (Debian packages) to a webhook in this process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from deploy_helpers import ROOT, need_binary, run

sys.path.insert(0, str(ROOT / "tests" / "api"))

from serving_helpers import (
    Server,
    free_port,
    server_env,
    train_registry,
    wait_for,
)

from loopml.store import MonitorResult, open_store

ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"


def _add_drift_result(db: str, model_name: str) -> None:
    """A drift verdict as ``loopml monitor`` writes it (the fields the gauges read)."""
    summary = {
        "verdict": "drift",
        "drift_detected": True,
        "quality_alarm": False,
        "window": {"rows": 1000},
        "checks": [
            {"kind": "text", "score": 0.912, "threshold": 0.6, "status": "drift"},
            {"kind": "label", "score": 0.041, "threshold": 0.1, "status": "ok"},
        ],
        "quality": {"labeled": 0},
    }
    with open_store(db) as store, store.session() as session:
        session.add(
            MonitorResult(
                ts=datetime.now(UTC),
                model_name=model_name,
                model_version="1",
                window_size=1000,
                verdict="drift",
                summary=summary,
                report_path=None,
            )
        )


def _config_with_url(url: str) -> dict[str, Any]:
    """The repository's Alertmanager config with a plain ``url``: Debian's Alertmanager (0.25)
    predates ``url_file`` (0.26+; the compose image runs 0.28)."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_YML.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook.pop("url_file") == "/tmp/webhook_url"  # the file compose writes
            hook["url"] = url
    return config


def test_config_is_valid(tmp_path: Path) -> None:
    copy = tmp_path / "alertmanager.yml"
    copy.write_text(yaml.safe_dump(_config_with_url("http://webhook.example.invalid/")))
    amtool = need_binary("amtool", "the Debian package prometheus-alertmanager")
    result = run(amtool, "check-config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_webhook_url_in_the_repository() -> None:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    hooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert hooks and all("url" not in w and w["url_file"] for w in hooks)


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=LoopmlTargetDown", "severity=page"], "page"),
        (["alertname=LoopmlLiveQualityUnderFloor", "severity=page"], "page"),
        (["alertname=LoopmlDriftDetected", "severity=ticket"], "ticket"),
        (["alertname=SomethingNew"], "ticket"),  # unlabelled alerts still reach someone
    ],
)
def test_routes_by_severity(tmp_path: Path, labels: list[str], receiver: str) -> None:
    copy = tmp_path / "alertmanager.yml"
    copy.write_text(yaml.safe_dump(_config_with_url("http://webhook.example.invalid/")))
    amtool = need_binary("amtool", "the Debian package prometheus-alertmanager")
    result = run(amtool, "config", "routes", "test", f"--config.file={copy}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_every_alert_has_a_routed_severity() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules" / "alerts.yml").read_text())
    severities = {r["labels"]["severity"] for g in rules["groups"] for r in g["rules"]}
    routed = {
        m.split("=")[1].strip('"')
        for route in yaml.safe_load(ALERTMANAGER_YML.read_text())["route"]["routes"]
        for m in route["matchers"]
    }
    assert severities <= routed


# -- end to end ------------------------------------------------------------------------------


class _Webhook:
    """An HTTP receiver on loopback that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                """Quiet: the test prints what it needs."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, name: str, status: str = "firing") -> list[dict[str, Any]]:
        """Alerts named ``name`` in ``status`` delivered so far."""
        return [
            a
            for body in list(self.bodies)
            for a in body["alerts"]
            if a["labels"].get("alertname") == name and a["status"] == status
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _process(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _fast_rules(tmp: Path) -> list[str]:
    """Copies of loopml's rule files with every ``for:`` at 1 s: the expressions are the real ones,
    only the hold times shrink to fit a test."""
    paths = []
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "1s"
        copy = tmp / path.name
        copy.write_text(yaml.safe_dump(rules))
        paths.append(str(copy))
    return paths


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Server, _Webhook, str, list[Path]]]:
    """A loopml server (2 workers, drift verdict in its DB), Prometheus, Alertmanager, webhook."""
    trained = train_registry(tmp_path / "registry")
    home = tmp_path / "serve"
    home.mkdir()
    name = trained.settings.model_name
    _add_drift_result(f"sqlite:///{home / 'loopml.db'}", name)
    webhook = _Webhook()
    server = Server(home, server_env(trained, home, name), workers=2)
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / "alertmanager.log", tmp_path / "prometheus.log"]
    try:
        server.start()
        am_config = _config_with_url(webhook.url)
        am_config["route"]["group_wait"] = "1s"
        for route in am_config["route"]["routes"]:
            route["group_wait"] = "1s"
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
        am_port = free_port()
        alertmanager = need_binary("prometheus-alertmanager", "prometheus-alertmanager")
        procs.append(
            _process(
                [
                    alertmanager,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",  # no gossip port: one Alertmanager, loopback only
                ],
                logs[0],
            )
        )
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = _fast_rules(tmp_path)
        config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
        config["alerting"]["alertmanagers"][0]["static_configs"] = [
            {"targets": [f"127.0.0.1:{am_port}"]}
        ]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom_port = free_port()
        procs.append(
            _process(
                [
                    need_binary("prometheus", "the Debian package prometheus"),
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                logs[1],
            )
        )
        yield server, webhook, f"http://127.0.0.1:{prom_port}", logs
    finally:
        for proc in reversed(procs):
            _stop(proc)
        webhook.close()
        try:
            server.stop(30)
        except AssertionError:
            server.kill()


@pytest.mark.slow
def test_drift_alert_reaches_the_webhook(
    stack: tuple[Server, _Webhook, str, list[Path]],
) -> None:
    server, webhook, prometheus, logs = stack
    name = server.env["LOOPML_MODEL_NAME"]
    # Every scrape of a two-worker server carries the database-held gauges exactly once.
    for _ in range(6):
        body = httpx.get(server.url + "/metrics", timeout=10).text
        samples = [line for line in body.splitlines() if line.startswith("loopml_drift_detected")]
        assert samples == [f'loopml_drift_detected{{model="{name}"}} 1.0'], body[-2000:]
        assert f'loopml_drift_score{{kind="text",model="{name}"}} 0.912' in body

    def delivered() -> list[dict[str, Any]]:
        return webhook.alerts("LoopmlDriftDetected")

    try:
        alerts = wait_for(delivered, 60, "LoopmlDriftDetected at the webhook", 0.5)
    except AssertionError:
        up = httpx.get(f"{prometheus}/api/v1/query", params={"query": "up"}, timeout=5).text
        raise AssertionError(
            f"up: {up}\n" + "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)
        ) from None
    assert (alerts[0]["labels"]["severity"], alerts[0]["labels"]["model"]) == ("ticket", name)
    assert alerts[0]["annotations"]["summary"].startswith(f"model {name}: "), alerts[0]
    assert "drift" in alerts[0]["annotations"]["summary"]
    # The quality alarm is 0 in this verdict: it must not page anyone.
    assert webhook.alerts("LoopmlLiveQualityUnderFloor") == []

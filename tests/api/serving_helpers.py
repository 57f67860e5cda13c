"""Helpers of the serving tests: a trained registry, real server processes, polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loopml.config import Settings

POSTGRES_ENV = "LOOPML_TEST_POSTGRES_URL"
ADMIN_TOKEN = "test-admin-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TrainedRegistry:
    """An MLflow registry with two trained versions of ``sentiment`` (champion = version 1)."""

    settings: Settings
    versions: list[str]
    texts: list[str]
    _clones: int = 0

    @property
    def tracking_uri(self) -> str:
        """The MLflow URI every test server reads models from."""
        return self.settings.mlflow_uri

    def clone(self, champion_index: int = 0) -> tuple[str, list[str]]:
        """A new registered model with the same versions (cheap: no training); the champion set."""
        from loopml.tracking import configure_mlflow

        client = configure_mlflow(self.settings)
        self._clones += 1
        name = f"clone{self._clones}-{uuid.uuid4().hex[:6]}"
        client.create_registered_model(name)
        versions = []
        for version in self.versions:
            src = client.get_model_version(self.settings.model_name, version)
            mv = client.create_model_version(name, source=src.source, run_id=src.run_id)
            versions.append(str(mv.version))
        client.set_registered_model_alias(name, "champion", versions[champion_index])
        return name, versions

    def set_champion(self, name: str, version: str) -> None:
        """Move the champion alias of model ``name``."""
        from loopml.tracking import configure_mlflow

        configure_mlflow(self.settings).set_registered_model_alias(name, "champion", version)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A real ``python -m loopml.serving`` process on loopback."""

    home: Path
    env: dict[str, str]
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait_ready: bool = True, timeout: float = 90.0) -> Server:
        """Start the process and wait for /readyz (or only /healthz)."""
        self.log_path = self.home / f"server-{self.port}-{time.time_ns()}.log"
        cmd = [
            sys.executable,
            "-m",
            "loopml.serving",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        with self.log_path.open("wb") as log:
            # A session of its own: kill() can SIGKILL the supervisor and its workers at once.
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
            )
        self.wait("/readyz" if wait_ready else "/healthz", timeout)
        return self

    def wait(self, path: str, timeout: float) -> None:
        """Poll ``path`` until it answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        """What the server printed."""
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the graceful path (drains the prediction log)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop in {timeout}s:\n{self.logs()}") from None

    def kill(self) -> None:
        """SIGKILL the server and its workers."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def server_env(
    trained: TrainedRegistry, home: Path, model_name: str, **settings: Any
) -> dict[str, str]:
    """A clean environment for a server: no LOOPML_* of the caller, the given settings instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "PROMETHEUS_"))}
    env.update(
        {
            "LOOPML_HOME": str(home),
            "LOOPML_TRACKING_URI": trained.tracking_uri,
            "LOOPML_MODEL_NAME": model_name,
            "LOOPML_CONFIG": str(home / "absent.toml"),
            "LOOPML_RELOAD_INTERVAL_S": "3600",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for key, value in settings.items():
        env[f"LOOPML_{key.upper()}"] = str(value)
    return env


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class LoadResult:
    """What a load run saw: answered request ids, versions, failures."""

    ids: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    requests: int = 0


def run_load(
    url: str,
    texts: list[str],
    *,
    seconds: float,
    concurrency: int = 16,
    batch: int = 1,
    stop: Any = None,
    result: LoadResult | None = None,
) -> LoadResult:
    """Drive ``/v1/predict`` with ``concurrency`` clients for ``seconds`` (or until ``stop`` is
    set); every non-200 or transport error is a failure. Connection errors end the run."""
    import asyncio
    import threading

    result = result or LoadResult()
    stop = stop or threading.Event()

    async def worker(http: httpx.AsyncClient, k: int, deadline: float) -> None:
        i = k
        while time.monotonic() < deadline and not stop.is_set():
            chunk = [texts[(i + j) % len(texts)] for j in range(batch)]
            i += concurrency
            try:
                resp = await http.post(url + "/v1/predict", json={"texts": chunk})
            except httpx.HTTPError as exc:
                result.failures.append(f"{type(exc).__name__}: {exc}")
                if isinstance(
                    exc, httpx.ConnectError | httpx.RemoteProtocolError | httpx.ReadError
                ):
                    return
                continue
            result.requests += 1
            if resp.status_code != 200:
                result.failures.append(f"{resp.status_code}: {resp.text[:200]}")
                continue
            body = resp.json()
            result.versions[body["model_version"]] = (
                result.versions.get(body["model_version"], 0) + 1
            )
            result.ids.extend(p["request_id"] for p in body["predictions"])

    async def main() -> None:
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            await asyncio.gather(*(worker(http, k, deadline) for k in range(concurrency)))

    asyncio.run(main())
    return result


def count_ids(db_url: str, ids: list[str]) -> dict[str, int]:
    """request id -> rows in the predictions table (for the ids given)."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    counts: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            q = sa.text("select request_id, count(*) from predictions group by request_id")
            all_counts = dict(conn.execute(q).all())
    finally:
        engine.dispose()
    for rid in ids:
        counts[rid] = int(all_counts.get(rid, 0))
    return counts

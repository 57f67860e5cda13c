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
ADMIN_TOKEN = "loopml-admin-0123456789abcdef"  # strong enough for production
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]
SUPPORT = ROOT / "tests" / "support"  # test-only model classes; on every test server's path


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


def _sample(frame: Any, source: str, rows: int, seed: int) -> Any:
    from loopml.data import Dataset, content_version

    part = frame.sample(rows, random_state=seed).reset_index(drop=True)
    return Dataset(source=f"{source}#sample{seed}", frame=part, version=content_version(part))


def train_registry(home: Path) -> TrainedRegistry:
    """Train two small real models (3,000 tweets each) in a registry under ``home``; version 1
    is the champion (promoted through the registry, so the routing state names it too)."""
    from loopml.config import load_settings
    from loopml.control.promotion import promote
    from loopml.data import load_dataset
    from loopml.pipeline.train import train
    from loopml.registry import Registry
    from loopml.store import open_store

    settings = load_settings(home=home, database_url=None, tracking_uri=None).prepare()
    tweets = load_dataset("builtin:tweets")
    versions = [
        train(settings, dataset=_sample(tweets.frame, tweets.source, 3000, seed)).version
        for seed in (0, 1)
    ]
    store = open_store(settings.db_url)
    promote(store, Registry(settings), versions[0], force=True, reason="serving tests")
    store.dispose()
    texts = tweets.frame["text"].sample(500, random_state=3).tolist()
    return TrainedRegistry(settings, versions, texts)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A real ``python -m loopml serve`` process on loopback."""

    home: Path
    env: dict[str, str]
    workers: int = 1
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    #: more ``loopml serve`` options (e.g. ``["--grpc-port", "8001"]``)
    args: list[str] = field(default_factory=list)

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
            "loopml",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            *self.args,
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
        if wait_ready and self.workers > 1:
            self.wait_workers(timeout)
        return self

    def wait_workers(self, timeout: float) -> None:
        """Wait until every worker serves (its champion loaded, its gRPC port started when
        on). ``/readyz`` answered by one worker says nothing of the others: a request that
        reached a worker still loading got 503 (UNAVAILABLE over gRPC) under load."""
        grpc = "--grpc-port" in self.args or bool(self.env.get("LOOPML_GRPC_PORT"))

        def all_serving() -> bool:
            log = self.log_path.read_text(errors="replace") if self.log_path else ""
            loaded = log.count(" as champion (was None;")
            listening = log.count("gRPC (OIP V2) listening on port")
            return loaded >= self.workers and (not grpc or listening >= self.workers)

        wait_for(all_serving, timeout, f"all {self.workers} workers to serve")

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
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(SUPPORT), os.environ.get("PYTHONPATH", "")) if p
            ),
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


def db_settings(database: dict[str, Any]) -> dict[str, Any]:
    return {"database_url": database["url"]} if database["kind"] == "postgres" else {}


def db_url(database: dict[str, Any], server: Server) -> str:
    if database["kind"] == "postgres":
        return str(database["url"])
    return f"sqlite:///{server.home / 'loopml.db'}"


# -- routing and rollouts ---------------------------------------------------------------------


def routing_of(url: str) -> dict[str, Any]:
    """The ``routing`` block of ``/v1/status``."""
    routing: dict[str, Any] = httpx.get(url + "/v1/status", timeout=10).json()["routing"]
    return routing


def wait_obeying(
    url: str, mode: str, challenger: str | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Wait until the server obeys ``mode`` (with ``challenger`` loaded unless mode is none)."""

    def obeying() -> dict[str, Any] | None:
        routing = routing_of(url)
        if routing["effective_mode"] != mode:
            return None
        if mode != "none" and routing["serving"]["challenger"] != challenger:
            return None
        return routing

    result: dict[str, Any] = wait_for(obeying, timeout, f"{url} to obey mode {mode}", 0.1)
    return result


def start_rollout(
    url: str, version: str, mode: str, weight: float | None = None, **extra: Any
) -> dict[str, Any]:
    """``POST /v1/admin/rollout/start`` (forced: test versions carry no gate verdict)."""
    body: dict[str, Any] = {"version": version, "mode": mode, "force": True, "reason": "test"}
    if weight is not None:
        body["weight"] = weight
    body.update(extra)
    resp = httpx.post(url + "/v1/admin/rollout/start", json=body, headers=AUTH, timeout=60)
    assert resp.status_code == 200, resp.text
    routing: dict[str, Any] = resp.json()
    return routing


def abort_rollout(url: str, reason: str = "test over") -> dict[str, Any]:
    """``POST /v1/admin/rollout/abort``."""
    resp = httpx.post(
        url + "/v1/admin/rollout/abort", json={"reason": reason}, headers=AUTH, timeout=60
    )
    assert resp.status_code == 200, resp.text
    routing: dict[str, Any] = resp.json()
    return routing


def query(url: str, sql: str, **params: Any) -> list[Any]:
    """Rows of ``sql`` on the database at ``url`` (SQLite or PostgreSQL)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params).all())
    finally:
        engine.dispose()


def register_failing_version(trained: TrainedRegistry, name: str, base: str) -> str:
    """A new version of ``name``: version ``base`` wrapped in ``FailsAfterWarmUp`` (it loads and
    warms up, then raises on every call). Registered like any model, through MLflow."""
    import sys

    import mlflow

    from loopml.recipes.packaging import log_classifier
    from loopml.tracking import configure_mlflow, experiment_id

    if str(SUPPORT) not in sys.path:
        sys.path.insert(0, str(SUPPORT))
    from loopml_test_models import WARM_UP_PREFIX, FailsAfterWarmUp

    client = configure_mlflow(trained.settings)
    inner = mlflow.pyfunc.load_model(f"models:/{name}/{base}").unwrap_python_model().classifier
    examples = [f"{WARM_UP_PREFIX}: example one", f"{WARM_UP_PREFIX}: example two"]
    exp = experiment_id(trained.settings, client)
    with mlflow.start_run(experiment_id=exp, run_name="failing-challenger") as run:
        info = log_classifier(FailsAfterWarmUp(inner), examples, [])
    mv = client.create_model_version(name, source=info.model_uri, run_id=run.info.run_id)
    return str(mv.version)


def broken_version(trained: TrainedRegistry, name: str, base: str, tmp: Path) -> str:
    """A new version of ``name`` whose pickle is garbage: it can never load."""
    import mlflow

    from loopml.tracking import configure_mlflow

    client = configure_mlflow(trained.settings)
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{base}", dst_path=str(tmp)
    )
    (Path(path) / "artifacts" / "classifier.pkl").write_bytes(b"not a pickle")
    return str(client.create_model_version(name, source=path).version)


def add_monitor_result(db: str, model_name: str, verdict: str = "drift") -> None:
    """A monitoring result row like ``loopml monitor`` writes (two checks: text and label)."""
    from datetime import UTC, datetime

    from loopml.store import MonitorResult, open_store

    checks = [
        {
            "kind": "text",
            "group": "input",
            "method": "domain_classifier_auc",
            "score": 0.912,
            "threshold": 0.6,
            "status": "drift",
            "note": "",
        },
        {
            "kind": "label",
            "group": "prediction",
            "method": "jensenshannon",
            "score": 0.041,
            "threshold": 0.1,
            "status": "ok",
            "note": "",
        },
    ]
    store = open_store(db)
    try:
        with store.session() as session:
            session.add(
                MonitorResult(
                    ts=datetime.now(UTC),
                    model_name=model_name,
                    model_version="1",
                    window_size=1000,
                    verdict=verdict,
                    summary={"verdict": verdict, "checks": checks},
                    report_path=None,
                )
            )
    finally:
        store.dispose()

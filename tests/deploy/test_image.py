"""The container image on a real Docker engine: built from the repository's Dockerfile (``make
image``), one container trains and promotes a model, others serve it, all hardened (non-root,
read-only root filesystem, no capabilities, no new privileges) and sharing one LOOPML_HOME volume,
against a fresh PostgreSQL database. SIGTERM under load loses no answered prediction. The
Dockerfile passes hadolint and checkov. tini is PID 1 (loopml and mlflow run as its child), so
``docker stop`` ends every command cleanly: exit code 0, never 137 (SIGKILL after the grace).

Docker is started here when it is not running (as root, dockerd in the background, logging to
``DOCKERD_LOG``); it is never skipped: no engine means failure. Without registry access the base
image is made from Debian's packages by ``deploy/docker/base-image.sh`` (and reused afterwards).
Run with ``-s`` to see the measured figures (build time, cold start, drain).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from loopml.data import Dataset

# A cold first run (base image, then every dependency downloaded) takes 7-8 minutes here.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
# LOOPML_TEST_IMAGE_NAME: another repository name for the test's image (engines shared by several
# checkouts); the tag stays `test`.
IMAGE_NAME, IMAGE_TAG = os.environ.get("LOOPML_TEST_IMAGE_NAME") or "loopml", "test"
IMAGE = f"{IMAGE_NAME}:{IMAGE_TAG}"
OFFICIAL_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = "loopml-base:bookworm"
DOCKERD_LOG = Path("/var/log/loopml-test-dockerd.log")
POSTGRES_ENV = "LOOPML_TEST_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
HOME = "/var/lib/loopml"
HARDENING = [
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "host",
]
# The grace a stop gets (serving/server.py's docstring adds up the bounds: connections 30 s,
# shadow 5 s, error rows 5 s, journal 15 s + 11 s for an insert in flight).
STOP_TIMEOUT_S = 75


def _docker(
    *args: str, timeout: float = 120, check: bool = True, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["docker", *args],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"docker {' '.join(args[:3])} ... exited {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _poll(what: str, check: Any, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _report(line: str) -> None:
    print(f"\n[image] {line}", flush=True)


# -- the engine, the base image, the image ------------------------------------------------------


def _engine_up() -> bool:
    return (
        subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode
        == 0
    )


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A running Docker engine: the one there is, or dockerd started now (as root)."""
    for tool in ("docker", "dockerd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: make system-deps (apt-get install docker.io)")
    if _engine_up():
        return
    if os.geteuid() != 0:
        pytest.fail("the Docker engine is not running and only root can start dockerd here")
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as log:
        # Left running for later sessions (and for anyone else's containers on it).
        subprocess.Popen(
            ["dockerd"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _poll("dockerd to answer `docker info`", _engine_up, timeout=90, interval=0.5)
    except pytest.fail.Exception:
        tail = DOCKERD_LOG.read_text(errors="replace")[-3000:]
        pytest.fail(f"dockerd did not start; {DOCKERD_LOG}:\n{tail}")


def _has_image(name: str) -> bool:
    return _docker("image", "inspect", name, check=False).returncode == 0


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """The official bookworm base when present or pullable, else the Debian-made local one."""
    if _has_image(OFFICIAL_BASE):
        return OFFICIAL_BASE
    if _docker("pull", OFFICIAL_BASE, check=False, timeout=300).returncode == 0:
        return OFFICIAL_BASE
    if not _has_image(LOCAL_BASE):
        if shutil.which("debootstrap") is None:
            pytest.fail(f"cannot pull {OFFICIAL_BASE} and debootstrap is not installed")
        start = time.monotonic()
        proc = subprocess.run(
            [str(REPO / "deploy" / "docker" / "base-image.sh"), LOCAL_BASE],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"base-image.sh failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        _report(f"base image {LOCAL_BASE} made in {time.monotonic() - start:.0f} s")
    return LOCAL_BASE


@pytest.fixture(scope="session")
def image(base_image: str) -> str:
    """The image built by ``make image`` (Docker's layer cache makes a rebuild fast)."""
    return make_image("image", base_image, IMAGE, timeout=1800)


def make_image(target: str, base_image: str, image: str, *, timeout: int) -> str:
    """Run ``make <target>`` as a user would (this test's name and tag) and return ``image``."""
    start = time.monotonic()
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            target,
            f"BASE_IMAGE={base_image}",
            f"IMAGE={IMAGE_NAME}",
            f"VERSION={IMAGE_TAG}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"make {target} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    # Earlier builds of the tag, now untagged (the build stages, unlabelled, stay as the cache).
    _docker("image", "prune", "--force", "--filter", "label=org.opencontainers.image.title=loopml")
    size = int(_docker("image", "inspect", image, "--format", "{{.Size}}").stdout)
    cached = proc.stdout.count("Using cache") + proc.stdout.count("CACHED")
    _report(
        f"make {target} on {base_image}: {time.monotonic() - start:.1f} s "
        f"({cached} cached steps), {size / 1e6:.0f} MB"
    )
    return image


# -- PostgreSQL, the volume, the trained model -----------------------------------------------


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A fresh PostgreSQL database for this session (the MLflow store and the loopml DB)."""
    server = os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES
    name = f"loopml_img_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at {server} is unreachable: {exc}")
    url = f"{server.rsplit('/', 1)[0]}/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@dataclass
class Stack:
    """What the containers share: the image, the database, the LOOPML_HOME volume."""

    image: str
    database: str
    volume: str
    prefix: str
    containers: list[str] = field(default_factory=list)

    def env(self) -> list[str]:
        return [
            "-e",
            f"LOOPML_DATABASE_URL={self.database}",
            "-e",
            f"LOOPML_TRACKING_URI={self.database}",
            "-v",
            f"{self.volume}:{HOME}",
        ]

    def run(
        self, *args: str, timeout: float = 300, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to its end in a hardened container."""
        flags = ["-i"] if stdin is not None else []
        return _docker(
            "run", "--rm", *flags, *HARDENING, *self.env(), *args, timeout=timeout, stdin=stdin
        )

    def serve(self) -> Server:
        """Start ``loopml serve`` (the image's healthcheck on) on a free loopback port."""
        port = _free_port()
        name = f"{self.prefix}-serve-{len(self.containers)}"
        self.containers.append(name)
        started = time.monotonic()
        _docker(
            "run",
            "-d",
            "--name",
            name,
            *HARDENING,
            *self.env(),
            self.image,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        )
        server = Server(name, f"http://127.0.0.1:{port}")
        server.wait_ready()
        server.cold_start_s = time.monotonic() - started
        return server


@dataclass
class Server:
    name: str
    url: str
    cold_start_s: float = 0.0

    def wait_ready(self) -> None:
        def ready() -> bool:
            state = _docker("inspect", self.name, "--format", "{{.State.Status}}").stdout.strip()
            if state != "running":
                logs = _docker("logs", self.name, check=False)
                pytest.fail(f"{self.name} is {state}:\n{logs.stdout[-2000:]}{logs.stderr[-3000:]}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _poll(f"{self.name} /readyz", ready, timeout=180, interval=0.2)


@pytest.fixture(scope="session")
def stack(image: str, database: str, small_tweets: Dataset) -> Iterator[Stack]:
    """A volume with a promoted champion trained (in a container) on 4,000 real tweets."""
    prefix = f"{IMAGE_NAME}-test-{uuid.uuid4().hex[:8]}"
    _docker("volume", "create", prefix)
    s = Stack(image, database, prefix, prefix)
    try:
        csv = small_tweets.frame.to_csv(index=False).encode()
        s.run(
            "--entrypoint",
            "sh",
            image,
            "-c",
            f"mkdir -p {HOME}/data && cat > {HOME}/data/t.csv",
            stdin=csv,
        )
        start = time.monotonic()
        out = json.loads(
            s.run(image, "train", "--data", f"{HOME}/data/t.csv", "--promote", "--json").stdout
        )
        _report(
            f"loopml train --promote in a container: {time.monotonic() - start:.1f} s, "
            f"version {out.get('version')}, macro-F1 {out['metrics']['macro_f1']:.3f}"
        )
        assert out["promoted"] is True
        yield s
    finally:
        for name in s.containers:
            _docker("rm", "-f", "-v", name, check=False)
        _docker("volume", "rm", "-f", prefix, check=False)


@pytest.fixture(scope="module")
def server(stack: Stack) -> Server:
    srv = stack.serve()
    _report(f"cold start to /readyz: {srv.cold_start_s:.1f} s")
    return srv


def _logged(database: str, request_ids: list[str]) -> set[str]:
    with psycopg.connect(database, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT request_id FROM predictions WHERE request_id = ANY(%s)", (request_ids,)
        ).fetchall()
    return {r[0] for r in rows}


# -- the tests ----------------------------------------------------------------------------------


def test_container_is_hardened(stack: Stack, server: Server) -> None:
    uid = _docker("exec", server.name, "id", "-u").stdout.strip()
    assert uid != "0" and uid == "10001"
    touch = _docker("exec", server.name, "touch", "/opt/loopml/x", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    caps = _docker(
        "exec", server.name, "grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/1/status"
    ).stdout.split()
    assert caps == ["CapEff:", "0000000000000000", "NoNewPrivs:", "1"]
    config = json.loads(_docker("inspect", stack.image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "loopml"]
    assert config["Env"].count(f"LOOPML_HOME={HOME}") == 1 and HOME in config["Volumes"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "loopml"
    assert labels["org.opencontainers.image.version"] == IMAGE_TAG
    assert len(labels["org.opencontainers.image.revision"]) == 40


# The processes of a container: pid -> (parent pid, command line), read from /proc inside it.
_PROCESSES = """
import json, pathlib
out = {}
for d in pathlib.Path("/proc").iterdir():
    if d.name.isdigit():
        try:
            ppid = next(int(l.split()[1]) for l in (d / "status").read_text().splitlines()
                        if l.startswith("PPid:"))
            argv = (d / "cmdline").read_bytes().decode().split(chr(0))
        except (OSError, StopIteration):
            continue
        out[d.name] = [ppid, [a for a in argv if a]]
print(json.dumps(out))
"""


def _processes(container: str) -> dict[int, tuple[int, list[str]]]:
    out = json.loads(_docker("exec", container, "python3", "-I", "-c", _PROCESSES).stdout)
    return {int(pid): (ppid, argv) for pid, (ppid, argv) in out.items()}


def test_tini_is_pid_1_and_loopml_its_child(server: Server) -> None:
    procs = _processes(server.name)
    assert procs[1][1][:3] == ["/usr/bin/tini", "--", "loopml"], procs[1]
    children = [argv for ppid, argv in procs.values() if ppid == 1]
    # loopml's console script is a Python program: [python, /opt/loopml/bin/loopml, serve, ...]
    assert any(
        Path(argv[1]).name == "loopml" and argv[2] == "serve" for argv in children if len(argv) > 2
    ), children


def test_extras_for_cloud_artifacts_and_postgresql_are_in_the_image(image: str) -> None:
    """boto3 (s3://), google-cloud-storage (gs://), psycopg 3 for postgresql+psycopg:// URLs."""
    code = (
        "import boto3, google.cloud.storage, psycopg, sqlalchemy; "
        "e = sqlalchemy.create_engine('postgresql+psycopg://u@h/d'); "
        "print(e.dialect.driver, psycopg.__version__.split('.')[0])"
    )
    proc = _docker("run", "--rm", *HARDENING, "--entrypoint", "python3", image, "-c", code)
    assert proc.stdout.split() == ["psycopg", "3"], proc.stdout + proc.stderr


def test_mlflow_server_under_tini_answers_health_and_stops_cleanly(
    stack: Stack, database: str
) -> None:
    """The MLflow tracking server as Kubernetes and compose run it from this image:
    ``/usr/bin/tini -- mlflow server`` on PostgreSQL (psycopg 3), healthy, and stopped by
    SIGTERM within the grace."""
    port = _free_port()
    name = f"{stack.prefix}-mlflow"
    stack.containers.append(name)
    backend = database.replace("postgresql://", "postgresql+psycopg://", 1)
    _docker(
        "run",
        "-d",
        "--name",
        name,
        *HARDENING,
        "--entrypoint",
        "/usr/bin/tini",
        stack.image,
        "--",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # One worker: four (the default) take minutes to start on a busy 2-core machine.
        "--workers",
        "1",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        "/tmp/mlflow-artifacts",
    )

    def health() -> bool:
        state = _docker("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
        if state != "running":
            logs = _docker("logs", name, check=False)
            pytest.fail(f"{name} is {state}:\n{logs.stdout[-2000:]}{logs.stderr[-3000:]}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.text.strip() == "OK"

    _poll("mlflow server /health", health, timeout=300, interval=0.5)
    procs = _processes(name)
    assert procs[1][1][:4] == ["/usr/bin/tini", "--", "mlflow", "server"], procs[1]
    start = time.monotonic()
    _docker("stop", "-t", str(STOP_TIMEOUT_S), name, timeout=STOP_TIMEOUT_S + 30)
    stopped_s = time.monotonic() - start
    state = json.loads(_docker("inspect", name, "--format", "{{json .State}}").stdout)
    logs = _docker("logs", name, check=False)
    _report(
        f"mlflow server under tini: docker stop took {stopped_s:.1f} s, exit {state['ExitCode']}"
    )
    assert stopped_s < STOP_TIMEOUT_S - 5, "SIGTERM did not stop it: SIGKILL after the grace"
    assert state["ExitCode"] == 0, logs.stderr[-3000:]  # 137: SIGKILL after the grace


def test_db_commands_and_the_controller_stop_in_the_image(stack: Stack) -> None:
    """`loopml db check` on the stack's PostgreSQL (a URL without the driver: loopml adds
    psycopg), and the controller under tini: `docker stop` ends it with exit 0, not SIGKILL."""
    check = json.loads(stack.run(stack.image, "db", "check", "--json").stdout)
    assert (check["status"], check["usable"]) == ("current", True), check
    name = f"{stack.prefix}-controller"
    stack.containers.append(name)
    _docker(
        "run", "-d", "--name", name, *HARDENING, *stack.env(), stack.image, "controller", "--json"
    )
    # A tick's JSON line: it is in its loop (waiting for the next tick, 30 s away).
    _poll(
        "the controller's first tick",
        lambda: _docker("logs", name, check=False).stdout.startswith("{"),
        timeout=180,
        interval=0.5,
    )
    start = time.monotonic()
    _docker("stop", "-t", str(STOP_TIMEOUT_S), name, timeout=STOP_TIMEOUT_S + 30)
    stopped_s = time.monotonic() - start
    state = json.loads(_docker("inspect", name, "--format", "{{json .State}}").stdout)
    logs = _docker("logs", name, check=False)
    _report(f"controller under tini: docker stop took {stopped_s:.1f} s, exit {state['ExitCode']}")
    assert state["ExitCode"] == 0, logs.stdout[-2000:] + logs.stderr[-3000:]
    assert "stopped by SIGTERM" in logs.stderr


def test_serves_logs_and_reports_healthy(stack: Stack, server: Server) -> None:
    texts = ["@united lost my bag again", "what a great phone", "the car drives itself"]
    ids = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for text in texts:
            r = client.post("/v1/predict", json={"text": text})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model_version"] == "1" and body["variant"] == "champion"
            ids.append(body["predictions"][0]["request_id"])
        assert client.get("/healthz").status_code == 200
    _poll(
        "the predictions in PostgreSQL",
        lambda: _logged(stack.database, ids) == set(ids),
        timeout=30,
    )

    def health() -> str | None:
        state = json.loads(
            _docker("inspect", server.name, "--format", "{{json .State.Health}}").stdout
        )
        return state["Status"] if state["Status"] != "starting" else None

    assert _poll("the HEALTHCHECK verdict", health, timeout=150, interval=1) == "healthy"


async def _load(
    url: str, answered: list[str], errors: list[str], stop: threading.Event, connections: int = 32
) -> None:
    """Predict on ``connections`` keep-alive connections (one in four sends 64-text batches, so
    requests are in flight when the signal comes) until ``stop`` is set and the server refuses or
    drops the connection."""

    async def worker(i: int) -> None:
        size = 64 if i % 4 == 0 else 1
        n = 0
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while True:
                n += 1
                texts = [f"drain {i} {n} {k} @united my bag" for k in range(size)]
                try:
                    r = await client.post("/v1/predict", json={"texts": texts})
                except httpx.TransportError as exc:
                    if stop.is_set():
                        return
                    errors.append(f"before SIGTERM: {type(exc).__name__}: {exc}")
                    return
                if r.status_code == 200:
                    answered.extend(p["request_id"] for p in r.json()["predictions"])
                elif not stop.is_set():
                    errors.append(f"before SIGTERM: HTTP {r.status_code}: {r.text}")
                    return

    await asyncio.gather(*(worker(i) for i in range(connections)))


def test_sigterm_under_load_drains_every_answer(stack: Stack, server: Server) -> None:
    """Last of the container tests: it stops the module's server (so no other live server shares
    the spool and could replay what this one failed to drain)."""
    answered: list[str] = []
    errors: list[str] = []
    stop = threading.Event()
    loader = threading.Thread(target=asyncio.run, args=(_load(server.url, answered, errors, stop),))
    loader.start()
    try:
        _poll(
            "3,000 answered texts under load", lambda: len(answered) >= 3000 or errors, timeout=120
        )
        assert not errors, errors[:3]
        at_signal = len(answered)
        stop.set()
        start = time.monotonic()
        _docker("stop", "-t", str(STOP_TIMEOUT_S), server.name, timeout=STOP_TIMEOUT_S + 30)
        stopped_s = time.monotonic() - start
    finally:
        stop.set()
        loader.join(timeout=STOP_TIMEOUT_S + 30)
    assert not loader.is_alive()
    assert not errors, errors[:3]
    state = json.loads(_docker("inspect", server.name, "--format", "{{json .State}}").stdout)
    logs = _docker("logs", server.name)
    assert state["ExitCode"] == 0, logs.stderr[-3000:]  # 137 would mean SIGKILL after the grace
    assert "Application shutdown complete" in logs.stderr
    assert "left on the spool" not in logs.stderr
    logged = _logged(stack.database, answered)
    _report(
        f"SIGTERM under load: {len(answered)} texts answered 200 "
        f"({len(answered) - at_signal} after the signal), {len(logged)} of them in "
        f"PostgreSQL right after the exit; docker stop took {stopped_s:.1f} s"
    )
    assert len(set(answered)) == len(answered)
    assert logged == set(answered)


def test_healthcheck_finds_the_url_of_the_main_command(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location(
        "healthcheck", REPO / "deploy" / "docker" / "healthcheck.py"
    )
    assert spec is not None and spec.loader is not None
    hc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hc)
    py, loopml, mlflow = "/opt/loopml/bin/python3", "/opt/loopml/bin/loopml", "/usr/bin/mlflow"
    assert hc.url_for([py, loopml, "serve", "--host", "0.0.0.0", "--port", "8000", ""]) == (
        "http://127.0.0.1:8000/healthz"
    )
    assert hc.url_for([py, loopml, "serve", "--port=9001"]) == "http://127.0.0.1:9001/healthz"
    tini = ["/usr/bin/tini", "--"]
    assert hc.url_for([*tini, "loopml", "serve", "--port", "8001"]) == (
        "http://127.0.0.1:8001/healthz"
    )
    assert hc.url_for([*tini, "mlflow", "server", "--port", "5001"]) == (
        "http://127.0.0.1:5001/health"
    )
    assert hc.url_for([py, mlflow, "server", "--host", "0.0.0.0"]) == (
        "http://127.0.0.1:5000/health"
    )
    assert hc.url_for([py, loopml, "controller"]) is None
    assert hc.url_for([py, loopml, "train", "--data", "serve"]) is None
    monkeypatch.setenv("LOOPML_HEALTHCHECK_URL", "http://127.0.0.1:1/x")
    assert hc.url_for([py, loopml, "controller"]) == "http://127.0.0.1:1/x"


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    proc = subprocess.run(
        [hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checkov_has_no_failed_check() -> None:
    # `make tools` installs checkov in .venv-tools (its pins clash with the dev dependencies).
    found = [
        os.environ.get("LOOPML_CHECKOV"),
        str(REPO / ".venv-tools" / "bin" / "checkov"),
        shutil.which("checkov"),
    ]
    checkov = next((c for c in found if c and Path(c).is_file()), None)
    if checkov is None:
        pytest.fail("checkov not found: make tools (or set LOOPML_CHECKOV)")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    proc = subprocess.run(
        [
            checkov,
            "-f",
            "Dockerfile",
            "--framework",
            "dockerfile",
            "--skip-download",
            "--quiet",
            "-o",
            "json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(proc.stdout)
    assert report["summary"]["failed"] == 0, proc.stdout
    assert report["summary"]["passed"] >= 50
    # Every skip is written down with its reason in the Dockerfile.
    dockerfile = (REPO / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("# checkov:skip="):
            check_id, _, reason = line.removeprefix("# checkov:skip=").partition(":")
            assert check_id and len(reason.strip()) > 20, line

"""Running the app: uvicorn (httptools + uvloop), one process or several workers.

With several workers, uvicorn spawns fresh interpreters that build their app with
:func:`app_from_env`: the settings travel in a 0600 JSON file under ``LOOPML_HOME/run`` (removed at
exit) whose path is ``LOOPML_SERVE_SETTINGS_FILE``; loopml's secrets (admin token, API keys, metrics
token, database and tracking URLs) are taken out of the environment the workers inherit, so no
worker's ``/proc/<pid>/environ`` shows them. Credentials that libraries read only from the
environment (``AWS_*`` for S3 artifacts, ``MLFLOW_TRACKING_PASSWORD``) stay. The workers share
Prometheus values through ``PROMETHEUS_MULTIPROC_DIR``, a fresh folder per run. Schema migrations
run once here, before any worker starts, so workers never race on them.

The connection guard: uvicorn's httptools protocol has no timeout for a request head; the
:class:`GuardedHttpToolsProtocol` closes a connection whose head is not complete within
``LOOPML_HEADER_TIMEOUT_S`` of its first byte (or of the connection, for the first request) with a
408, and one whose head grows over 64 KiB with a 431 (slowloris and header floods). Each worker
takes at most ``LOOPML_MAX_CONNECTIONS`` connections (more are answered 503); a body must arrive
within ``LOOPML_BODY_TIMEOUT_S`` (the edge middleware answers 408).

On SIGTERM (``docker stop``, Kubernetes) each worker stops accepting connections, finishes the
requests in flight for up to ``_GRACEFUL_S`` (30 s; then they are cancelled), and its lifespan
drains the runtime: shadow scoring (up to 5 s), the queued batches, the error rows (one write), and
the prediction journal to the database (up to 15 s, plus up to 11 s for an insert already in flight;
what is not committed by then stays on the spool and is replayed at the next start). Worst case
about 30 + 5 + 5 + 15 + 11 = 66 s, with a database that stopped answering; about one second when it
answers. ``terminationGracePeriodSeconds`` (or ``docker stop -t``) of 75 s covers it.

With ``grpc_port`` set, each worker also serves OIP over gRPC (:mod:`loopml.serving.grpc`) on
that port, bound with ``SO_REUSEPORT`` so that N workers share it as they share the HTTP socket
(the kernel spreads connections over them); it binds ``grpc_host``, by default the HTTP ``host``.
On SIGTERM its calls in flight get up to 5 s more, after the HTTP drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from loopml.config import SERVE_WORKERS_ENV, Settings, load_settings
from loopml.errors import ConfigError, LoopmlError, ServingError

__all__ = ["GuardedHttpToolsProtocol", "app_from_env", "run", "write_settings_file"]

log = logging.getLogger("loopml.serving")

SETTINGS_ENV = "LOOPML_SERVE_SETTINGS_FILE"
_GRACEFUL_S = 30
#: Seconds an idle client connection stays open (uvicorn's default). A reverse proxy must close
#: its idle upstream connections sooner (deploy/compose/caddy/Caddyfile), or a request it sends
#: on a connection the server is closing gets a 502.
KEEP_ALIVE_S = 5

# Settings that hold secrets (or URLs that may): never left in a worker's environment.
_SECRET_ENV = (
    "LOOPML_ADMIN_TOKEN",
    "LOOPML_API_KEYS",
    "LOOPML_METRICS_TOKEN",
    "LOOPML_DATABASE_URL",
    "LOOPML_TRACKING_URI",
)
_MAX_HEAD_BYTES = 65_536


def _canned(status: int, reason: str, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit for each request head."""

    #: seconds a request head may take (set from ``LOOPML_HEADER_TIMEOUT_S`` by the app factory)
    header_timeout_s: float = 10.0
    max_head_bytes: int = _MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_bytes = 0

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _reject(self, payload: bytes) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(payload)
            self.transport.close()

    def _head_timeout(self) -> None:
        self._head_timer = None
        self._reject(_TIMEOUT_408)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock of the first request head with the connection (a client that sends
        nothing, or one byte at a time, is closed when it runs out)."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count the bytes of a head still incomplete; over the limit: 431 and close."""
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes:
            self._reject(_TOO_LARGE_431)

    def on_message_begin(self) -> None:
        """A new request's first byte: its head must be complete within the timeout."""
        super().on_message_begin()
        self._in_head = True
        self._arm()

    def on_headers_complete(self) -> None:
        """The head is complete: stop the clock (the body has its own, in the middleware)."""
        self._disarm()
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """What arrives next is the head of the next request."""
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0


_TIMEOUT_408 = _canned(408, "Request Timeout", "the request head was not received in time")
_TOO_LARGE_431 = _canned(431, "Request Header Fields Too Large", "the request head is too large")


def configure_protocol(settings: Settings) -> None:
    """Give the connection guard of this process its settings (each worker calls it)."""
    GuardedHttpToolsProtocol.header_timeout_s = settings.header_timeout_s


def write_settings_file(settings: Settings) -> Path:
    """``settings`` with their secrets as a JSON file only its owner can read (0600), under
    ``LOOPML_HOME/run``; the caller removes it."""
    data = settings.model_dump(mode="json")
    # model_dump masks secrets as "**********": every secret field, whatever its name, is
    # written with its value (a field added later must not reach the workers masked).
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
        elif isinstance(value, list) and any(isinstance(v, SecretStr) for v in value):
            data[name] = [v.get_secret_value() for v in value]
    settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = settings.run_dir / f"settings-{os.getpid()}.json"
    path.unlink(missing_ok=True)  # a stale file of a dead process with the same pid
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return path


def app_from_env() -> Any:
    """App factory for worker processes (settings from the file ``LOOPML_SERVE_SETTINGS_FILE``
    names, else from the environment)."""
    from loopml.serving.app import create_app

    path = os.environ.get(SETTINGS_ENV)
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the serving settings file {path}: {exc}") from exc
        settings = load_settings(**data)
    else:
        settings = load_settings()
    configure_protocol(settings)
    return create_app(settings)


def _log_config() -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["loopml"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _migrate_once(settings: Settings) -> None:
    from loopml.store import open_settings_store

    try:
        with open_settings_store(settings):
            pass  # opening migrates the schema
    except LoopmlError as exc:
        log.warning("%s: serving anyway, predictions wait on the spool", exc)


@contextlib.contextmanager
def _sigterm_is_success() -> Iterator[None]:
    """A stop asked for by SIGTERM, drained, exits 0.

    uvicorn restores the handler it found and raises the signal again once it has shut down, so
    that the default action kills the process with it: exit status -15, which tini (PID 1 in the
    image) passes on as 143. A graceful stop is no failure; the handler found here ignores it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    access_log: bool = False,
) -> None:
    """Serve ``settings``' champion on ``host:port`` until SIGINT/SIGTERM, then drain."""
    import uvicorn

    if workers < 1:
        raise ServingError(f"--workers must be at least 1, got {workers}")
    settings.prepare()
    if settings.grpc_port and settings.grpc_host is None:
        settings = settings.model_copy(update={"grpc_host": host})
    _migrate_once(settings)
    configure_protocol(settings)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        # By name: spawned workers import it themselves.
        "http": "loopml.serving.server:GuardedHttpToolsProtocol",
        "loop": "uvloop",
        "access_log": access_log,
        "log_config": _log_config(),
        "server_header": False,
        "timeout_graceful_shutdown": _GRACEFUL_S,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "backlog": 4096,
        "limit_concurrency": settings.max_connections,
    }
    if workers == 1:
        from loopml.serving.app import create_app

        app = create_app(settings)
        with _sigterm_is_success():
            uvicorn.run(app, **options)
        return
    settings.run_dir.mkdir(mode=0o700, exist_ok=True)  # owner only: it holds the settings file
    metrics_dir = settings.run_dir / f"metrics-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(mode=0o700)
    settings_file = write_settings_file(settings)
    # Workers inherit this process's environment: the secrets leave it (the file has them).
    removed = {k: os.environ.pop(k) for k in _SECRET_ENV if k in os.environ}
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ[SETTINGS_ENV] = str(settings_file)
    os.environ[SERVE_WORKERS_ENV] = str(workers)  # ONNX models split the CPUs among workers
    try:
        uvicorn.run("loopml.serving.server:app_from_env", factory=True, workers=workers, **options)
    finally:
        os.environ.pop(SETTINGS_ENV, None)
        os.environ.pop(SERVE_WORKERS_ENV, None)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        os.environ.update(removed)
        settings_file.unlink(missing_ok=True)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(metrics_dir).parent.rmdir()

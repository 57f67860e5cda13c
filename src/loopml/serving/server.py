"""Running the app: uvicorn (httptools + uvloop), one process or several workers.

With several workers, uvicorn spawns fresh interpreters that build their app with
:func:`app_from_env`: the settings travel in ``LOOPML_SERVE_SETTINGS`` (JSON) and the workers share
Prometheus values through ``PROMETHEUS_MULTIPROC_DIR``, a fresh folder per run. Schema migrations
run once here, before any worker starts, so workers never race on them.

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

import contextlib
import copy
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from loopml.config import Settings, load_settings
from loopml.errors import LoopmlError, ServingError

__all__ = ["app_from_env", "run"]

log = logging.getLogger("loopml.serving")

SETTINGS_ENV = "LOOPML_SERVE_SETTINGS"
_GRACEFUL_S = 30


def _settings_json(settings: Settings) -> str:
    data = settings.model_dump(mode="json")
    data["admin_token"] = settings.admin_token.get_secret_value() if settings.admin_token else None
    data["api_keys"] = [k.get_secret_value() for k in settings.api_keys]
    return json.dumps(data)


def app_from_env() -> Any:
    """App factory for worker processes (settings from ``LOOPML_SERVE_SETTINGS``)."""
    from loopml.serving.app import create_app

    raw = os.environ.get(SETTINGS_ENV)
    settings = load_settings(**json.loads(raw)) if raw else load_settings()
    return create_app(settings)


def _log_config() -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["loopml"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _migrate_once(settings: Settings) -> None:
    from loopml.store import open_store

    try:
        with open_store(settings.db_url):
            pass  # opening migrates the schema
    except LoopmlError as exc:
        log.warning("%s: serving anyway, predictions wait on the spool", exc)


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
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": "httptools",
        "loop": "uvloop",
        "access_log": access_log,
        "log_config": _log_config(),
        "server_header": False,
        "timeout_graceful_shutdown": _GRACEFUL_S,
        "backlog": 4096,
    }
    if workers == 1:
        from loopml.serving.app import create_app

        uvicorn.run(create_app(settings), **options)
        return
    metrics_dir = settings.home_dir / "run" / f"metrics-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ[SETTINGS_ENV] = _settings_json(settings)
    try:
        uvicorn.run("loopml.serving.server:app_from_env", factory=True, workers=workers, **options)
    finally:
        os.environ.pop(SETTINGS_ENV, None)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            Path(metrics_dir).parent.rmdir()

"""MLflow set-up: tracking/registry URIs and the experiment, done by entry points, not at import."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import mlflow
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE, ErrorCode
from mlflow.tracking import MlflowClient

from loopml.config import Settings, psycopg_url, redact_url
from loopml.errors import LoopmlError, RegistryError, TrackingUnavailableError

__all__ = [
    "CONTROLLER_TAG",
    "MODEL_TAG",
    "configure_mlflow",
    "experiment_id",
    "run_tags",
    "tagging_runs",
    "tracking_unavailable",
]

_MLFLOW_DIR = str(Path(mlflow.__file__).parent)

#: Tag of every MLflow run a controller creates: its lease holder id. A controller that takes the
#: lease over closes the runs another holder left RUNNING (it died or hung mid-step).
CONTROLLER_TAG = "loopml.controller"
#: Tag of every MLflow run a controller creates: the model whose loop it belongs to (a controller
#: recovers only its own model's runs).
MODEL_TAG = "loopml.model"

_RUN_TAGS: ContextVar[dict[str, str] | None] = ContextVar("loopml_run_tags", default=None)


def run_tags() -> dict[str, str]:
    """Tags for the MLflow runs loopml creates now (inside :func:`tagging_runs`), else none."""
    return dict(_RUN_TAGS.get() or {})


@contextmanager
def tagging_runs(tags: dict[str, str]) -> Iterator[None]:
    """Every MLflow run loopml creates inside carries ``tags`` from its creation on."""
    token = _RUN_TAGS.set(run_tags() | tags)
    try:
        yield
    finally:
        _RUN_TAGS.reset(token)


def configure_mlflow(settings: Settings) -> MlflowClient:
    """Point MLflow at the settings' tracking and registry store and return a client."""
    uri = psycopg_url(settings.mlflow_uri)
    # MLflow logs Alembic migration chatter on every new SQLite store: keep the CLI readable.
    for name in ("alembic", "mlflow.models.model", "mlflow.pyfunc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Its ERRORs and retry WARNINGs repeat, with a SQL statement and a 40-line traceback, the
    # error it raises next, which the CLI reports in one line (``tracking_unavailable``).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _is_database_uri(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")


def experiment_id(settings: Settings, client: MlflowClient) -> str:
    """Id of the settings' experiment, created with artifacts under ``LOOPML_HOME`` if needed."""
    name = settings.experiment_name
    try:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = settings.artifact_root if _is_database_uri(settings.mlflow_uri) else None
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException as exc:
        where = redact_url(settings.mlflow_uri)
        raise RegistryError(f"MLflow store at {where!r}: {_hide_passwords(exc.message)}") from exc


def _hide_passwords(text: str) -> str:
    # MLflow's messages name the URL they called, password included.
    return re.sub(r"//[^/@\s]+@", "//***@", text)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, explicitly or while it was being handled."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _raised_in_mlflow(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(_MLFLOW_DIR):
            return True
        tb = tb.tb_next
    return False


def _is_requests_error(exc: BaseException, *names: str) -> bool:
    # By name: requests is MLflow's HTTP client, not a dependency loopml imports itself.
    return any(
        cls.__module__.startswith("requests.") and cls.__name__ in names
        for cls in type(exc).__mro__
    )


def _reason(exc: BaseException) -> str | None:
    """What is wrong with the store, in a few words, if ``exc`` says it is unavailable."""
    if isinstance(exc, sqlalchemy.exc.OperationalError) and _raised_in_mlflow(exc):
        return str(exc.orig).splitlines()[0] if exc.orig is not None else "operational error"
    if _is_requests_error(exc, "ConnectionError", "Timeout"):
        errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
        if errno:
            return errno.group(1).strip().lower()
        return "timed out" if _is_requests_error(exc, "Timeout") else "no connection"
    if isinstance(exc, MlflowException):
        unavailable = exc.error_code == ErrorCode.Name(TEMPORARILY_UNAVAILABLE)
        if unavailable or exc.message.startswith("API request to "):
            first = exc.message.splitlines()[0] if exc.message else ""
            first = _hide_passwords(first)
            return re.sub(r"^\([\w.]+\) ", "", first)[:200] or "temporarily unavailable"
    return None


def tracking_unavailable(
    exc: BaseException, uri: str | None = None
) -> TrackingUnavailableError | None:
    """A one-line ``TrackingUnavailableError`` if ``exc`` comes from an MLflow store that is
    locked, down or unreachable (SQLite busy past its timeout, a refused connection), else None.

    Errors loopml already translated for its own database (``StoreError``) are not MLflow's.
    """
    reasons = []
    for link in _chain(exc):
        if isinstance(link, LoopmlError) and not isinstance(link, RegistryError):
            return None
        reason = _reason(link)
        if reason is not None:
            reasons.append(reason)
    if not reasons:
        return None
    where = redact_url(uri or mlflow.get_tracking_uri())
    return TrackingUnavailableError(
        f"the MLflow tracking store {where} is unavailable ({reasons[-1]}): retry when it"
        " answers (LOOPML_TRACKING_URI)"
    )

"""MLflow set-up: tracking/registry URIs and the experiment, done by entry points, not at import."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from loopml.config import Settings, psycopg_url, redact_url
from loopml.errors import RegistryError

__all__ = ["CONTROLLER_TAG", "configure_mlflow", "experiment_id", "run_tags", "tagging_runs"]

#: Tag of every MLflow run a controller creates: its lease holder id. A controller that takes the
#: lease over closes the runs another holder left RUNNING (it died or hung mid-step).
CONTROLLER_TAG = "loopml.controller"

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
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.models.model", "mlflow.pyfunc"):
        logging.getLogger(name).setLevel(logging.WARNING)
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
        raise RegistryError(f"MLflow store at {where!r}: {exc.message}") from exc

"""The model registry: versions, aliases (champion, challenger, previous), gate verdicts.

Wraps MLflow's registry and translates its errors; nothing else. The promotion transaction (alias,
routing state and audit record together) lives in :mod:`loopml.control.promotion`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from loopml.config import Settings
from loopml.errors import RegistryError, UnknownVersionError
from loopml.recipes.base import TextClassifier
from loopml.routing import CHALLENGER, CHAMPION, PREVIOUS
from loopml.tracking import configure_mlflow, tracking_unavailable

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GATE_TAG",
    "PREVIOUS",
    "RECIPE_PARAMS_TAG",
    "RECIPE_TAG",
    "Registry",
]

GATE_TAG = "loopml.gate"
#: version tags: the recipe that trained it and its full parameters (JSON), reused by retraining
RECIPE_TAG = "loopml.recipe"
RECIPE_PARAMS_TAG = "loopml.recipe_params"


class Registry:
    """Versions and aliases of one registered model."""

    def __init__(self, settings: Settings, client: MlflowClient | None = None) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.client = client or configure_mlflow(settings)

    def _raise_outage(self, exc: MlflowException) -> None:
        """Raise the store's outage rather than read "no such version or alias" into it."""
        outage = tracking_unavailable(exc, self.settings.mlflow_uri)
        if outage is not None:
            raise outage from exc

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except MlflowException as exc:
            raise RegistryError(f"{what}: {exc.message}") from exc

    def version(self, version: str) -> ModelVersion:
        """One version; a clear error when it does not exist."""
        if not str(version).isdigit():
            raise UnknownVersionError(f"model version must be a number, got {version!r}")
        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            self._raise_outage(exc)
            raise UnknownVersionError(f"model {self.name!r} has no version {version}") from exc

    def alias(self, alias: str) -> ModelVersion | None:
        """The version holding ``alias``, or None."""
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            self._raise_outage(exc)
            return None

    def versions(self) -> list[ModelVersion]:
        """Every version, newest first."""
        found = self._call(
            "listing versions",
            lambda: self.client.search_model_versions(f"name='{self.name}'", max_results=1000),
        )
        return sorted(found, key=lambda v: int(v.version), reverse=True)

    def exists(self) -> bool:
        """Whether the registered model exists yet."""
        try:
            self.client.get_registered_model(self.name)
        except MlflowException as exc:
            self._raise_outage(exc)
            return False
        return True

    def models_with(self, alias: str) -> list[str]:
        """Every registered model (not only this one) that has ``alias``, by name."""

        def search() -> list[str]:
            names, token = [], None
            while True:
                page = self.client.search_registered_models(max_results=1000, page_token=token)
                names += [m.name for m in page if alias in (m.aliases or {})]
                token = page.token
                if not token:
                    return sorted(names)

        found: list[str] = self._call("listing the registered models", search)
        return found

    def aliases(self) -> dict[str, str]:
        """alias -> version for this model."""
        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise RegistryError(f"reading aliases of {self.name!r}: {exc.message}") from exc
        return {a: str(v) for a, v in model.aliases.items()}

    def gate_verdict(self, mv: ModelVersion) -> str:
        """``passed`` only if the version passed its gate against today's champion."""
        verdict = str(mv.tags.get(GATE_TAG, "not run"))
        if verdict != "passed":
            return verdict
        judged = mv.tags.get("loopml.gate.champion", "none")
        current = self.alias(CHAMPION)
        now = str(current.version) if current is not None else "none"
        if judged == now:
            return verdict
        return f"stale: judged against champion {judged}, the champion is now {now}"

    def recipe_of(self, mv: ModelVersion) -> tuple[str, dict[str, Any]] | None:
        """The recipe name and parameters that trained ``mv``, or None if it does not say.

        Versions registered before the parameters tag existed fall back to the run's
        ``recipe.<name>`` params (strings, which the recipe's parameter model coerces).
        """
        name = mv.tags.get(RECIPE_TAG)
        if not name:
            return None
        recorded = mv.tags.get(RECIPE_PARAMS_TAG)
        if recorded:
            try:
                return str(name), dict(json.loads(recorded))
            except (ValueError, TypeError) as exc:
                raise RegistryError(
                    f"version {mv.version}: tag {RECIPE_PARAMS_TAG} is not a JSON object"
                ) from exc
        run_id = mv.run_id
        if not run_id:
            return str(name), {}
        run = self._call("reading the training run", lambda: self.client.get_run(run_id))
        prefix = "recipe."
        return str(name), {
            k.removeprefix(prefix): v for k, v in run.data.params.items() if k.startswith(prefix)
        }

    def load(self, version: str) -> TextClassifier:
        """Load a version's classifier (the object inside its pyfunc model)."""
        mv = self.version(version)
        uri = f"models:/{self.name}/{mv.version}"
        pyfunc = self._call(f"loading {uri}", lambda: mlflow.pyfunc.load_model(uri))
        classifier: TextClassifier = pyfunc.unwrap_python_model().classifier
        return classifier

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        """Set tags on a version."""
        try:
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, version, key, value)
        except MlflowException as exc:
            raise RegistryError(f"tagging version {version}: {exc.message}") from exc

    def move_alias(self, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version``, or delete it with None (no audit: callers record why)."""
        if version is None:
            self._call(
                "deleting alias",
                lambda: self.client.delete_registered_model_alias(self.name, alias),
            )
        else:
            self._call(
                "setting alias",
                lambda: self.client.set_registered_model_alias(self.name, alias, version),
            )

    def set_challenger(self, version: str | None) -> None:
        """Point (or, with None, remove) the ``challenger`` alias."""
        if version is None:
            with contextlib.suppress(RegistryError):
                self.move_alias(CHALLENGER, None)
        else:
            self.move_alias(CHALLENGER, version)

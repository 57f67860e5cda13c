"""The model registry: versions, aliases (champion, challenger, previous), promote and rollback.

Wraps MLflow's registry and translates its errors. Every alias change is appended to the audit log
in the same step: the audit record is written first and the change is undone if it cannot commit.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.orm import Session

from loopml.config import Settings
from loopml.control.routing import routing_in, save_routing
from loopml.errors import GateFailedError, RegistryError
from loopml.recipes.base import TextClassifier
from loopml.store import Store
from loopml.tracking import configure_mlflow

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "AliasChange",
    "Registry",
    "acting_as",
    "current_actor",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
GATE_TAG = "loopml.gate"


_ACTOR: ContextVar[str | None] = ContextVar("loopml_actor", default=None)


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Name the actor of the audit records written inside the block (this context only: the
    admin API uses it per request instead of touching ``LOOPML_ACTOR`` in ``os.environ``)."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def current_actor() -> str:
    """Who acts: the :func:`acting_as` actor, else ``LOOPML_ACTOR`` if set, else ``user@host``."""
    actor = _ACTOR.get() or os.environ.get("LOOPML_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class AliasChange:
    """What a promote or rollback did."""

    action: str
    from_version: str | None
    to_version: str
    forced: bool
    reason: str


class Registry:
    """Versions and aliases of one registered model."""

    def __init__(self, settings: Settings, client: MlflowClient | None = None) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.client = client or configure_mlflow(settings)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except MlflowException as exc:
            raise RegistryError(f"{what}: {exc.message}") from exc

    def version(self, version: str) -> ModelVersion:
        """One version; a clear error when it does not exist."""
        if not str(version).isdigit():
            raise RegistryError(f"model version must be a number, got {version!r}")
        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            raise RegistryError(f"model {self.name!r} has no version {version}") from exc

    def alias(self, alias: str) -> ModelVersion | None:
        """The version holding ``alias``, or None."""
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
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
        except MlflowException:
            return False
        return True

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

    def _move(self, alias: str, version: str | None) -> None:
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

    def _apply(
        self,
        store: Store,
        change: AliasChange,
        moves: dict[str, str | None],
        details: dict[str, Any],
        *,
        routing: Callable[[Session], None] | None = None,
    ) -> AliasChange:
        before = self.aliases()
        try:
            with store.session() as session:
                store.audit(
                    actor=current_actor(),
                    action=change.action,
                    model_name=self.name,
                    from_version=change.from_version,
                    to_version=change.to_version,
                    reason=change.reason,
                    details=details,
                    session=session,
                )
                if routing is not None:
                    routing(session)
                else:
                    self._sync_champion(session, change.to_version)
                for alias, version in moves.items():
                    self._move(alias, version)
        except Exception:
            self._restore(before, moves)
            raise
        return change

    def _sync_champion(self, session: Session, champion: str) -> None:
        # Serving follows the routing state: keep its champion equal to the alias.
        state = routing_in(session, self.name, lock=True)
        if state.rollout is not None and state.challenger != champion:
            raise RegistryError(
                f"a rollout of version {state.challenger} is in progress: "
                "let it finish or run `loopml rollout abort` first"
            )
        state.champion = champion
        if state.challenger == champion:
            state.challenger, state.mode, state.weight = None, "none", 0.0
            state.details.pop("rollout", None)
        save_routing(session, state)

    def _restore(self, before: dict[str, str], moves: dict[str, str | None]) -> None:
        # The audit record did not commit: put every alias back as it was.
        for alias in moves:
            with contextlib.suppress(RegistryError):  # deleting an alias that was never set
                self._move(alias, before.get(alias))

    def promote(
        self,
        store: Store,
        version: str,
        *,
        force: bool = False,
        reason: str = "",
        action: str | None = None,
        details: dict[str, Any] | None = None,
        routing: Callable[[Session], None] | None = None,
    ) -> AliasChange:
        """Make ``version`` the champion if its gate passed (or ``force`` with a reason).

        ``routing`` replaces the default routing update inside the same transaction (the
        controller uses it to end a rollout); ``details`` adds numbers to the audit record.
        """
        mv = self.version(version)
        current = self.alias(CHAMPION)
        if current is not None and str(current.version) == str(mv.version):
            raise RegistryError(f"version {mv.version} is already the champion")
        verdict = self.gate_verdict(mv)
        if verdict != "passed" and not force:
            raise GateFailedError(
                f"version {mv.version} cannot be promoted: its gate verdict is {verdict!r}"
                f" (run `loopml evaluate {mv.version}` to re-run it, or use --force --reason)"
            )
        if force and not reason.strip():
            raise RegistryError("--force needs --reason: say why the gate is overridden")
        old = str(current.version) if current is not None else None
        new = str(mv.version)
        action = action or ("force_promote" if force and verdict != "passed" else "promote")
        change = AliasChange(action, old, new, force, reason)
        moves: dict[str, str | None] = {CHAMPION: new}
        if old is not None:
            moves[PREVIOUS] = old
        challenger = self.alias(CHALLENGER)
        if challenger is not None and str(challenger.version) == new:
            moves[CHALLENGER] = None
        numbers = (details or {}) | {
            "gate": verdict,
            "gate_champion": mv.tags.get("loopml.gate.champion"),
            "macro_f1": mv.tags.get("loopml.macro_f1"),
        }
        return self._apply(store, change, moves, numbers, routing=routing)

    def rollback(self, store: Store, *, reason: str = "") -> AliasChange:
        """Give ``champion`` back to the ``previous`` version; the replaced one becomes previous."""
        previous = self.alias(PREVIOUS)
        current = self.alias(CHAMPION)
        if previous is None or current is None:
            raise RegistryError("nothing to roll back to: no 'previous' version is recorded")
        old, new = str(current.version), str(previous.version)
        change = AliasChange("rollback", old, new, False, reason)
        moves: dict[str, str | None] = {CHAMPION: new, PREVIOUS: old}
        return self._apply(store, change, moves, {"rolled_back": old})

    def set_alias(self, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (no audit: callers record why)."""
        self._move(alias, version)

    def set_challenger(self, version: str | None) -> None:
        """Point (or, with None, remove) the ``challenger`` alias."""
        if version is None:
            with contextlib.suppress(RegistryError):
                self._move(CHALLENGER, None)
        else:
            self._move(CHALLENGER, version)

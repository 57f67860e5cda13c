"""Promotion and rollback: the registry alias, the routing state and the audit record in one step.

The audit record and the routing row are written in one database transaction; the aliases are
moved inside it and put back if it cannot commit, so the three never disagree for long (the
controller reconciles an alias left behind by a crash).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from loopml.control.approval import check_approved
from loopml.errors import GateFailedError, RegistryError
from loopml.registry import Registry
from loopml.routing import CHALLENGER, CHAMPION, PREVIOUS, routing_in, save_routing
from loopml.store import Store, current_actor

__all__ = ["AliasChange", "promote", "rollback"]


@dataclass
class AliasChange:
    """What a promote or rollback did."""

    action: str
    from_version: str | None
    to_version: str
    forced: bool
    reason: str


def promote(
    store: Store,
    registry: Registry,
    version: str,
    *,
    force: bool = False,
    reason: str = "",
    action: str | None = None,
    details: dict[str, Any] | None = None,
    routing: Callable[[Session], None] | None = None,
) -> AliasChange:
    """Make ``version`` the champion if its gate passed (or ``force`` with a reason) and, if it
    changes the champion's recipe or parameters, an admin approved them (``force`` or not).

    ``routing`` replaces the default routing update inside the same transaction (the rollout
    uses it to end itself); ``details`` adds numbers to the audit record.
    """
    mv = registry.version(version)
    current = registry.alias(CHAMPION)
    if current is not None and str(current.version) == str(mv.version):
        raise RegistryError(f"version {mv.version} is already the champion")
    verdict = registry.gate_verdict(mv)
    if verdict != "passed" and not force:
        raise GateFailedError(
            f"version {mv.version} cannot be promoted: its gate verdict is {verdict!r}"
            f" (run `loopml evaluate {mv.version}` to re-run it, or use --force --reason)"
        )
    if force and not reason.strip():
        raise RegistryError("--force needs --reason: say why the gate is overridden")
    check_approved(registry, mv)  # --force overrides a gate, never the review of a spec
    old = str(current.version) if current is not None else None
    new = str(mv.version)
    action = action or ("force_promote" if force and verdict != "passed" else "promote")
    change = AliasChange(action, old, new, force, reason)
    moves: dict[str, str | None] = {CHAMPION: new}
    if old is not None:
        moves[PREVIOUS] = old
    challenger = registry.alias(CHALLENGER)
    if challenger is not None and str(challenger.version) == new:
        moves[CHALLENGER] = None
    numbers = (details or {}) | {
        "gate": verdict,
        "gate_champion": mv.tags.get("loopml.gate.champion"),
        "macro_f1": mv.tags.get("loopml.macro_f1"),
    }
    return _apply(store, registry, change, moves, numbers, routing=routing)


def rollback(store: Store, registry: Registry, *, reason: str = "") -> AliasChange:
    """Give ``champion`` back to the ``previous`` version; the replaced one becomes previous."""
    previous = registry.alias(PREVIOUS)
    current = registry.alias(CHAMPION)
    if previous is None or current is None:
        raise RegistryError("nothing to roll back to: no 'previous' version is recorded")
    old, new = str(current.version), str(previous.version)
    change = AliasChange("rollback", old, new, False, reason)
    moves: dict[str, str | None] = {CHAMPION: new, PREVIOUS: old}
    return _apply(store, registry, change, moves, {"rolled_back": old})


def _apply(
    store: Store,
    registry: Registry,
    change: AliasChange,
    moves: dict[str, str | None],
    details: dict[str, Any],
    *,
    routing: Callable[[Session], None] | None = None,
) -> AliasChange:
    before = registry.aliases()
    try:
        with store.session() as session:
            store.audit(
                actor=current_actor(),
                action=change.action,
                model_name=registry.name,
                from_version=change.from_version,
                to_version=change.to_version,
                reason=change.reason,
                details=details,
                session=session,
            )
            if routing is not None:
                routing(session)
            else:
                _follow_champion(session, registry.name, change.to_version)
            for alias, version in moves.items():
                registry.move_alias(alias, version)
    except Exception:
        _restore(registry, before, moves)
        raise
    return change


def _follow_champion(session: Session, model_name: str, champion: str) -> None:
    # Serving follows the routing state: keep its champion equal to the alias.
    state = routing_in(session, model_name, lock=True)
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


def _restore(registry: Registry, before: dict[str, str], moves: dict[str, str | None]) -> None:
    # The audit record did not commit: put every alias back as it was.
    for alias in moves:
        with contextlib.suppress(RegistryError):  # deleting an alias that was never set
            registry.move_alias(alias, before.get(alias))

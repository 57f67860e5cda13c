"""``loopml promote|approve|rollback|models|history``: the registry's versions and aliases,
and the audit log of every change to them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from loopml.cli import render
from loopml.cli.common import JsonOpt, cli_settings, emit_json, handle_errors, quiet_stdout

if TYPE_CHECKING:
    from loopml.config import Settings

__all__ = ["approve", "history", "models", "promote", "release", "rollback"]


def release(settings: Settings, version: str, *, direct: bool, reason: str) -> Any:
    """Start a canary of ``version``, or (``direct``, or the first version) make it champion."""
    from loopml import control
    from loopml.registry import Registry
    from loopml.store import open_settings_store

    with open_settings_store(settings) as store:
        return control.release(
            settings, store, Registry(settings), version, direct=direct, reason=reason
        )


@handle_errors
def promote(
    version: Annotated[str, typer.Argument(help="Registered model version.")],
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            "--force",
            help="Skip the canary: champion now, even if the gate failed (needs --reason).",
        ),
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --direct).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Start a canary rollout of VERSION (the controller promotes it if its live analysis
    passes); --direct --reason makes it the champion at once. A first version becomes champion."""
    settings = cli_settings()
    with quiet_stdout(json_out):  # --direct without --reason: a RequestError, exit 2
        result = release(settings, version, direct=direct, reason=reason)
    if json_out:
        emit_json(result.to_dict())
        return
    render.released(result)


@handle_errors
def approve(
    version: Annotated[str, typer.Argument(help="Registered model version.")],
    by: Annotated[str, typer.Option("--by", help="Who reviewed the recipe and parameters.")],
    json_out: JsonOpt = False,
) -> None:
    """Approve VERSION's recipe and parameters after review: a version that changes the
    champion's cannot start a rollout or be promoted without it (recorded in the audit log)."""
    from loopml import control
    from loopml.registry import Registry
    from loopml.store import open_settings_store

    settings = cli_settings()
    with open_settings_store(settings) as store, quiet_stdout(json_out):
        record = control.approve(store, Registry(settings), version, by=by)
    if json_out:
        emit_json(record)
        return
    render.approved(record)


@handle_errors
def rollback(
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Give the champion alias back to the previous version."""
    from loopml import control
    from loopml.registry import Registry
    from loopml.store import open_settings_store

    settings = cli_settings()
    with (
        open_settings_store(settings) as store,
        quiet_stdout(json_out),
    ):
        change = control.rollback(store, Registry(settings), reason=reason)
    if json_out:
        emit_json(vars(change))
        return
    render.rolled_back(change)


@handle_errors
def models(json_out: JsonOpt = False) -> None:
    """Registered versions with their aliases, gate verdicts and test macro-F1."""
    from loopml.registry import Registry

    settings = cli_settings()
    registry = Registry(settings)
    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        by_version.setdefault(version, []).append(alias)
    rows: list[dict[str, Any]] = [
        {
            "version": str(v.version),
            "aliases": sorted(by_version.get(str(v.version), [])),
            "gate": v.tags.get("loopml.gate", "not run"),
            "macro_f1": v.tags.get("loopml.macro_f1"),
            "dataset_version": v.tags.get("loopml.dataset_version"),
            "recipe": v.tags.get("loopml.recipe"),
            "run_id": v.run_id,
            "created": v.creation_timestamp,
        }
        for v in registry.versions()
    ]
    if json_out:
        emit_json(rows)
        return
    render.versions(settings.model_name, rows)


@handle_errors
def history(
    limit: Annotated[int, typer.Option(min=1, help="How many entries, newest first.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The audit log: every promotion, rollback and rollout decision."""
    from loopml.store import open_settings_store

    settings = cli_settings()
    with open_settings_store(settings) as store:
        entries = store.history(settings.model_name, limit=limit)
    rows: list[dict[str, Any]] = [
        {
            "id": e.id,
            "ts": e.ts.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "from_version": e.from_version,
            "to_version": e.to_version,
            "reason": e.reason,
            "details": e.details,
        }
        for e in entries
    ]
    if json_out:
        emit_json(rows)
        return
    render.history(settings.model_name, rows)

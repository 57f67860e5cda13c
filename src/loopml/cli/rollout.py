"""``loopml rollout start|status|abort``: shadow and canary rollouts of a challenger."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from loopml.cli import render
from loopml.cli.common import JsonOpt, control_plane, emit_json, handle_errors, quiet_stdout
from loopml.errors import RequestError

__all__ = ["RolloutMode", "rollout_app"]

rollout_app = typer.Typer(help="Shadow and canary rollouts of a challenger.", no_args_is_help=True)


class RolloutMode(enum.StrEnum):
    """How a challenger meets live traffic."""

    canary = "canary"
    shadow = "shadow"


@rollout_app.command("start")
@handle_errors
def rollout_start(
    version: Annotated[str, typer.Argument(help="Registered model version to roll out.")],
    mode: Annotated[
        RolloutMode | None,
        typer.Option(help="shadow or canary.", show_default="LOOPML_ROLLOUT_MODE"),
    ] = None,
    weight: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=99.99,
            help="First canary weight in percent (e.g. 10); later steps: LOOPML_ROLLOUT_STEPS.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Roll out even if the gate failed.")] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --force).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Start a shadow or canary rollout; the controller advances, promotes or rolls it back."""
    from loopml import control

    if force and not reason.strip():
        # a LoopmlError: typer's own BadParameter is no click exception, so it would exit 1
        raise RequestError("--force needs --reason: say why the gate is overridden")
    with control_plane() as (settings, store, registry), quiet_stdout(json_out):
        routing = control.start_rollout(
            settings,
            store,
            registry,
            version,
            mode=mode.value if mode else None,
            weight=None if weight is None else weight / 100,
            force=force,
            reason=reason,
        )
    if json_out:
        emit_json(routing.to_dict())
        return
    render.rollout_started(routing)


@rollout_app.command("status")
@handle_errors
def rollout_status(json_out: JsonOpt = False) -> None:
    """Routing state and a fresh analysis of the rollout in progress."""
    from loopml import control

    with control_plane() as (settings, store, registry), quiet_stdout(json_out):
        info = control.rollout_status(settings, store, registry)
    if json_out:
        emit_json(info.to_dict())
        return
    render.rollout_status(info)


@rollout_app.command("abort")
@handle_errors
def rollout_abort(
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "aborted by hand",
    json_out: JsonOpt = False,
) -> None:
    """Send all traffic back to the champion now."""
    from loopml import control

    with control_plane() as (settings, store, registry), quiet_stdout(json_out):
        routing = control.abort_rollout(settings, store, registry, reason=reason)
    if json_out:
        emit_json(routing.to_dict())
        return
    render.rollout_aborted(routing)

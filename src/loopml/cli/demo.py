"""``loopml demo``: the closed loop on real tweets, from drift to promotion."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loopml.cli import render
from loopml.cli.common import (
    JsonOpt,
    ParamOpt,
    RecipeOpt,
    cli_settings,
    console,
    emit_json,
    handle_errors,
    parse_params,
    quiet_stdout,
    recipe_name,
)
from loopml.cli.serve import mlflow_ui_command
from loopml.config import load_settings

if TYPE_CHECKING:
    from loopml.control import Tick

__all__ = ["demo"]


@handle_errors
def demo(
    fast: Annotated[bool, typer.Option(help="Less data and quicker ticks (for tests).")] = False,
    recipe: RecipeOpt = None,
    param: ParamOpt = None,
    budget: Annotated[
        float | None,
        typer.Option(
            min=10,
            help="Seconds the stream may run before the demo stops waiting for a promotion "
            "(default 420, 300 with --fast); slower recipes (MiniLM) need more.",
        ),
    ] = None,
    label_budget: Annotated[
        int | None,
        typer.Option(
            min=50,
            help="Label only what the label queue picks, this many labels in all (default: "
            "a random half of all requests gets a label).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The closed loop on real tweets: drift, retraining, canary, promotion (a few minutes)."""
    from rich.live import Live

    from loopml.demo import run_demo

    settings = cli_settings()
    live = Live(console=console, refresh_per_second=4)

    def update(stats: Any, ticks: list[Tick]) -> None:
        if stats.sent % 25 == 0:
            live.update(render.demo_view(stats, ticks))

    with quiet_stdout(json_out), live if not json_out else contextlib.nullcontext():
        result = run_demo(
            settings,
            fast=fast,
            recipe=recipe_name(recipe, None),
            params=parse_params(param or []),
            time_budget_s=budget,
            label_budget=label_budget,
            progress=None if json_out else lambda msg: console.print(f"[dim]{msg}[/]"),
            on_update=None if json_out else update,
        )
    if json_out:
        emit_json(result.to_dict())
    else:
        render.demo_result(result, mlflow_ui_command(load_settings(home=result.home)))
    if not result.recovered:
        console.print("[red]the loop did not close: quality did not recover (see the history)[/]")
        raise typer.Exit(1)

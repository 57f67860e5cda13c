"""``loopml label queue``: lease the next predictions worth labelling to an annotator.

The command is a plain function, registered on ``label_app`` by :mod:`loopml.labels.cli` (this
module never imports that one: no import cycle)."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated

import typer

from loopml.config import load_settings
from loopml.errors import LoopmlError
from loopml.labels.items import QueueItem
from loopml.labels.strategies import DEFAULT_STRATEGY, STRATEGIES

__all__ = ["queue"]


def _fail(error: LoopmlError) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(error.exit_code)


def _default_holder() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def queue(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, help="Items to lease at most.")
    ] = 20,
    strategy: Annotated[
        str,
        typer.Option("--strategy", "-s", help=f"How to order the items: {', '.join(STRATEGIES)}."),
    ] = DEFAULT_STRATEGY,
    holder: Annotated[
        str | None,
        typer.Option("--holder", help="Who the items are leased to.", show_default="your user"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model name.", show_default="LOOPML_MODEL_NAME"),
    ] = None,
    lease_s: Annotated[
        float | None,
        typer.Option(
            "--lease-s",
            min=1.0,
            help="Lease duration in seconds.",
            show_default="LOOPML_LABEL_LEASE_S",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")
    ] = False,
) -> None:
    """Lease the unlabelled predictions worth labelling next, best first, within the label
    budget; an item leased to you is nobody else's until the lease expires or it gets a label."""
    from loopml.labels import queue as label_queue

    try:
        settings = load_settings().prepare()
        name = model or settings.model_name
        who = holder if holder is not None else _default_holder()
        items = label_queue.take(
            settings, model_name=name, limit=limit, strategy=strategy, holder=who, lease_s=lease_s
        )
        budget = label_queue.budget(settings, name)
    except LoopmlError as error:
        raise _fail(error) from None
    if json_out:
        doc = {
            "model": name,
            "strategy": strategy,
            "holder": who,
            "budget": budget.to_dict(),
            "items": [label_queue.item_dict(i) for i in items],
        }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    _print(items, budget.left, budget.per_day)


def _print(items: list[QueueItem], left: int, per_day: int) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    if not items:
        out.print(f"nothing to label now (budget left: {left} of {per_day} a day)")
        return
    table = Table("request id", "priority", "model says", "score", "text")
    for i in items:
        text = i.text if len(i.text) <= 80 else i.text[:77] + "..."
        table.add_row(i.request_id, f"{i.priority:.3f}", i.label, f"{i.score:.2f}", text)
    out.print(table)
    expires = items[0].lease_expires.strftime("%H:%M:%S")
    out.print(
        f"{len(items)} item(s) leased to {items[0].holder} until {expires} UTC;"
        f" budget left: {left} of {per_day} a day"
    )

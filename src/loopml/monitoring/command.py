"""``loopml monitor``: the CLI entry of :func:`loopml.monitoring.run_monitor`.

Exit codes: 0 no drift and no quality alarm (also "insufficient data"), 1 drift or quality alarm,
2 bad usage or settings. The lead's ``cli.py`` registers it with ``app.command()(monitor)``.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from loopml.errors import LoopmlError

__all__ = ["monitor", "parse_since"]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``2h``/``30m``/``1d``/``45s`` ago, or an ISO 8601 time (UTC when it has no offset)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.strip().lower())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is neither a duration (30m, 2h, 1d) nor an ISO time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _table(summary: dict[str, Any]) -> Table:
    w = summary["window"]
    table = Table(title=f"{summary['model_name']} v{summary['model_version']}: "
                        f"{summary['verdict'].upper()} ({w['rows']} predictions)")
    for column in ("check", "method", "score", "threshold", "status"):
        table.add_column(column)
    colours = {"drift": "red", "ok": "green", "unavailable": "dim"}
    for c in summary["checks"]:
        score = "-" if c["score"] is None else f"{c['score']:.3f}"
        status = f"[{colours[c['status']]}]{c['status']}[/]"
        table.add_row(c["kind"], c["method"], score, str(c["threshold"]), status)
    q = summary["quality"]
    if q["macro_f1"] is not None:
        low, high = q["macro_f1_ci"]
        colour = {"alarm": "red", "ok": "green"}.get(q["status"], "dim")
        table.add_row("live macro-F1", f"{q['labeled']} labeled", f"{q['macro_f1']:.3f}",
                      f"floor {q['floor']}", f"[{colour}]{q['status']}[/] [{low:.3f}, {high:.3f}]")
        table.add_row("live accuracy", f"{q['labeled']} labeled", f"{q['accuracy']:.3f}", "-", "")
    else:
        table.add_row("live quality", "no feedback", "-", f"floor {q['floor']}",
                      "[dim]no labels[/]")
    return table


def monitor(
    window: Annotated[int | None, typer.Option(
        "--window", "-w", min=1, help="The newest N predictions of the champion.",
        show_default="LOOPML_MONITOR_WINDOW")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Predictions since a time: 30m, 2h, 1d or ISO 8601.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON summary on stdout.")]
    = False,
) -> None:
    """Check the champion's recent predictions for drift and live quality; exit 1 on an alarm."""
    from loopml.config import load_settings
    from loopml.monitoring.monitor import run_monitor

    console = Console(stderr=True)
    if window is not None and since is not None:
        console.print("[bold red]error:[/] give --window or --since, not both")
        raise typer.Exit(2)
    start = parse_since(since) if since is not None else None
    try:
        settings = load_settings().prepare()
        # MLflow prints to stdout; keep it off the JSON.
        redirect = contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()
        with redirect, console.status("monitoring") as status:
            report = run_monitor(settings, window=window, since=start,
                                 progress=lambda step: status.update(f"monitoring: {step}"))
    except LoopmlError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    summary = report.to_dict()
    if json_out:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
    else:
        out = Console()
        out.print(_table(summary))
        for reason in summary["reasons"]:
            out.print(f"  - {reason}", highlight=False)
        out.print(f"report: {summary['reports']['html']}", highlight=False)
    raise typer.Exit(1 if report.alarm else 0)

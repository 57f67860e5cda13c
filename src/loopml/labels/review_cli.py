"""`loopml feedback held|accept|reject`: the feedback labels the noise check held back.

Registered on the ``feedback`` group of :mod:`loopml.cli` by :func:`register_review`. Exit codes:
0 ok, 2 bad usage or an id that is unknown or already decided.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from loopml.cliutil import JsonOpt, handle_loopml_errors

__all__ = ["register_review"]

IdsArg = Annotated[list[int], typer.Argument(help="Review ids (from `loopml feedback held`).")]
ReasonOpt = Annotated[str, typer.Option(help="Why, for the audit log (required).")]


def held(
    all_rows: Annotated[
        bool, typer.Option("--all", help="Also the rows already accepted or rejected.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """List feedback labels held back from retraining as likely mislabelled."""
    from loopml.config import load_settings
    from loopml.labels.noise import HELD, review_rows
    from loopml.store import open_settings_store

    settings = load_settings().prepare()
    with open_settings_store(settings) as store:
        rows = review_rows(store, settings.model_name, status=None if all_rows else HELD)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no feedback held back" + ("" if all_rows else " awaiting review"))
        return
    for r in rows:
        text = r["text"].replace("\n", " ")
        typer.echo(
            f"{r['id']:>6}  {r['status']:<8}  label {r['label']} (p={r['given_prob']:.2f}), "
            f"model says {r['suggested']} (p={r['suggested_prob']:.2f}), by {r['key_id']}: "
            f"{text[:80]}"
        )


def _decide(ids: list[int], decision: str, reason: str, json_out: bool) -> None:
    from loopml.config import load_settings
    from loopml.labels.noise import decide
    from loopml.store import current_actor, open_settings_store

    settings = load_settings().prepare()
    with open_settings_store(settings) as store:
        rows = decide(
            store,
            ids,
            "accepted" if decision == "accepted" else "rejected",
            reason=reason,
            actor=current_actor(),
            model_name=settings.model_name,
        )
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    what = "trains next time" if decision == "accepted" else "never trains"
    typer.echo(f"{decision} {len(rows)} held label(s) ({what}): ids {[r['id'] for r in rows]}")


def accept(ids: IdsArg, reason: ReasonOpt = "", json_out: JsonOpt = False) -> None:
    """Accept held labels as right: they train on the next retrain; audited."""
    _decide(ids, "accepted", reason, json_out)


def reject(ids: IdsArg, reason: ReasonOpt = "", json_out: JsonOpt = False) -> None:
    """Reject held labels as wrong: they never train; audited."""
    _decide(ids, "rejected", reason, json_out)


def register_review(group: typer.Typer) -> None:
    """Add ``held``, ``accept`` and ``reject`` to the ``feedback`` command group."""
    group.command("held")(handle_loopml_errors(held))
    group.command("accept")(handle_loopml_errors(accept))
    group.command("reject")(handle_loopml_errors(reject))

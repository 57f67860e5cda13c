"""``loopml data ...``: validate and describe datasets; purge and forget logged data."""

from __future__ import annotations

from typing import Annotated

import typer

from loopml.cli import render
from loopml.cli.common import (
    DropDuplicatesOpt,
    JsonOpt,
    cli_settings,
    emit_json,
    handle_errors,
    label_list,
    load_data,
)

__all__ = ["data_app"]

data_app = typer.Typer(
    help="Validate and describe datasets; purge and forget logged data.", no_args_is_help=True
)


@data_app.command("validate")
@handle_errors
def data_validate(
    source: Annotated[str | None, typer.Argument(help="builtin:tweets or a data file.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Column holding the label.")] = None,
    labels: Annotated[str | None, typer.Option(help="Allowed labels, comma-separated.")] = None,
    drop_duplicates: DropDuplicatesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Check a dataset against every rule; exit 2 with the problems and example rows."""
    dataset = load_data(source, text_column, label_column, label_list(labels), drop_duplicates)
    summary = {"valid": True, **dataset.describe()}
    if json_out:
        emit_json(summary)
        return
    render.validated(dataset)


@data_app.command("describe")
@handle_errors
def data_describe(
    source: Annotated[str | None, typer.Argument(help="builtin:tweets or a data file.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Column holding the label.")] = None,
    drop_duplicates: DropDuplicatesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Rows, version, class and domain counts and text lengths of a dataset."""
    dataset = load_data(source, text_column, label_column, None, drop_duplicates)
    info = dataset.describe()
    if json_out:
        emit_json(info)
        return
    render.description(dataset, info)


@data_app.command("purge")
@handle_errors
def data_purge(
    older_than: Annotated[
        float | None,
        typer.Option(help="Delete what is older than this many days (LOOPML_RETENTION_DAYS)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete logged predictions, their feedback and report files past the retention period."""
    from loopml.data.privacy import purge

    counts = purge(cli_settings(), older_than_days=older_than)
    if json_out:
        emit_json(counts)
        return
    render.purged(counts)


@data_app.command("forget")
@handle_errors
def data_forget(
    key_id: Annotated[
        str | None, typer.Option(help="API key id: its feedback and the predictions it labelled.")
    ] = None,
    request_id: Annotated[
        list[str] | None, typer.Option("--request-id", help="A request id (repeatable).")
    ] = None,
    text: Annotated[
        list[str] | None, typer.Option("--text", help="An exact text (repeatable).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Delete one subject's predictions and feedback; audited (counts only)."""
    from loopml.data.privacy import forget

    counts = forget(
        cli_settings(),
        key_id=key_id,
        request_ids=request_id or [],
        texts=text or [],
        reason=reason,
    )
    if json_out:
        emit_json(counts)
        return
    render.forgotten(counts)

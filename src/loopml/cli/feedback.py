"""``loopml feedback ...``: audited corrections of feedback labels, labels imported late, and
the review of labels the noise check held back."""

from __future__ import annotations

from typing import Annotated

import typer

from loopml.cli import render
from loopml.cli.common import JsonOpt, cli_settings, emit_json, handle_errors
from loopml.labels.review_cli import register_review

__all__ = ["feedback_app"]

feedback_app = typer.Typer(help="Feedback labels: audited corrections.", no_args_is_help=True)
register_review(feedback_app)  # held, accept, reject: labels the noise check held back


@feedback_app.command("relabel")
@handle_errors
def feedback_relabel(
    request_id: Annotated[str, typer.Argument(help="The request id of the labelled prediction.")],
    label: Annotated[str, typer.Argument(help="The corrected label.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log (required).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Correct a stored feedback label (the only way a given label changes); audited."""
    from loopml.serving.feedback import relabel
    from loopml.store import current_actor, open_settings_store

    settings = cli_settings()
    with open_settings_store(settings) as store:
        result = relabel(
            store,
            request_id=request_id,
            label=label,
            reason=reason,
            actor=current_actor(),
            model_name=settings.model_name,
        )
    if json_out:
        emit_json(result)
        return
    render.relabelled(request_id, label, result)


@feedback_app.command("import")
@handle_errors
def feedback_import(
    file: Annotated[
        str,
        typer.Argument(help="CSV or JSONL: columns batch_id,row_id,label or request_id,label."),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Store labels that arrived later (batch rows by batch id and row id, or request ids),
    as feedback given by ``import:<file name>``; all or nothing."""
    from loopml.batch.feedback import import_key, read_labels, resolve_labels
    from loopml.serving.feedback import FeedbackStore
    from loopml.serving.metrics import Metrics
    from loopml.store import open_settings_store

    labels = read_labels(file)
    settings = cli_settings()
    with open_settings_store(settings) as store:
        items = resolve_labels(store, settings, labels)
        stored = FeedbackStore(store, None, Metrics()).record(items, import_key(file))
    correct = sum(1 for s in stored if s["correct"])
    if json_out:
        emit_json({"stored": len(stored), "correct": correct, "key_id": import_key(file)})
        return
    render.imported(len(stored), correct, import_key(file))

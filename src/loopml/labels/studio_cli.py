"""`loopml label push|pull|decide|disagreements|webhook`: the Label Studio bridge's commands.

``labels/cli.py`` registers them on ``label_app`` with :func:`add_studio_commands` (this module
never imports it: no import cycle).

Exit codes: 0 ok, 1 Label Studio or the database is unreachable (nothing is lost: retry), 2 bad
usage or data.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from loopml.cliutil import JsonOpt, emit_json, handle_loopml_errors
from loopml.config import Settings, load_settings
from loopml.errors import ConfigError, RequestError

__all__ = [
    "add_studio_commands",
    "decide_cmd",
    "disagreements_cmd",
    "pull_cmd",
    "push_cmd",
    "webhook_cmd",
]

ProjectOpt = Annotated[
    int | None,
    typer.Option(
        "--project",
        min=1,
        help="Label Studio project id.",
        show_default="LOOPML_LABEL_STUDIO_PROJECT",
    ),
]


def _settings() -> Settings:
    return load_settings().prepare()


@handle_loopml_errors
def push_cmd(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Items to send at most.")] = 50,
    project: ProjectOpt = None,
    strategy: Annotated[
        str | None, typer.Option(help="Queue strategy (default: the queue's).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Send the label queue's next items to Label Studio as pre-annotated tasks.

    The model's answer (label and score) is each task's pre-annotation; without a project, one
    is created and its id printed. Exit 1 when Label Studio is unreachable (nothing is leased).
    """
    from loopml.labels import queue
    from loopml.labels.studio import StudioClient, project_for, push
    from loopml.store import current_actor, open_settings_store

    settings = _settings()
    with StudioClient.from_settings(settings) as client:
        chosen = project_for(settings, client, project)
        client.project(chosen)  # unreachable or unknown: say so before leasing anything
        options: dict[str, Any] = {} if strategy is None else {"strategy": strategy}
        holder = f"labelstudio:{chosen}:{current_actor()}"[:200]
        items = queue.take(
            settings, model_name=settings.model_name, limit=limit, holder=holder, **options
        )
        with open_settings_store(settings) as store:
            result = push(settings, store, client, items, project=chosen)
    if json_out:
        emit_json(result.to_dict())
        return
    typer.echo(
        f"project {chosen}: {len(result.created)} task(s) created,"
        f" {len(result.skipped)} already sent"
    )


@handle_loopml_errors
def pull_cmd(project: ProjectOpt = None, json_out: JsonOpt = False) -> None:
    """Fetch the project's annotations; agreed labels become feedback.

    What the webhook does as annotations are made; a repeated pull changes nothing. Exit 1 if
    some annotations were refused.
    """
    from loopml.labels.studio import StudioClient, pull
    from loopml.store import open_settings_store

    settings = _settings()
    chosen = project or settings.label_studio_project
    if chosen is None:
        raise ConfigError("no project: pass --project ID or set LOOPML_LABEL_STUDIO_PROJECT")
    with StudioClient.from_settings(settings) as client, open_settings_store(settings) as store:
        result = pull(settings, store, client, project=chosen)
    if json_out:
        emit_json(result.to_dict())
    else:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(result.outcomes.items()))
        typer.echo(
            f"project {chosen}: {result.annotations} annotation(s); items {counts or 'none'}"
        )
        for refused in result.refused:
            typer.echo(
                f"refused annotation {refused['annotation_id']}: {refused['error']}", err=True
            )
    if result.refused:
        raise typer.Exit(1)


@handle_loopml_errors
def decide_cmd(
    request_id: Annotated[str, typer.Argument(help="The request id of the disputed item.")],
    label: Annotated[str, typer.Argument(help="The label it gets.")],
    by: Annotated[str, typer.Option("--by", help="Who decides (audited).")] = "",
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Settle a disagreement between annotators: the label is stored as feedback; audited."""
    from loopml.labels.studio import decide
    from loopml.store import open_settings_store

    with open_settings_store(_settings()) as store:
        result = decide(store, request_id=request_id, label=label, by=by, reason=reason)
    if json_out:
        emit_json(result)
        return
    votes = ", ".join(f"{who}: {lb}" for who, lb in sorted(result["annotations"].items()))
    typer.echo(f"request {request_id}: {label} (decided by {by}; annotations {votes})")


@handle_loopml_errors
def disagreements_cmd(json_out: JsonOpt = False) -> None:
    """Items whose annotators disagree, waiting for `loopml label decide`."""
    from loopml.labels.studio import disagreements
    from loopml.store import open_settings_store

    settings = _settings()
    with open_settings_store(settings) as store:
        items = disagreements(store, model_name=settings.model_name)
    if json_out:
        emit_json(items)
        return
    if not items:
        typer.echo("no disagreements")
    for item in items:
        votes = ", ".join(f"{who}: {lb}" for who, lb in sorted(item["annotations"].items()))
        typer.echo(f"{item['request_id']} (task {item['task_id']}): {votes}")


@handle_loopml_errors
def webhook_cmd(
    url: Annotated[
        str, typer.Argument(help="loopml's webhook URL, e.g. https://HOST/v1/label-studio/webhook.")
    ],
    project: ProjectOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make the Label Studio project send its annotations to loopml's webhook.

    The webhook sends LOOPML_LABEL_STUDIO_WEBHOOK_SECRET as its bearer token.
    """
    from loopml.labels.studio import StudioClient

    settings = _settings()
    chosen = project or settings.label_studio_project
    if chosen is None:
        raise ConfigError("no project: pass --project ID or set LOOPML_LABEL_STUDIO_PROJECT")
    secret = settings.label_studio_webhook_secret
    if secret is None:
        raise ConfigError("set LOOPML_LABEL_STUDIO_WEBHOOK_SECRET (the server checks the same)")
    if not url.startswith(("http://", "https://")):
        raise RequestError(f"URL: must start with http:// or https://, got {url!r}")
    with StudioClient.from_settings(settings) as client:
        created = client.add_webhook(chosen, url, secret)
    if json_out:
        emit_json(created)
        return
    typer.echo(f"project {chosen}: webhook {created.get('id')} sends annotations to {url}")


def add_studio_commands(app: typer.Typer) -> None:
    """Register the Label Studio commands on ``app`` (``loopml label``)."""
    for name, command in (
        ("push", push_cmd),
        ("pull", pull_cmd),
        ("decide", decide_cmd),
        ("disagreements", disagreements_cmd),
        ("webhook", webhook_cmd),
    ):
        app.command(name)(command)

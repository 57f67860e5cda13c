"""The ``loopml`` command line: parses, calls stage functions, renders with Rich or JSON.

One module per command group; each command calls the library and hands the result to
:mod:`loopml.cli.render` (or prints it as JSON). What they share is in :mod:`loopml.cli.common`.
The top-level commands are registered below, in the order ``loopml --help`` lists them.

Exit codes: 0 ok, 1 a gate or check failed, 2 bad usage or bad data.
"""

from __future__ import annotations

import typer

from loopml.batch.cli import batch_app
from loopml.cli import demo, release, serve, training
from loopml.cli.checks import check_app
from loopml.cli.common import select_model
from loopml.cli.data import data_app
from loopml.cli.db import db_app
from loopml.cli.feedback import feedback_app
from loopml.cli.rollout import rollout_app
from loopml.cli.serve import parse_since
from loopml.labels.cli import label_app

__all__ = ["app", "main", "parse_since"]

app = typer.Typer(
    help="loopml: train, gate, register, serve, monitor and roll out text classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.callback()(select_model)

for command in (
    training.train,
    training.tune,
    training.recipes,
    training.evaluate,
    training.explain,
    release.promote,
    release.approve,
    release.rollback,
    release.models,
    release.history,
):
    app.command()(command)
app.command("ui")(serve.ui_command)
app.command()(serve.controller)
app.command()(serve.serve)
app.command()(serve.monitor)
app.command()(demo.demo)

app.add_typer(data_app, name="data")
app.add_typer(rollout_app, name="rollout")
app.add_typer(feedback_app, name="feedback")
app.add_typer(check_app, name="check")
app.add_typer(db_app, name="db")
app.add_typer(batch_app, name="batch")
app.add_typer(label_app, name="label")


def main() -> None:
    """Console-script entry point."""
    app()

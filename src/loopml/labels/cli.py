"""`loopml label ...`: the label queue and the Label Studio bridge.

Commands live in one module per job (queue, Label Studio) as plain functions, registered on
``label_app`` below (a module importing ``label_app`` back would be an import cycle).
"""

from __future__ import annotations

import typer

__all__ = ["label_app"]

label_app = typer.Typer(
    help="Labels where they count: the label queue and Label Studio.", no_args_is_help=True
)

from loopml.labels import queue_cli  # noqa: E402
from loopml.labels.studio_cli import add_studio_commands  # noqa: E402

label_app.command("queue")(queue_cli.queue)
add_studio_commands(label_app)  # push, pull, decide, disagreements, webhook

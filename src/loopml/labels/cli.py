"""`loopml label ...`: the label queue and the Label Studio bridge.

Commands live in one module per job (queue, Label Studio), each imported below so that it
registers on ``label_app``.
"""

from __future__ import annotations

import typer

__all__ = ["label_app"]

label_app = typer.Typer(
    help="Labels where they count: the label queue and Label Studio.", no_args_is_help=True
)

from loopml.labels import queue_cli  # noqa: E402

label_app.command("queue")(queue_cli.queue)

"""`loopml batch ...`: score files of texts with a registered model."""

from __future__ import annotations

import typer

__all__ = ["batch_app"]

batch_app = typer.Typer(
    help="Batch scoring of files of texts, locally or on Apache Spark.", no_args_is_help=True
)

"""``loopml serve``: a plain function with Typer annotations (registered by ``loopml.cli``)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 for all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes (one model copy each).", min=1, max=64)
    ] = 1,
    access_log: Annotated[
        bool,
        typer.Option("--access-log/--no-access-log", help="Log one line per request (paths only)."),
    ] = False,
) -> None:
    """Serve the champion over HTTP: /v1/predict, Open Inference Protocol V2 under /v2,
    feedback, health, a status page at /, JSON status and Prometheus /metrics. Follows the
    routing state (canary or shadow challenger) and the registry alias, and hot-swaps."""
    from loopml.config import load_settings
    from loopml.errors import LoopmlError
    from loopml.serving.server import run

    try:
        run(load_settings(), host=host, port=port, workers=workers, access_log=access_log)
    except LoopmlError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None

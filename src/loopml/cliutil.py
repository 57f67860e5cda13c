"""What every command group shares, the sub-apps in their own packages included: errors as one
line and an exit code, ``--json`` and its output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from loopml.errors import LoopmlError

__all__ = ["JsonOpt", "emit_json", "error_line", "handle_loopml_errors"]

F = TypeVar("F", bound=Callable[..., Any])
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def emit_json(obj: Any) -> None:
    """Write ``obj`` as JSON on stdout."""
    sys.stdout.write(json.dumps(obj, default=str, indent=2) + "\n")


def error_line(message: str) -> None:
    """``error: message`` on stderr (markup in the message is shown as it is)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False
    )


def handle_loopml_errors(fn: F) -> F:
    """A LoopmlError becomes one line on stderr and its exit code, Ctrl-C exit 130; never a
    traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            error_line("interrupted")
            raise typer.Exit(130) from None
        except LoopmlError as exc:
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]

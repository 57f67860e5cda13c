"""``python -m loopml.serving``: the same as ``loopml serve``."""

from __future__ import annotations

import typer

from loopml.serving.command import serve

if __name__ == "__main__":
    typer.run(serve)

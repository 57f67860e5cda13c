"""The serving data plane: app factory, server runner and the ``loopml serve`` command.

Public API: :func:`create_app` and :func:`run`. Everything else is private implementation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app", "run"]

if TYPE_CHECKING:
    from fastapi import FastAPI

    from loopml.config import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """A serving app for ``settings`` (see :func:`loopml.serving.app.create_app`)."""
    from loopml.serving.app import create_app as factory

    return factory(settings)


def run(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, **options: Any
) -> None:
    """Serve until interrupted (see :func:`loopml.serving.server.run`)."""
    from loopml.serving.server import run as runner

    runner(settings, host=host, port=port, workers=workers, **options)

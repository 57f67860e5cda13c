"""Who acts: the actor named in every audit record."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["acting_as", "current_actor"]

_ACTOR: ContextVar[str | None] = ContextVar("loopml_actor", default=None)


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Name the actor of the audit records written inside the block (this context only: the
    admin API uses it per request instead of touching ``LOOPML_ACTOR`` in ``os.environ``)."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def current_actor() -> str:
    """Who acts: the :func:`acting_as` actor, else ``LOOPML_ACTOR`` if set, else ``user@host``."""
    actor = _ACTOR.get() or os.environ.get("LOOPML_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"

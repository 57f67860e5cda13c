"""A bounded executor for database work on the request path (feedback), owned by the runtime.

Request-path database calls must not run on the event loop's default executor: while the
database is locked or unreachable, each call waits for its timeout, and a burst of them would fill
that shared pool and stall everything else that uses it (``/metrics`` renders there). Here they get
their own few threads and a short queue; beyond that a request is refused at once
(:class:`DatabaseBusyError`, 503 + Retry-After). After a call fails with ``StoreError`` the
database counts as down for ``cooldown_s``: calls fail fast instead of queueing behind timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from loopml.errors import OverloadedError, StoreError

__all__ = ["DatabaseBusyError", "DbWork"]

T = TypeVar("T")


class DatabaseBusyError(OverloadedError):
    """Too many requests are waiting for the loopml database: retry shortly."""

    retry_after_s = 2


class DbWork:
    """``workers`` threads plus ``queue`` waiting calls; fails fast while the DB is down."""

    def __init__(self, *, workers: int, queue: int, cooldown_s: float = 2.0) -> None:
        self.limit = workers + queue
        self.cooldown_s = cooldown_s
        self.in_flight = 0
        self.refused = 0
        self._down_until = 0.0
        self._down_reason = ""
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loopml-db")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on a database thread; ``StoreError``/``DatabaseBusyError`` at once when
        the database just failed or the queue is full."""
        if time.monotonic() < self._down_until:
            self.refused += 1
            raise StoreError(
                f"the loopml database is unavailable ({self._down_reason}); retry later"
            )
        if self.in_flight >= self.limit:
            self.refused += 1
            raise DatabaseBusyError(
                f"{self.in_flight} requests are waiting for the loopml database; retry shortly"
            )
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._call, fn, args
            )
        except StoreError as exc:
            self._down_until = time.monotonic() + self.cooldown_s
            self._down_reason = str(exc)[:200]
            raise
        finally:
            self.in_flight -= 1

    def _check_up(self) -> None:
        if time.monotonic() < self._down_until:
            self.refused += 1
            raise StoreError(
                f"the loopml database is unavailable ({self._down_reason}); retry later"
            )

    def _call(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        # Checked again when a queued call starts: calls queued before the database failed must
        # not each wait for its timeout once one of them has found it down.
        self._check_up()
        return fn(*args)

    def close(self) -> None:
        """Stop the threads once the calls in flight end."""
        self._executor.shutdown(wait=False, cancel_futures=True)

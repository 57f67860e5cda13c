"""Serving errors of a variant (failed model calls, models that failed to load) as
``serving_errors`` rows, written off the request path.

The rollout analysis (:func:`loopml.control.live.collect`) sums ``errors`` per version and variant
since a step started, so a challenger that fails is rolled back fast. Reports are rare: they are
buffered in memory, merged by (version, variant, error) and inserted by a small background task
every half second. A row never holds texts or tokens: ``error`` is the exception type and message
with the request's texts blanked out (see :func:`loopml.serving.batcher.describe_failure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import UTC, datetime

from loopml.errors import StoreError
from loopml.serving.metrics import Metrics
from loopml.store import ServingError, Store

__all__ = ["ErrorLog"]

log = logging.getLogger("loopml.serving")

_FLUSH_S = 0.5
_RETRY_S = 5.0
_MAX_PENDING = 1000  # distinct (version, variant, error) keys kept while the database is down

_Key = tuple[str, str, str]


class ErrorLog:
    """Buffers error reports and writes them as ``serving_errors`` rows in the background."""

    def __init__(self, model_name: str, metrics: Metrics) -> None:
        self.model_name = model_name
        self.metrics = metrics
        self.store: Store | None = None
        self.reported = 0
        self.written = 0
        self.dropped = 0
        self._pending: dict[_Key, tuple[int, datetime]] = {}
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def report(self, version: str, variant: str, errors: int, error: str) -> None:
        """Count ``errors`` failures of ``version`` as ``variant`` (cheap; never blocks; call it
        on the event loop)."""
        self.metrics.model_errors.labels(version, variant, self.model_name).inc(errors)
        key = (version, variant, error[:2000])
        with self._lock:
            self.reported += errors
            count, first = self._pending.get(key, (0, datetime.now(UTC)))
            if count == 0 and len(self._pending) >= _MAX_PENDING:
                self.dropped += errors
                return
            self._pending[key] = (count + errors, first)
        if self._wake is not None:
            self._wake.set()

    def start(self, store: Store) -> None:
        """Start the writer task on the running loop."""
        self.store = store
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loopml-errors")

    async def close(self) -> None:
        """Stop the writer and write what is left (one attempt)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            await asyncio.to_thread(self.flush)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(_FLUSH_S)  # merge a burst of failures into a few rows
            if not await asyncio.to_thread(self.flush):
                self._wake.set()
                await asyncio.sleep(_RETRY_S)

    def flush(self) -> bool:
        """Insert the pending rows in one transaction; they stay pending if the DB fails."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending or self.store is None:
            return True
        rows = [
            ServingError(
                ts=first,
                model_name=self.model_name,
                model_version=version,
                variant=variant,
                errors=count,
                error=error,
            )
            for (version, variant, error), (count, first) in pending.items()
        ]
        try:
            with self.store.session() as session:
                session.add_all(rows)
        except StoreError as exc:
            log.warning("cannot record %d serving error row(s) yet: %s", len(rows), exc)
            with self._lock:
                for key, (count, first) in pending.items():
                    now_count, _ = self._pending.get(key, (0, first))
                    self._pending[key] = (count + now_count, first)
            return False
        with self._lock:
            self.written += sum(count for count, _ in pending.values())
        return True

    def status(self) -> dict[str, int]:
        """Counters for ``/v1/status``."""
        with self._lock:
            pending = sum(count for count, _ in self._pending.values())
        return {
            "reported": self.reported,
            "written": self.written,
            "pending": pending,
            "dropped": self.dropped,
        }

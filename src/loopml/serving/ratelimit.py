"""Per-key token buckets (in memory, per worker): how many feedback labels a key may post."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from loopml.errors import RateLimitedError

__all__ = ["RateLimiter"]


class RateLimiter:
    """A token bucket per key id: ``per_min`` tokens a minute, a burst of one minute's worth.

    Each worker keeps its own buckets, so N workers allow up to N times the rate: the limit
    bounds how fast one key can poison the labels, not an exact quota.
    """

    def __init__(self, per_min: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_min / 60.0
        self.burst = per_min
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key_id: str, n: int) -> None:
        """Spend ``n`` tokens of ``key_id``, or raise ``RateLimitedError`` (429, Retry-After)."""
        if n > self.burst:
            raise RateLimitedError(
                f"{n} labels in one request is over the feedback rate of {self.burst:g} labels"
                " per minute (LOOPML_FEEDBACK_RATE_PER_MIN): send smaller lists",
                retry_after_s=60,
            )
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if n > tokens:
                self._buckets[key_id] = (tokens, now)
                wait = math.ceil((n - tokens) / self.rate)
                raise RateLimitedError(
                    f"key {key_id} is over its feedback rate of {self.burst:g} labels per minute"
                    f" (LOOPML_FEEDBACK_RATE_PER_MIN): {n} sent, {int(tokens)} allowed now;"
                    f" retry in {wait} s",
                    retry_after_s=max(1, wait),
                )
            self._buckets[key_id] = (tokens - n, now)

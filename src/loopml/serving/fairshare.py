"""A fair share of a worker's expensive work (explanations) among API keys.

Work whose cost grows with the input (an explanation scores the text once per token) runs in a
few slots per worker, never in the event loop and never through the batchers. Before this gate
one key looping long explains on two connections held the only slot almost all the time: another
key's explains got 429 (18 of 20). Now:

- each key has at most one request running or waiting per worker (a second one at once: 429);
- requests wait for a slot in arrival order, so with one per key the slot goes round the keys:
  another key waits at most one explanation, whatever one key sends;
- at most ``max_waiting`` wait, each at most ``wait_s`` (then 429 with ``Retry-After``);
- each key may use ``seconds_per_min`` seconds of explaining per minute (a token bucket, charged
  with the CPU time each explanation took, so a long text costs what it costs, and a busy
  machine or a slow start costs the key nothing): one key cannot keep a core busy for long.

Per worker and in memory, like :class:`~loopml.serving.ratelimit.RateLimiter`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from loopml.errors import RateLimitedError

__all__ = ["FairShare", "Turn"]


@dataclass
class Turn:
    """One request's turn; set ``cost`` to the seconds of work it took (else the time it held
    the slot is charged)."""

    cost: float | None = None


class FairShare:
    """Slots of expensive work shared fairly by key ids (see the module docstring)."""

    def __init__(
        self,
        *,
        slots: int,
        max_waiting: int,
        wait_s: float,
        seconds_per_min: float,
        what: str = "explanation",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.rate = seconds_per_min / 60.0
        self.burst = seconds_per_min
        self.what = what
        self.clock = clock
        self.running = 0
        self._busy: set[str] = set()  # keys with a request running or waiting
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._budget: dict[str, tuple[float, float]] = {}  # key id -> (seconds left, at)

    def _left(self, key_id: str) -> float:
        now = self.clock()
        left, at = self._budget.get(key_id, (self.burst, now))
        return min(self.burst, left + (now - at) * self.rate)

    def _charge(self, key_id: str, seconds: float) -> None:
        self._budget[key_id] = (self._left(key_id) - seconds, self.clock())

    def _admit(self, key_id: str) -> None:
        """Refuse a key that is busy or over its budget, or a full queue (429)."""
        if key_id in self._busy:
            raise RateLimitedError(
                f"key {key_id} already has an {self.what} running or waiting on this worker:"
                " send them one at a time",
                retry_after_s=1,
            )
        left = self._left(key_id)
        if left < 0:  # spent beyond the budget: back once it is refilled to zero
            wait = max(1, math.ceil(-left / self.rate))
            raise RateLimitedError(
                f"key {key_id} used its {self.burst:g} seconds of {self.what}s per minute"
                f" (LOOPML_EXPLAIN_SECONDS_PER_MIN); retry in {wait} s",
                retry_after_s=wait,
            )
        if self.running >= self.slots and len(self._waiting) >= self.max_waiting:
            raise RateLimitedError(
                f"{len(self._waiting)} {self.what}s are waiting on this worker; retry",
                retry_after_s=1,
            )

    async def _wait_turn(self) -> None:
        """Wait for a free slot, in arrival order, for at most ``wait_s``."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.wait_s)
        except TimeoutError:
            if turn.done():  # handed the slot just as time ran out: give it on
                self._release()
            else:
                self._waiting.remove(turn)
            raise RateLimitedError(
                f"no {self.what} slot came free on this worker within {self.wait_s:g} s; retry",
                retry_after_s=1,
            ) from None
        except BaseException:
            if turn.done():
                self._release()
            else:
                self._waiting.remove(turn)
            raise

    def _release(self) -> None:
        """Hand the slot to the first waiter, or free it."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.running -= 1

    @asynccontextmanager
    async def turn(self, key_id: str) -> AsyncIterator[Turn]:
        """Hold one slot for ``key_id``'s work (a RateLimitedError, 429, when it may not)."""
        self._admit(key_id)
        self._busy.add(key_id)
        try:
            if self.running < self.slots:
                self.running += 1
            else:
                await self._wait_turn()
            start = self.clock()
            turn = Turn()
            try:
                yield turn
            finally:
                held = self.clock() - start
                self._charge(key_id, held if turn.cost is None else turn.cost)
                self._release()
        finally:
            self._busy.discard(key_id)

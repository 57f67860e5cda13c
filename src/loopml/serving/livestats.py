"""Per-second request rate and latency of each variant in this process, for the status page.

Prometheus is the source of truth for dashboards; this is a small in-process window (the last
``window`` seconds) so that ``GET /`` can draw live charts without a Prometheus server. With several
workers each process counts its own requests (``/v1/status/live`` says which ``pid`` answered).
Everything runs on the event loop: no locks.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

__all__ = ["LiveStats"]

_MAX_SAMPLES = 2048  # latencies kept per second and variant (enough for a p99)


class _Second:
    __slots__ = ("count", "latencies", "sec")

    def __init__(self, sec: int) -> None:
        self.sec = sec
        self.count = 0
        self.latencies: list[float] = []


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


class LiveStats:
    """Requests per second and p99 latency per variant over a sliding window."""

    def __init__(self, window: int = 60) -> None:
        self.window = window
        self._series: dict[str, deque[_Second]] = {}

    def observe(self, variant: str, seconds: float, now: float | None = None) -> None:
        """Count one answer of ``variant`` that took ``seconds``."""
        sec = int(now if now is not None else time.time())
        series = self._series.get(variant)
        if series is None:
            series = self._series[variant] = deque()
        if not series or series[-1].sec != sec:
            series.append(_Second(sec))
            while series and series[0].sec <= sec - self.window:
                series.popleft()
        last = series[-1]
        last.count += 1
        if len(last.latencies) < _MAX_SAMPLES:
            last.latencies.append(seconds)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """``{"window_s", "end", "variants": {name: {"rps": [...], "p99_ms": [...], "total"}}}``:
        one value per second, oldest first, the current (incomplete) second excluded."""
        end = int(now if now is not None else time.time())  # exclusive
        start = end - self.window
        variants: dict[str, Any] = {}
        for name, series in self._series.items():
            by_sec = {s.sec: s for s in series if start <= s.sec < end}
            rps: list[int] = []
            p99: list[float | None] = []
            for sec in range(start, end):
                s = by_sec.get(sec)
                rps.append(s.count if s else 0)
                q = _p99(s.latencies) if s else None
                p99.append(round(q * 1000.0, 3) if q is not None else None)
            if any(rps):
                variants[name] = {"rps": rps, "p99_ms": p99, "total": sum(rps)}
        return {"window_s": self.window, "end": end, "variants": variants}

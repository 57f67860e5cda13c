"""Which model answers a request: a champion slot, a challenger slot, and the routing plan.

Each slot has its own model and batcher (so a slow or failing challenger never holds the champion's
model thread). The :class:`Plan` is the routing state this worker obeys now: the runtime's poller
rebuilds it from the ``routing_state`` row (see :mod:`loopml.routing`) and swaps it with one
reference assignment, so the per-request lookup is an in-memory read.

- ``none``: the champion answers everything.
- ``canary``: :func:`choose_variant` sends the ``weight`` share of request
  keys to the challenger (variant ``challenger``); a challenger failure is answered by the champion.
  The share is a keyed hash (BLAKE2b keyed with the server's routing secret) of the client's key:
  a client keeps its variant by sending the same ``X-Request-Key`` but cannot compute which keys
  land on the challenger.
- ``shadow``: the champion answers; the challenger scores the same texts off the request path
  (variant ``shadow``, request id = the champion's + ``:shadow``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from loopml.errors import JournalError, NotReadyError, OverloadedError, ServingError
from loopml.routing import CHALLENGER, CHAMPION, SHADOW, SHADOW_SUFFIX, Mode, Routing
from loopml.serving.batcher import Batcher, ModelCallError, QueueFullError, Result, new_ids
from loopml.serving.incidents import ErrorLog
from loopml.serving.livestats import LiveStats
from loopml.serving.loader import LoadedModel
from loopml.serving.metrics import Metrics

__all__ = ["CHALLENGER", "CHAMPION", "SHADOW", "Plan", "Router", "Slot", "choose_variant"]

_BUCKETS = 10_000


def choose_variant(routing: Routing, key: str, *, secret: bytes) -> str:
    """``challenger`` for the canary's share of keys (hash of ``key`` keyed with ``secret``),
    else ``champion``."""
    if routing.mode != "canary" or not routing.challenger or routing.weight <= 0:
        return CHAMPION
    # BLAKE2b takes a key of at most 64 bytes: longer secrets are hashed down first.
    mac_key = secret if len(secret) <= 64 else hashlib.blake2b(secret).digest()
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=mac_key).digest()
    bucket = int.from_bytes(digest, "big") % _BUCKETS
    return CHALLENGER if bucket < routing.weight * _BUCKETS else CHAMPION


@dataclass
class Slot:
    """A variant: the registry alias it falls back to, its current model and its batcher."""

    variant: str
    alias: str
    batcher: Batcher
    model: LoadedModel | None = None
    history: list[str] = field(default_factory=list)

    def swap(self, model: LoadedModel | None) -> LoadedModel | None:
        """Serve ``model`` from now on (one reference assignment: atomic for every request)."""
        old, self.model = self.model, model
        if model is not None and (old is None or old.version != model.version):
            self.history.append(model.version)
        return old


@dataclass(frozen=True)
class Plan:
    """What this worker obeys now: the effective mode and the challenger model that serves it
    (labelled ``challenger`` or ``shadow``); ``mode`` is ``none`` whenever it cannot be obeyed."""

    mode: Mode = "none"
    routing: Routing | None = None
    challenger: LoadedModel | None = None


_IDLE = Plan()


class Router:
    """Maps a request to a slot and answers it: canary, champion fallback, shadow scoring."""

    def __init__(
        self,
        champion: Slot,
        challenger: Slot,
        *,
        metrics: Metrics,
        live: LiveStats,
        errors: ErrorLog,
        secret: bytes,
    ) -> None:
        self.champion = champion
        self.secret = secret
        self.challenger = challenger
        self.slots = {champion.variant: champion, challenger.variant: challenger}
        self.plan = _IDLE
        self.metrics = metrics
        self.live = live
        self.errors = errors
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def pick(self) -> Slot:
        """The slot that answers requests pinned to no routing (the champion)."""
        return self.champion

    def canary_model(self, plan: Plan, key: str) -> LoadedModel | None:
        """The challenger's model when ``plan`` is a canary that sends ``key`` to it, else None."""
        if plan.mode != "canary" or plan.challenger is None or plan.routing is None:
            return None
        if choose_variant(plan.routing, key, secret=self.secret) != CHALLENGER:
            return None
        return plan.challenger

    @property
    def ready(self) -> bool:
        """Whether the champion has a model loaded."""
        return self.champion.model is not None

    async def answer(
        self, state: dict[str, Any], texts: list[str], *, pinned: bool = False
    ) -> Result:
        """Route, batch and answer ``texts``; labels the request (``state``) for the metrics.

        In a canary the request key (``state["request_key"]``: the ``X-Request-Key`` header, else
        the first request id) picks the variant; a failing or full challenger is answered by the
        champion. In shadow mode the challenger scores the champion's texts after the answer.
        ``pinned`` requests (a version in the path) are answered by the champion only.
        """
        plan = self.plan
        champion = self.champion.model
        if champion is None:
            raise NotReadyError(
                "no model is loaded yet: the registry alias 'champion' is not set or"
                " its model cannot be loaded"
            )
        ids = None
        if plan.mode == "canary" and not pinned:
            ids = new_ids(len(texts))
            result = await self._try_canary(plan, state, texts, ids)
            if result is not None:
                return result
        state["model_version"] = champion.version
        state["variant"] = CHAMPION
        try:
            result = await self.champion.batcher.submit(champion, texts, ids)
        except QueueFullError as exc:
            raise OverloadedError(f"overloaded: {exc}; retry later") from None
        except ModelCallError as exc:
            raise ServingError(str(exc)) from None
        if plan.mode == "shadow" and plan.challenger is not None:
            self.shadow(plan.challenger, texts, [a.request_id for a in result.answers])
        return result

    async def _try_canary(
        self, plan: Plan, state: dict[str, Any], texts: list[str], ids: list[str]
    ) -> Result | None:
        challenger = self.canary_model(plan, state.get("request_key") or ids[0])
        if challenger is None:
            return None
        try:
            result = await self.challenger.batcher.submit(challenger, texts, ids)
        except ModelCallError as exc:
            self.report_failure(challenger, len(texts), exc)
            return None
        except QueueFullError:
            return None  # the champion answers: a canary must never cost a request
        state["model_version"] = challenger.version
        state["variant"] = challenger.variant
        return result

    def report_failure(self, model: LoadedModel, texts: int, exc: ModelCallError) -> None:
        """Record a failed call of a challenger (it never fails a request)."""
        self.errors.report(model.version, model.variant, texts, exc.detail)

    def shadow(self, model: LoadedModel, texts: list[str], ids: list[str]) -> None:
        """Score ``texts`` with the shadow ``model`` after the champion answered them (ids of its
        answers): a task off the request path, skipped when the challenger's queue is full."""
        if not self.challenger.batcher.has_room(len(texts)):
            self.metrics.shadow_skipped.inc()
            return
        task = asyncio.get_running_loop().create_task(self._shadow(model, texts, ids))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, model: LoadedModel, texts: list[str], ids: list[str]) -> None:
        start = time.perf_counter()
        try:
            await self.challenger.batcher.submit(model, texts, [rid + SHADOW_SUFFIX for rid in ids])
        except (QueueFullError, JournalError):
            self.metrics.shadow_skipped.inc()
            return
        except ModelCallError as exc:
            self.report_failure(model, len(texts), exc)
            return
        self.live.observe(SHADOW, time.perf_counter() - start)

    async def close(self, shadow_drain_s: float) -> None:
        """Finish shadow scoring (up to ``shadow_drain_s``), then answer what the batchers hold."""
        if self._shadow_tasks:
            await asyncio.wait(set(self._shadow_tasks), timeout=shadow_drain_s)
        for slot in self.slots.values():
            await slot.batcher.close()

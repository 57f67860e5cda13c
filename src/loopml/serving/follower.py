"""The model follower: reads the routing state, loads what it names, swaps the router's plan.

Every ``routing_poll_s`` it reads the ``routing_state`` row; without a champion in it, it follows
the registry alias ``champion`` (checked every ``reload_interval_s``). Models load and warm up off
the event loop; a failed load keeps the old model serving and is not retried for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from loopml.config import Settings
from loopml.errors import LoopmlError
from loopml.routing import CHALLENGER, CHAMPION, SHADOW, Routing, effective_mode, load_routing
from loopml.serving.incidents import ErrorLog
from loopml.serving.loader import LoadedModel, ModelLoader
from loopml.serving.metrics import Metrics
from loopml.serving.router import Plan, Router
from loopml.store import Store

__all__ = ["ModelFollower"]

log = logging.getLogger("loopml.serving")


class ModelFollower:
    """Keeps the router's models and plan equal to the routing state (or the registry alias)."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        loader: ModelLoader,
        metrics: Metrics,
        errors: ErrorLog,
        on_load: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        #: called after each model this follower loads (the model set keeps its byte limit)
        self.on_load = on_load
        self.router = router
        self.loader = loader
        self.metrics = metrics
        self.errors = errors
        self.store: Store | None = None
        self.last_reload: dict[str, Any] | None = None
        # The routing row as last read (None: never read), and why the last read failed.
        self.routing: Routing | None = None
        self.routing_read_at: float | None = None
        self.routing_error: str | None = None
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        # (variant, version) -> monotonic time before which a failed load is not retried.
        self._retry_at: dict[tuple[str, str], float] = {}
        self._next_alias_check = 0.0

    def start(self, store: Store) -> None:
        """Follow ``store``'s routing state from now on (a task on the running loop)."""
        self.store = store
        self._lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._follow(), name="loopml-follow")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def resume(self) -> None:
        """Load what the routing state names now, then follow it again (after :meth:`stop`:
        a model unloaded to make room, asked for again)."""
        assert self.store is not None, "follower not started"
        await self.sync(force=True)
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._follow(), name="loopml-follow")

    async def _follow(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:  # never let the follower die
                log.error("routing follower: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.settings.routing_poll_s)

    def _read_routing(self) -> None:
        assert self.store is not None
        try:
            routing = load_routing(self.store, self.settings.model_name)
        except LoopmlError as exc:
            if self.routing_error is None:
                log.warning("cannot read the routing state (keeping the last one): %s", exc)
            self.routing_error = str(exc)
            return
        if self.routing_error is not None:
            log.info("routing state readable again")
        self.routing, self.routing_read_at, self.routing_error = routing, time.time(), None

    async def sync(self, *, force: bool = False) -> dict[str, Any] | None:
        """Read the routing state, load what it names (champion, challenger) and swap the plan.

        ``force`` (the admin reload) checks the registry alias now and retries failed loads.
        Returns what the champion reload did when one was attempted, else None.
        """
        assert self._lock is not None, "follower not started"
        await asyncio.to_thread(self._read_routing)
        async with self._lock:
            out = await self._sync_champion(force)
            await self._sync_challenger(force)
            self._replan()
        return out

    async def reload(self) -> dict[str, Any]:
        """Follow the routing state and the registry alias now (the admin reload)."""
        out = await self.sync(force=True)
        if out is None:  # nothing to check: report the champion as it is
            current = self.router.champion.model
            version = current.version if current else None
            out = {"variant": CHAMPION, "previous": version, "version": version, "error": None}
            out["result"] = "unchanged" if version else "no_alias"
        return out

    async def _champion_target(self, force: bool) -> tuple[str | None, str]:
        """(version the champion should be, where that came from) or (None, reason)."""
        routing = self.routing
        if routing is not None and routing.champion:
            return routing.champion, "routing"
        now = time.monotonic()
        if not force and now < self._next_alias_check:
            return None, "wait"
        self._next_alias_check = now + self.settings.reload_interval_s
        version = await asyncio.to_thread(self.loader.resolve, CHAMPION)
        return version, "alias"

    async def _sync_champion(self, force: bool) -> dict[str, Any] | None:
        slot = self.router.champion
        current = slot.model.version if slot.model else None
        out: dict[str, Any] = {
            "variant": CHAMPION,
            "previous": current,
            "version": current,
            "error": None,
        }
        try:
            target, source = await self._champion_target(force)
            if source == "wait":
                return None
            if target is None:
                out["result"] = "no_alias"
                out["error"] = f"no version holds the alias {slot.alias!r} yet"
            elif target == current:
                if source == "routing" and not force:
                    return None  # the routing row is read every second: not a reload
                out["result"] = "unchanged"
            elif not force and self._backing_off(CHAMPION, target):
                return None
            else:
                await self._swap_champion(target, source, current)
                out.update(result="loaded", version=target)
        except LoopmlError as exc:
            log.error("reload of the champion failed, still serving %s: %s", current, exc)
            out.update(result="failed", error=str(exc))
        except Exception as exc:  # never let a bad model take the follower down
            log.error(
                "reload of the champion failed, still serving %s: %s", current, type(exc).__name__
            )
            out.update(result="failed", error=f"{type(exc).__name__}: {exc}")
        self.metrics.reloads.labels(out["result"], self.settings.model_name).inc()
        self.last_reload = {**out, "ts": time.time()}
        return out

    async def _swap_champion(self, target: str, source: str, current: str | None) -> None:
        held = self.router.challenger.model
        if held is not None and held.version == target:
            # A promoted challenger: already loaded and warm here, serve it at once.
            model = dataclasses.replace(held, variant=CHAMPION, loaded_at=time.time())
        else:
            model = await self._load(target, CHAMPION)
        self.router.champion.swap(model)
        self.metrics.set_model(model.name, CHAMPION, model.version, current, model.loaded_at)
        log.info(
            "serving %s version %s as champion (was %s; from the %s)",
            model.name,
            target,
            current,
            "routing state" if source == "routing" else "registry alias",
        )

    def _backing_off(self, variant: str, version: str) -> bool:
        until = self._retry_at.get((variant, version))
        return until is not None and time.monotonic() < until

    async def _load(self, version: str, variant: str) -> LoadedModel:
        """Load and warm up ``version`` off the loop; a failure is not retried for
        ``reload_interval_s`` (unless forced)."""
        try:
            model = await asyncio.to_thread(self.loader.load, version, variant)
        except Exception:
            self._retry_at[(variant, version)] = time.monotonic() + self.settings.reload_interval_s
            raise
        self._retry_at.pop((variant, version), None)
        if self.on_load is not None:
            self.on_load()
        # Move the long-lived heap (MLflow, sklearn, the model) out of the collector's reach:
        # full collections of it stalled requests for ~200 ms (p99, measured).
        gc.collect()
        gc.freeze()
        return model

    def _wanted_challenger(self) -> tuple[str | None, str]:
        """(challenger version to hold, its variant label) per the routing row."""
        routing = self.routing
        if routing is None or routing.mode == "none" or not routing.challenger:
            return None, CHALLENGER
        return routing.challenger, SHADOW if routing.mode == "shadow" else CHALLENGER

    async def _sync_challenger(self, force: bool) -> None:
        slot = self.router.challenger
        want, label = self._wanted_challenger()
        held = slot.model
        if want is None:
            if held is not None:
                slot.swap(None)
                self.metrics.unset_model(held.name, held.variant, held.version)
                log.info("challenger version %s no longer serves", held.version)
            return
        if held is not None and held.version == want:
            if held.variant != label:  # a new rollout of the same version in the other mode
                slot.swap(dataclasses.replace(held, variant=label))
                self.metrics.unset_model(held.name, held.variant, held.version)
                self.metrics.set_model(held.name, label, want, None, held.loaded_at)
            return
        if not force and self._backing_off(CHALLENGER, want):
            return
        try:
            model = await self._load(want, label)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, LoopmlError) else f"{type(exc).__name__}: {exc}"
            log.error("challenger version %s cannot serve: %s", want, reason)
            # The rollout analysis counts this: the controller rolls back instead of waiting.
            self.errors.report(want, label, 1, f"load failed: {reason}")
            self.metrics.reloads.labels("failed", self.settings.model_name).inc()
            return
        old = slot.swap(model)
        if old is not None:
            self.metrics.unset_model(old.name, old.variant, old.version)
        self.metrics.set_model(model.name, label, model.version, None, model.loaded_at)
        self.metrics.reloads.labels("loaded", self.settings.model_name).inc()
        log.info("challenger version %s loaded for %s", want, label)

    def _replan(self) -> None:
        """Swap in the plan the current routing row asks for, as far as it can be obeyed."""
        routing = self.routing
        if routing is None:
            self.router.plan = Plan()
            return
        mode = effective_mode(routing, self.settings.rollout_lease_s)
        challenger = self.router.challenger.model
        if mode == "none" or challenger is None or challenger.version != routing.challenger:
            self.router.plan = Plan("none", routing, None)
        else:
            self.router.plan = Plan(mode, routing, challenger)

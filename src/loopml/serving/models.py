"""The model set: every model one server serves, each in a slot of its own.

A :class:`Served` is one model: its router (champion and challenger slots, each with a batcher;
canary or shadow), the follower of its routing row and registry alias (hot reload), its error log
and the label set it answers with. A :class:`ModelSet` holds them by name: the default model
(``LOOPML_MODEL_NAME``, answering ``/v1/predict``) and those ``LOOPML_MODELS`` names (``*``: every
registered model with a champion alias, resolved at start).

Memory: with ``LOOPML_MAX_LOADED_MODEL_BYTES`` set, the artifact bytes of loaded models (champion
and challenger) stay under it. After every load the least recently used idle model (no request
in flight) other than the default is unloaded until they do; a request to an unloaded model loads
it again (concurrent first requests wait for one load), after evicting what its last known size
needs. A model's size is the sum of its verified artifact files (known at load, deterministic):
the in-memory size of a pickled scikit-learn model is close to it, while an RSS delta is noise
under concurrent loads and allocator reuse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from loopml.config import Settings, routing_secret
from loopml.errors import LoopmlError, NotFoundError
from loopml.routing import CHALLENGER, CHAMPION
from loopml.serving.batcher import Batcher
from loopml.serving.bounds import brief
from loopml.serving.follower import ModelFollower
from loopml.serving.incidents import ErrorLog
from loopml.serving.livestats import LiveStats
from loopml.serving.loader import ModelLoader
from loopml.serving.metrics import Metrics
from loopml.serving.router import Plan, Router, Slot

if TYPE_CHECKING:
    from loopml.serving.predlog import PredictionLog
    from loopml.store import Store

__all__ = ["ModelSet", "Served", "resolve_all"]

log = logging.getLogger("loopml.serving")


class Served:
    """One served model: router, batchers, follower, error log, label set, use and size."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        live: LiveStats,
        on_load: ModelSet | None = None,
    ) -> None:
        self.name = settings.model_name
        self.settings = settings
        self.metrics = metrics
        self.errors = ErrorLog(self.name, metrics)
        self.loader = ModelLoader(settings, metrics)
        self.router = Router(
            Slot(CHAMPION, CHAMPION, self._batcher()),
            Slot(CHALLENGER, CHALLENGER, self._batcher()),
            metrics=metrics,
            live=live,
            errors=self.errors,
            secret=routing_secret(settings),
        )
        hook = (lambda: on_load.loaded(self)) if on_load is not None else None
        self.follower = ModelFollower(
            settings, self.router, self.loader, metrics, self.errors, on_load=hook
        )
        #: requests answering now (an unload waits for none), and when one last started
        self.in_flight = 0
        self.last_used = 0.0
        #: False once unloaded; the next request loads it again
        self.active = True
        #: the size of the models it held when last loaded (what a reload will need)
        self.last_bytes = 0
        # the classes of its last champion (its label set is known while unloaded too)
        self._classes: tuple[str, ...] = ()
        self._lock = asyncio.Lock()

    def _batcher(self) -> Batcher:
        s = self.settings
        return Batcher(
            self.metrics,
            None,  # the prediction log is given at start
            max_batch_size=s.max_batch_size,
            max_queue_size=s.max_queue_size,
            gather=s.max_batch_wait_ms > 0,
            log_text=s.log_text,
        )

    def start(self, store: Store, predlog: PredictionLog) -> None:
        """Start batchers (journaling into ``predlog``), the error writer and the follower."""
        self.loader.store = store  # the recorded artifact hashes are read from it
        self.errors.start(store)
        for slot in self.router.slots.values():
            slot.batcher.start(predlog)
        self.follower.start(store)

    async def stop(self, shadow_drain_s: float) -> None:
        """Stop following, finish shadow scoring, answer what is queued, flush the error log."""
        await self.follower.stop()
        await self.router.close(shadow_drain_s)
        await self.errors.close()

    @property
    def size_bytes(self) -> int:
        """Artifact bytes of the models it holds now (a promoted challenger counted once)."""
        held = {m.version: m.size_bytes for s in self.router.slots.values() if (m := s.model)}
        return sum(held.values())

    @property
    def loaded(self) -> bool:
        """Whether its champion is loaded."""
        return self.router.champion.model is not None

    @property
    def idle(self) -> bool:
        """Whether no request is answering with it."""
        return self.in_flight == 0 and not self._lock.locked()

    def remember(self) -> None:
        """Keep its size and label set (what a reload needs, and metadata while unloaded)."""
        if self.size_bytes:
            self.last_bytes = self.size_bytes
        champion = self.router.champion.model
        if champion is not None:
            self._classes = champion.classes

    @property
    def classes(self) -> tuple[str, ...]:
        """Its label set: the champion's classes, or the last champion's while unloaded."""
        champion = self.router.champion.model
        return champion.classes if champion is not None else self._classes

    async def ensure(self) -> float:
        """Load it again if it was unloaded (concurrent callers wait for one load); the seconds
        the load took for the caller that did it, else 0."""
        if self.active:
            return 0.0
        async with self._lock:
            if self.active:
                return 0.0  # another request loaded it meanwhile
            start = time.perf_counter()
            await self.follower.resume()
            self.active = True
            return time.perf_counter() - start

    async def unload(self) -> bool:
        """Drop its models and stop following (False if a request came in meanwhile)."""
        if not self.idle or not self.active:
            return False
        async with self._lock:
            if self.in_flight or not self.active:
                return False
            self.remember()
            self.active = False
            router = self.router
            router.plan = Plan()
            for slot in router.slots.values():
                held = slot.swap(None)
                if held is not None:
                    self.metrics.unset_model(held.name, held.variant, held.version)
            await self.follower.stop()
        return True


def resolve_all(settings: Settings) -> list[str]:
    """Every registered model with a version holding the ``champion`` alias (``*``): paged
    through the registry like the controller's fleet does."""
    from loopml.registry import Registry

    return Registry(settings).models_with(CHAMPION)


class ModelSet:
    """The served models by name; the default one is always loaded and never unloaded."""

    def __init__(self, settings: Settings, metrics: Metrics, live: LiveStats) -> None:
        self.settings = settings
        self.metrics = metrics
        self.live = live
        self.default_name = settings.model_name
        self.max_bytes = settings.max_loaded_model_bytes
        self._by_name: dict[str, Served] = {}
        self._enforcing: asyncio.Task[None] | None = None
        for name in settings.served_models:
            self.add(name)

    def add(self, name: str) -> Served:
        """Serve model ``name`` too (before start), with its ``[models.NAME]`` settings."""
        if name not in self._by_name:
            own = self.settings.for_model(name)
            self._by_name[name] = Served(own, self.metrics, self.live, on_load=self)
        return self._by_name[name]

    @property
    def default(self) -> Served:
        """The default model (``LOOPML_MODEL_NAME``)."""
        return self._by_name[self.default_name]

    @property
    def names(self) -> list[str]:
        """The served names, the default first."""
        return list(self._by_name)

    def all(self) -> list[Served]:
        """Every served model, the default first."""
        return list(self._by_name.values())

    def get(self, name: str) -> Served:
        """The served model ``name``; 404 naming the served ones otherwise."""
        served = self._by_name.get(name)
        if served is None:
            names = ", ".join(repr(n) for n in self._by_name)
            raise NotFoundError(f"unknown model {brief(name)}: this server serves {names}")
        return served

    async def start(self, store: Store, predlog: PredictionLog) -> None:
        """Resolve ``*``, then start every model (each loads in its follower's task)."""
        if "*" in self.settings.models:
            try:
                names = await asyncio.to_thread(resolve_all, self.settings)
            except LoopmlError as exc:
                log.error("cannot list the registered models for LOOPML_MODELS=*: %s", exc)
                names = []
            except Exception as exc:  # MLflow's own errors: serve the default model anyway
                log.error("cannot list the registered models: %s: %s", type(exc).__name__, exc)
                names = []
            for name in names:
                self.add(name)
        for served in self.all():
            served.start(store, predlog)
        self._count()

    async def stop(self, shadow_drain_s: float) -> None:
        """Stop every model (its queued requests answered)."""
        if self._enforcing is not None:
            self._enforcing.cancel()
        for served in self.all():
            await served.stop(shadow_drain_s)

    @property
    def loaded_bytes(self) -> int:
        """Artifact bytes of every loaded model."""
        return sum(s.size_bytes for s in self.all())

    def loaded(self, served: Served) -> None:
        """A follower of ``served`` just loaded a model: once it is swapped in (the follower
        swaps it in the same step of the loop), count it and keep the byte limit."""
        asyncio.get_running_loop().call_soon(self._settle, served)

    def _settle(self, served: Served) -> None:
        served.remember()
        self._count()
        if self.max_bytes <= 0 or self.loaded_bytes <= self.max_bytes:
            return
        task = self._enforcing
        if task is None or task.done():
            self._enforcing = asyncio.get_running_loop().create_task(self.enforce())

    async def enforce(self, keep: Served | None = None, need: int = 0) -> None:
        """Unload least recently used idle models (never the default nor ``keep``) until the
        loaded bytes plus ``need`` are within the limit."""
        if self.max_bytes > 0:
            order = sorted(
                (s for s in self.all() if s.name != self.default_name and s is not keep),
                key=lambda s: s.last_used,
            )
            for victim in order:
                if self.loaded_bytes + need <= self.max_bytes:
                    break
                if victim.active and victim.loaded and await victim.unload():
                    self.metrics.model_unloads.labels(victim.name).inc()
                    log.info(
                        "model %s unloaded (%d bytes loaded, limit %d)",
                        victim.name,
                        self.loaded_bytes,
                        self.max_bytes,
                    )
        self._count()

    async def acquire(self, name: str) -> Served:
        """The served model ``name``, loaded again first if it was unloaded; the caller holds
        it (``in_flight``) until :meth:`release`."""
        served = self.get(name)
        if not served.active:
            await self.enforce(keep=served, need=served.last_bytes)
            waited = await served.ensure()
            if waited > 0:
                self.metrics.cold_load.observe(waited)
        served.in_flight += 1
        served.last_used = time.monotonic()
        return served

    @staticmethod
    def release(served: Served) -> None:
        """The request holding ``served`` is done."""
        served.in_flight -= 1

    def _count(self) -> None:
        self.metrics.models_loaded.set(sum(1 for s in self.all() if s.loaded))

"""The state of one serving worker: models, routing, batchers, prediction log, store; start,
follow the routing state and the registry, stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from loopml.config import Settings
from loopml.control.live import SHADOW_SUFFIX
from loopml.control.routing import Routing, effective_mode, lease_expired, load_routing
from loopml.errors import LoopmlError, StoreError
from loopml.serving._http import HttpError
from loopml.serving.auth import Guard
from loopml.serving.batcher import Batcher, ModelCallError, QueueFullError
from loopml.serving.incidents import ErrorLog
from loopml.serving.livestats import LiveStats
from loopml.serving.loader import LoadedModel, ModelLoader
from loopml.serving.metrics import Metrics
from loopml.serving.predlog import PredictionLog, find_in_spool
from loopml.serving.router import CHALLENGER, CHAMPION, SHADOW, Plan, Router, Slot
from loopml.store import Store
from loopml.store.models import Feedback, Prediction

__all__ = ["Runtime"]

log = logging.getLogger("loopml.serving")

_DRAIN_TIMEOUT_S = 15.0
_SHADOW_DRAIN_S = 5.0


class Runtime:
    """Everything a worker serves with; created by the app factory, started by its lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.live = LiveStats()
        self.guard = Guard(settings)
        self.loader = ModelLoader(settings)
        self.errors = ErrorLog(settings.model_name, self.metrics)
        self.store: Store | None = None
        self.predlog: PredictionLog | None = None
        self.router = Router(
            Slot(CHAMPION, CHAMPION, self._batcher(None)),
            Slot(CHALLENGER, CHALLENGER, self._batcher(None)),
        )
        self.started_at = time.time()
        self.last_reload: dict[str, Any] | None = None
        # The routing row as last read (None: never read), and why the last read failed.
        self.routing: Routing | None = None
        self.routing_read_at: float | None = None
        self.routing_error: str | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        # (variant, version) -> monotonic time before which a failed load is not retried.
        self._retry_at: dict[tuple[str, str], float] = {}
        self._next_alias_check = 0.0

    def _batcher(self, predlog: PredictionLog | None) -> Batcher:
        s = self.settings
        return Batcher(
            self.metrics,
            predlog,
            max_batch_size=s.max_batch_size,
            max_queue_size=s.max_queue_size,
            gather=s.max_batch_wait_ms > 0,
            log_text=s.log_text,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and the prediction log, start batchers, the error writer and the
        follower of the routing state and the registry."""
        self.settings.prepare()
        engine, migrated = await asyncio.to_thread(self._open_store)
        self.predlog = PredictionLog(
            self.settings.spool_dir,
            engine,
            self.metrics,
            batch_size=self.settings.predlog_batch_size,
            flush_interval_s=self.settings.predlog_flush_interval_s,
            migrate=not migrated,
        )
        self.predlog.start()
        assert self.store is not None
        self.errors.start(self.store)
        self._reload_lock = asyncio.Lock()
        for slot in self.router.slots.values():
            slot.batcher = self._batcher(self.predlog)
            slot.batcher.start()
        self._follow_task = asyncio.get_running_loop().create_task(
            self._follow(), name="loopml-follow"
        )

    def _open_store(self) -> tuple[Engine, bool]:
        from loopml.store import open_store
        from loopml.store._db import make_engine

        try:
            self.store = open_store(self.settings.db_url)
            return self.store.engine, True
        except StoreError as exc:
            # Serve anyway: records wait on the spool and the writer migrates once the DB is back.
            log.warning("loopml database unavailable at start (%s): spooling predictions", exc)
            engine = make_engine(self.settings.db_url)
            self.store = Store(engine)
            return engine, False

    async def stop(self) -> None:
        """Stop following, finish shadow scoring, answer queued requests, drain the prediction
        log and the error rows, release everything."""
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
        if self._shadow_tasks:
            await asyncio.wait(set(self._shadow_tasks), timeout=_SHADOW_DRAIN_S)
        for slot in self.router.slots.values():
            await slot.batcher.close()
        await self.errors.close()
        if self.predlog is not None:
            await asyncio.to_thread(self.predlog.drain, _DRAIN_TIMEOUT_S)
        if self.store is not None:
            self.store.dispose()
        self.metrics.process_exit()

    async def _follow(self) -> None:
        """Obey the routing row (read every ``routing_poll_s``); without a champion in it, follow
        the registry alias (checked every ``reload_interval_s``)."""
        while True:
            try:
                await self.sync()
            except Exception as exc:  # never let the follower die
                log.error("routing follower: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.settings.routing_poll_s)

    # -- routing and models --------------------------------------------------------------------

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
        assert self._reload_lock is not None, "runtime not started"
        await asyncio.to_thread(self._read_routing)
        async with self._reload_lock:
            out = await self._sync_champion(force)
            await self._sync_challenger(force)
            self._replan()
        return out

    async def reload(self, variant: str = CHAMPION) -> dict[str, Any]:
        """Follow the routing state and the registry alias now (the admin reload)."""
        out = await self.sync(force=True)
        if out is None:  # nothing to check: report the champion as it is
            current = self.router.champion.model
            version = current.version if current else None
            out = {"variant": variant, "previous": version, "version": version, "error": None}
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
                held = self.router.challenger.model
                if held is not None and held.version == target:
                    # A promoted challenger: already loaded and warm here, serve it at once.
                    model = dataclasses.replace(held, variant=CHAMPION, loaded_at=time.time())
                else:
                    model = await self._load(target, CHAMPION)
                slot.swap(model)
                self.metrics.set_model(
                    model.name, CHAMPION, model.version, current, model.loaded_at
                )
                log.info(
                    "serving %s version %s as champion (was %s; from the %s)",
                    model.name,
                    target,
                    current,
                    "routing state" if source == "routing" else "registry alias",
                )
                out.update(result="loaded", version=target)
        except LoopmlError as exc:
            log.error("reload of the champion failed, still serving %s: %s", current, exc)
            out.update(result="failed", error=str(exc))
        except Exception as exc:  # never let a bad model take the follower down
            log.error(
                "reload of the champion failed, still serving %s: %s", current, type(exc).__name__
            )
            out.update(result="failed", error=f"{type(exc).__name__}: {exc}")
        self.metrics.reloads.labels(out["result"]).inc()
        self.last_reload = {**out, "ts": time.time()}
        return out

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
            self.metrics.reloads.labels("failed").inc()
            return
        old = slot.swap(model)
        if old is not None:
            self.metrics.unset_model(old.name, old.variant, old.version)
        self.metrics.set_model(model.name, label, model.version, None, model.loaded_at)
        self.metrics.reloads.labels("loaded").inc()
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

    # -- answering -----------------------------------------------------------------------------

    def report_failure(self, model: LoadedModel, texts: int, exc: ModelCallError) -> None:
        """Record a failed call of a challenger (it never fails a request)."""
        self.errors.report(model.version, model.variant, texts, exc.detail)

    def shadow(self, model: LoadedModel, texts: list[str], ids: list[str]) -> None:
        """Score ``texts`` with the shadow ``model`` after the champion answered them (ids of its
        answers): a task off the request path, skipped when the challenger's queue is full."""
        batcher = self.router.challenger.batcher
        if not batcher.has_room(len(texts)):
            self.metrics.shadow_skipped.inc()
            return
        task = asyncio.get_running_loop().create_task(self._shadow(model, texts, ids))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(self, model: LoadedModel, texts: list[str], ids: list[str]) -> None:
        start = time.perf_counter()
        try:
            await self.router.challenger.batcher.submit(
                model, texts, [rid + SHADOW_SUFFIX for rid in ids]
            )
        except QueueFullError:
            self.metrics.shadow_skipped.inc()
            return
        except ModelCallError as exc:
            self.report_failure(model, len(texts), exc)
            return
        self.live.observe(SHADOW, time.perf_counter() - start)

    # -- feedback ------------------------------------------------------------------------------

    def record_feedback(self, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Store true labels for known predictions (all or nothing); HttpError for bad items."""
        if self.store is None or self.predlog is None:
            raise HttpError(503, "the server is not started")
        ids = [rid for rid, _ in items]
        if len(set(ids)) != len(ids):
            raise HttpError(422, "each request_id may appear only once per feedback request")
        try:
            known = self._lookup(ids)
        except StoreError as exc:
            raise HttpError(
                503, "the loopml database is unavailable; retry later", {"Retry-After": "5"}
            ) from exc
        unknown = [rid for rid in ids if rid not in known]
        if unknown:
            self.metrics.feedback.labels("unknown_id").inc(len(unknown))
            raise HttpError(
                404,
                f"unknown request_id(s): {', '.join(unknown[:10])}"
                " (ids come from POST /v1/predict answers)",
            )
        bad = [(rid, label) for rid, label in items if label not in known[rid][1]]
        if bad:
            self.metrics.feedback.labels("invalid_label").inc(len(bad))
            rid, label = bad[0]
            raise HttpError(
                422,
                f"label {label!r} for request_id {rid} is not one of the model's"
                f" classes {sorted(known[rid][1])}",
            )
        self._store_feedback(items)
        self.metrics.feedback.labels("accepted").inc(len(items))
        return [
            {
                "request_id": rid,
                "label": label,
                "predicted": known[rid][0],
                "correct": known[rid][0] == label,
            }
            for rid, label in items
        ]

    def _lookup(self, ids: list[str]) -> dict[str, tuple[str, list[str]]]:
        """request id -> (predicted label, classes), from the database, else the spool."""
        assert self.store is not None
        found: dict[str, tuple[str, list[str]]] = {}
        with self.store.session() as session:
            query = select(Prediction.request_id, Prediction.label, Prediction.probabilities)
            for rid, label, probs in session.execute(query.where(Prediction.request_id.in_(ids))):
                found[rid] = (label, list(probs))
        missing = [rid for rid in ids if rid not in found]
        if missing:
            for rid, rec in find_in_spool(self.settings.spool_dir, missing).items():
                found[rid] = (rec["label"], list(rec["probabilities"]))
        return found

    def _store_feedback(self, items: list[tuple[str, str]]) -> None:
        assert self.store is not None
        dialect = postgresql if self.store.engine.dialect.name == "postgresql" else sqlite
        now = datetime.now(UTC)
        rows = [{"request_id": rid, "ts": now, "label": label} for rid, label in items]
        stmt = dialect.insert(Feedback.__table__)
        # A later label for the same prediction corrects the earlier one.
        stmt = stmt.on_conflict_do_update(
            index_elements=["request_id"],
            set_={"label": stmt.excluded.label, "ts": stmt.excluded.ts},
        )
        try:
            with self.store.session() as session:
                session.execute(stmt, rows)
        except StoreError as exc:
            self.metrics.feedback.labels("error").inc(len(items))
            raise HttpError(
                503, "the loopml database is unavailable; retry later", {"Retry-After": "5"}
            ) from exc

    # -- status --------------------------------------------------------------------------------

    def routing_status(self) -> dict[str, Any]:
        """The routing state this worker follows and what it obeys now (JSON-ready)."""
        routing = self.routing
        plan = self.router.plan
        champion = self.router.champion.model
        challenger = plan.challenger
        out: dict[str, Any] = {
            "source": "routing_state" if routing is not None and routing.champion else "alias",
            "champion": routing.champion if routing is not None else None,
            "challenger": routing.challenger if routing is not None else None,
            "mode": routing.mode if routing is not None else "none",
            "weight": routing.weight if routing is not None else 0.0,
            "effective_mode": plan.mode,
            "effective_weight": plan.routing.weight
            if plan.mode == "canary" and plan.routing
            else 0.0,
            "serving": {
                CHAMPION: champion.version if champion else None,
                CHALLENGER: challenger.version if challenger else None,
            },
            "lease_expired": (
                lease_expired(routing, self.settings.rollout_lease_s) if routing else False
            ),
            "updated_at": routing.updated_at.isoformat()
            if routing is not None and routing.updated_at
            else None,
            "read_at": self.routing_read_at,
            "error": self.routing_error,
            "rollout": None,
        }
        rollout = routing.rollout if routing is not None else None
        if rollout is not None:
            out["rollout"] = {
                key: rollout.get(key)
                for key in (
                    "id",
                    "mode",
                    "step",
                    "steps",
                    "started_at",
                    "step_started_at",
                    "heartbeat_at",
                    "source",
                    "reason",
                )
            }
        return out

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot for ``/v1/status``."""
        s = self.settings
        models = {
            name: {
                "version": slot.model.version,
                "variant": slot.model.variant,
                "alias": slot.alias,
                "classes": list(slot.model.classes),
                "loaded_at": slot.model.loaded_at,
                "versions_served": slot.history[-10:],
            }
            for name, slot in self.router.slots.items()
            if slot.model is not None
        }
        return {
            "ready": self.router.ready,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "model_name": s.model_name,
            "models": models,
            "routing": self.routing_status(),
            "queue_depth": sum(sl.batcher.queued for sl in self.router.slots.values()),
            "predlog": self.predlog.status() if self.predlog else {},
            "serving_errors": self.errors.status(),
            "limits": {
                "max_batch_size": s.max_batch_size,
                "max_queue_size": s.max_queue_size,
                "max_text_chars": s.max_text_chars,
                "max_texts_per_request": s.max_texts_per_request,
                "max_body_bytes": s.max_body_bytes,
                "reload_interval_s": s.reload_interval_s,
                "routing_poll_s": s.routing_poll_s,
                "rollout_lease_s": s.rollout_lease_s,
                "log_text": s.log_text,
                "api_keys_required": self.guard.keys_required,
            },
            "last_reload": self.last_reload,
        }

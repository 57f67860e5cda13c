"""The state of one serving worker: models, batchers, prediction log, store; start, reload, stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from loopml.config import Settings
from loopml.errors import LoopmlError, StoreError
from loopml.serving._http import HttpError
from loopml.serving.auth import Guard
from loopml.serving.batcher import Batcher
from loopml.serving.loader import ModelLoader
from loopml.serving.metrics import Metrics
from loopml.serving.predlog import PredictionLog, find_in_spool
from loopml.serving.router import CHAMPION, Router, Slot
from loopml.store import Store
from loopml.store.models import Feedback, Prediction

__all__ = ["Runtime"]

log = logging.getLogger("loopml.serving")

_DRAIN_TIMEOUT_S = 15.0


class Runtime:
    """Everything a worker serves with; created by the app factory, started by its lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.guard = Guard(settings)
        self.loader = ModelLoader(settings)
        self.store: Store | None = None
        self.predlog: PredictionLog | None = None
        self.router = Router([Slot(CHAMPION, CHAMPION, self._batcher(None))])
        self.started_at = time.time()
        self.last_reload: dict[str, Any] | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._follow_task: asyncio.Task[None] | None = None

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
        """Open the store and the prediction log, start batchers and the registry follower."""
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
        """Stop following, answer queued requests, drain the prediction log, release everything."""
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
        for slot in self.router.slots.values():
            await slot.batcher.close()
        if self.predlog is not None:
            await asyncio.to_thread(self.predlog.drain, _DRAIN_TIMEOUT_S)
        if self.store is not None:
            self.store.dispose()
        self.metrics.process_exit()

    async def _follow(self) -> None:
        while True:
            for slot in list(self.router.slots.values()):
                await self.reload(slot.variant)
            await asyncio.sleep(self.settings.reload_interval_s)

    # -- models --------------------------------------------------------------------------------

    async def reload(self, variant: str = CHAMPION) -> dict[str, Any]:
        """Load the version the slot's alias names now, if it changed; the old model keeps serving
        when the new one cannot be loaded or warmed up."""
        assert self._reload_lock is not None, "runtime not started"
        slot = self.router.slots[variant]
        async with self._reload_lock:
            current = slot.model.version if slot.model else None
            out: dict[str, Any] = {
                "variant": variant,
                "previous": current,
                "version": current,
                "error": None,
            }
            try:
                version = await asyncio.to_thread(self.loader.resolve, slot.alias)
                if version is None:
                    out["result"] = "no_alias"
                    out["error"] = f"no version holds the alias {slot.alias!r} yet"
                elif version == current:
                    out["result"] = "unchanged"
                else:
                    model = await asyncio.to_thread(self.loader.load, version, variant)
                    slot.swap(model)
                    self.metrics.set_model(
                        model.name, variant, model.version, current, model.loaded_at
                    )
                    log.info(
                        "serving %s version %s as %s (was %s)",
                        model.name,
                        version,
                        variant,
                        current,
                    )
                    out.update(result="loaded", version=version)
                    # Move the long-lived heap (MLflow, sklearn, the model) out of the collector's
                    # reach: full collections of it stalled requests for ~200 ms (p99, measured).
                    gc.collect()
                    gc.freeze()
            except LoopmlError as exc:
                log.error("reload of %s failed, still serving %s: %s", variant, current, exc)
                out.update(result="failed", error=str(exc))
            except Exception as exc:  # never let a bad model take the follower down
                log.error(
                    "reload of %s failed, still serving %s: %s",
                    variant,
                    current,
                    type(exc).__name__,
                )
                out.update(result="failed", error=f"{type(exc).__name__}: {exc}")
        self.metrics.reloads.labels(out["result"]).inc()
        self.last_reload = {**out, "ts": time.time()}
        return out

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

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot for ``/v1/status``."""
        s = self.settings
        models = {
            name: {
                "version": slot.model.version,
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
            "queue_depth": sum(sl.batcher.queued for sl in self.router.slots.values()),
            "predlog": self.predlog.status() if self.predlog else {},
            "limits": {
                "max_batch_size": s.max_batch_size,
                "max_queue_size": s.max_queue_size,
                "max_text_chars": s.max_text_chars,
                "max_texts_per_request": s.max_texts_per_request,
                "max_body_bytes": s.max_body_bytes,
                "reload_interval_s": s.reload_interval_s,
                "log_text": s.log_text,
                "api_keys_required": self.guard.keys_required,
            },
            "last_reload": self.last_reload,
        }

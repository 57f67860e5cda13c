"""The lifecycle of one serving worker: builds its parts, starts them, stops and drains them.

The parts: the :class:`~loopml.serving.core.InferenceCore` every protocol predicts through, the
:class:`~loopml.serving.models.ModelSet` (per served model: a router with its variants, batchers,
canary and shadow, a follower of its routing state, an error log), a
:class:`~loopml.serving.feedback.FeedbackStore`, the prediction log, the serving-error log, the
metrics and the guard. The status view (:mod:`loopml.serving.status`) reads them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import Engine

from loopml import monitoring
from loopml.config import Settings
from loopml.errors import NotReadyError, SchemaBehindError, StoreError
from loopml.serving.auth import Guard
from loopml.serving.core import InferenceCore
from loopml.serving.dbwork import DbWork
from loopml.serving.explainer import Explainer
from loopml.serving.fairshare import FairShare
from loopml.serving.feedback import FeedbackStore
from loopml.serving.follower import ModelFollower
from loopml.serving.incidents import ErrorLog
from loopml.serving.livestats import LiveStats
from loopml.serving.loader import ModelLoader
from loopml.serving.metrics import Metrics
from loopml.serving.models import ModelSet
from loopml.serving.predlog import PredictionLog
from loopml.serving.ratelimit import RateLimiter
from loopml.serving.router import Router
from loopml.serving.status import routing_status, worker_status
from loopml.store import Store

__all__ = ["Runtime"]

log = logging.getLogger("loopml.serving")

_DRAIN_TIMEOUT_S = 15.0
_SHADOW_DRAIN_S = 5.0
# How often an unready worker looks again at a schema that was behind (LOOPML_DB_AUTO_MIGRATE off).
_SCHEMA_RECHECK_S = 5.0
# How long an explanation may wait for its turn (then 429): a few long explanations.
_EXPLAIN_WAIT_S = 15.0


class Runtime:
    """Everything a worker serves with; created by the app factory, started by its lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.live = LiveStats()
        self.guard = Guard(settings)
        self.feedback_limit = RateLimiter(settings.feedback_rate_per_min)
        self.models = ModelSet(settings, self.metrics, self.live)
        self.store: Store | None = None
        self.predlog: PredictionLog | None = None
        # Why the database's schema keeps this worker unready (None: it does not).
        self.schema_problem: str | None = None
        self._schema_checked = 0.0
        self._feedback: FeedbackStore | None = None
        # request-path database work: its own threads, never the loop's default executor
        self.db = DbWork(workers=settings.db_workers, queue=settings.db_queue)
        self.core = InferenceCore(settings, self.guard, self.models, self.metrics, self.live)
        self.started_at = time.time()
        # Explanations: one at a time per worker, shared fairly by keys, in a process of their
        # own (never in the batchers, never holding this process's GIL).
        self.explain_share = FairShare(
            slots=1,
            max_waiting=settings.explain_queue,
            wait_s=_EXPLAIN_WAIT_S,
            seconds_per_min=settings.explain_seconds_per_min,
        )
        self.explainer = Explainer(process=settings.explain_process)

    # The default model's parts (LOOPML_MODEL_NAME: /v1/predict, the admin API).
    @property
    def router(self) -> Router:
        """The default model's router."""
        return self.models.default.router

    @property
    def follower(self) -> ModelFollower:
        """The default model's follower."""
        return self.models.default.follower

    @property
    def loader(self) -> ModelLoader:
        """The default model's loader."""
        return self.models.default.loader

    @property
    def errors(self) -> ErrorLog:
        """The default model's serving-error log."""
        return self.models.default.errors

    async def start(self) -> None:
        """Open the store and the prediction log, start batchers, the error writer and the
        follower of the routing state and the registry."""
        self.settings.prepare()
        engine, migrated = await asyncio.to_thread(self._open_store)
        assert self.store is not None
        self.predlog = PredictionLog(
            self.settings.spool_dir,
            engine,
            self.metrics,
            batch_size=self.settings.predlog_batch_size,
            flush_interval_s=self.settings.predlog_flush_interval_s,
            migrate=not migrated,
            auto_migrate=self.settings.db_auto_migrate,
            fsync=self.settings.predlog_fsync == "always",
        )
        self.predlog.start()
        self._feedback = FeedbackStore(self.store, self.predlog, self.metrics)
        await self.models.start(self.store, self.predlog)
        # Every replica exports the monitor's drift, live-quality and skew gauges and the
        # offline/online agreement of rollouts, so the alerts on them fire with any number of
        # replicas and workers (and without the controller's port).
        self.metrics.add_collector(
            monitoring.MonitorCollector(
                self.store,
                self.models.names,  # after start: LOOPML_MODELS=* resolved
                rollouts=self.settings.offline_online_rollouts,
            )
        )

    def _open_store(self) -> tuple[Engine, bool]:
        from loopml.store import open_settings_store
        from loopml.store._db import make_engine

        try:
            self.store = open_settings_store(self.settings)
            return self.store.engine, True
        except SchemaBehindError as exc:
            # Not ready until `loopml db upgrade` ran; records wait on the spool meanwhile.
            log.warning("%s: not ready, predictions wait on the spool", exc)
            self.schema_problem = str(exc)
            self._schema_checked = time.monotonic()
            engine = make_engine(self.settings.db_url)
            self.store = Store(engine)
            return engine, False
        except StoreError as exc:
            # Serve anyway: records wait on the spool and the writer migrates once the DB is back.
            log.warning("loopml database unavailable at start (%s): spooling predictions", exc)
            engine = make_engine(self.settings.db_url)
            self.store = Store(engine)
            return engine, False

    def recheck_schema(self) -> str | None:
        """``schema_problem``, looked at again in the database at most every few seconds
        (blocking: call it off the event loop)."""
        from loopml.store._db import schema_state

        if self.schema_problem is None or self.store is None:
            return self.schema_problem
        now = time.monotonic()
        if now - self._schema_checked < _SCHEMA_RECHECK_S:
            return self.schema_problem
        self._schema_checked = now
        try:
            state = schema_state(self.store.engine)
        except Exception as exc:  # the database is down: the old reason stands
            log.debug("schema recheck failed: %s", type(exc).__name__)
            return self.schema_problem
        if state.usable:
            log.info("%s: ready", state.describe())
            self.schema_problem = None
        return self.schema_problem

    async def stop(self) -> None:
        """Stop following, finish shadow scoring, answer queued requests, drain the prediction
        log and the error rows, release everything."""
        await self.models.stop(_SHADOW_DRAIN_S)
        if self.predlog is not None:
            await asyncio.to_thread(self.predlog.drain, _DRAIN_TIMEOUT_S)
        self.db.close()
        await asyncio.to_thread(self.explainer.close)
        if self.store is not None:
            self.store.dispose()
        self.metrics.process_exit()

    @property
    def feedback(self) -> FeedbackStore:
        """The feedback store (``NotReadyError`` before the worker started)."""
        if self._feedback is None:
            raise NotReadyError("the server is not started")
        return self._feedback

    def routing_status(self) -> dict[str, Any]:
        """The routing state this worker follows and what it obeys now (JSON-ready)."""
        return routing_status(self)

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot for ``/v1/status``."""
        return worker_status(self)

"""Adaptive micro-batching: concurrent requests share one model call.

Policy: when the model is idle and texts are queued, they are dispatched at once (after one turn
of the event loop so that requests parsed in the same turn join). While a call runs, new requests
queue up and the next call takes all of them, up to ``max_batch_size`` texts. So batches grow with
load and nobody waits for a timer; ``max_batch_wait_ms = 0`` disables even the one-turn gather.
Model calls run on one worker thread, off the event loop; that thread also journals the batch's
prediction records (one ``write()``) before any of its answers is released; if the journal
cannot take them, the whole batch fails with :class:`~loopml.errors.JournalError` (503 +
Retry-After) instead of answering predictions that would not be logged. A queue holding
``max_queue_size`` texts refuses more (:class:`QueueFullError`, HTTP 503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from loopml.errors import JournalError, OverloadedError, ServingError
from loopml.serving.loader import LoadedModel
from loopml.serving.metrics import Metrics
from loopml.serving.predlog import PredictionLog

__all__ = [
    "Answer",
    "Batcher",
    "ModelCallError",
    "QueueFullError",
    "Result",
    "describe_failure",
    "new_ids",
]

log = logging.getLogger("loopml.serving")


class QueueFullError(OverloadedError):
    """The batch queue is full: the client should retry later."""


class ModelCallError(ServingError):
    """The model raised while answering a batch; ``detail`` names the exception (never texts)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


_DETAIL_CHARS = 500


def describe_failure(exc: BaseException, texts: list[str]) -> str:
    """``Type: message`` of a model failure, with any of ``texts`` blanked out and truncated:
    error records and logs must never carry request texts."""
    message = str(exc)
    for text in texts:
        if not text:
            continue
        # The text as is, as repr() shows it (str of a KeyError, f"{text!r}") and JSON-escaped.
        forms = {repr(text), repr(text)[1:-1], orjson.dumps(text).decode()[1:-1], text}
        for form in sorted(forms, key=len, reverse=True):
            if form in message:
                message = message.replace(form, "<text>")
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return detail[:_DETAIL_CHARS]


def new_ids(n: int) -> list[str]:
    """``n`` fresh request ids (32 hex characters each)."""
    raw = os.urandom(16 * n).hex()
    return [raw[32 * k : 32 * k + 32] for k in range(n)]


@dataclass(slots=True)
class Answer:
    """The prediction for one text."""

    request_id: str
    label: str
    probabilities: dict[str, float]


@dataclass(slots=True)
class Result:
    """Answers for one request's texts, and the model that gave them."""

    model: LoadedModel
    answers: list[Answer]


class _Item:
    __slots__ = ("future", "ids", "model", "start", "texts")

    def __init__(
        self,
        model: LoadedModel,
        texts: list[str],
        future: asyncio.Future[list[Answer]],
        start: float,
        ids: list[str] | None,
    ) -> None:
        self.model = model
        self.texts = texts
        self.future = future
        self.start = start
        self.ids = ids


class Batcher:
    """One queue and one model thread for one serving variant."""

    def __init__(
        self,
        metrics: Metrics,
        predlog: PredictionLog | None,
        *,
        max_batch_size: int,
        max_queue_size: int,
        gather: bool = True,
        log_text: bool = True,
    ) -> None:
        self.metrics = metrics
        self.predlog = predlog
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.gather = gather
        self.log_text = log_text
        self.queued = 0
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopml-model")
        self._task: asyncio.Task[None] | None = None

    def start(self, predlog: PredictionLog | None = None) -> None:
        """Start the dispatch loop on the running event loop, journaling into ``predlog`` when
        given (the prediction log opens with the worker, after the batcher is built)."""
        if predlog is not None:
            self.predlog = predlog
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="loopml-batcher")

    async def close(self) -> None:
        """Answer everything queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more texts would be accepted now."""
        return not self._closing and self.queued + n <= self.max_queue_size

    async def submit(
        self, model: LoadedModel, texts: list[str], ids: list[str] | None = None
    ) -> Result:
        """Queue ``texts`` for ``model`` and wait for their answers (request ids ``ids`` when
        given, else fresh ones)."""
        n = len(texts)
        if self._closing:
            raise QueueFullError("the server is shutting down")
        if self.queued + n > self.max_queue_size:
            raise QueueFullError(f"the queue is full ({self.queued} texts waiting)")
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        futures = []
        step = self.max_batch_size
        for i in range(0, n, step):
            fut: asyncio.Future[list[Answer]] = loop.create_future()
            part = ids[i : i + step] if ids is not None else None
            self._queue.append(_Item(model, texts[i : i + step], fut, start, part))
            futures.append(fut)
        self.queued += n
        self.metrics.queue_depth.inc(n)
        self._wake.set()
        if len(futures) == 1:
            return Result(model, await futures[0])
        parts = await asyncio.gather(*futures)
        return Result(model, [a for part in parts for a in part])

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.gather:
                await asyncio.sleep(0)  # let requests read in this loop turn join the batch
            batch = self._take()
            try:
                answers = await loop.run_in_executor(self._executor, self._run, batch)
            except JournalError as exc:
                for item in batch:  # not answered, so nothing answered is missing from the log
                    if not item.future.done():
                        item.future.set_exception(JournalError(str(exc)))
                continue
            except Exception as exc:
                log.error(
                    "model call of version %s (%s) failed: %s",
                    batch[0].model.version,
                    batch[0].model.variant,
                    type(exc).__name__,
                )
                for item in batch:
                    if not item.future.done():
                        detail = describe_failure(exc, item.texts)
                        item.future.set_exception(
                            ModelCallError("the model failed to answer", detail)
                        )
                continue
            for item, ans in zip(batch, answers, strict=True):
                if not item.future.done():  # the client may have gone away
                    item.future.set_result(ans)

    def _take(self) -> list[_Item]:
        first = self._queue.popleft()
        batch = [first]
        size = len(first.texts)
        while self._queue:
            nxt = self._queue[0]
            if nxt.model is not first.model or size + len(nxt.texts) > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            size += len(nxt.texts)
        self.queued -= size
        self.metrics.queue_depth.dec(size)
        return batch

    def _run(self, batch: list[_Item]) -> list[list[Answer]]:
        """Model call + journal write for one batch (runs on the model thread)."""
        model = batch[0].model
        texts = [t for item in batch for t in item.texts]
        t0 = time.perf_counter()
        proba = model.classifier.predict_proba(texts)
        done = time.perf_counter()
        self.metrics.model_call.observe(done - t0)
        self.metrics.batch_size.observe(len(texts))
        rows: list[list[float]] = proba.tolist()
        best: list[int] = proba.argmax(axis=1).tolist()
        classes = model.classes
        fresh = sum(len(item.texts) for item in batch if item.ids is None)
        ids = os.urandom(16 * fresh).hex() if fresh else ""
        rids: list[str] = []
        latencies: list[float] = []
        out: list[list[Answer]] = []
        k = 0
        for item in batch:
            latency_ms = round((done - item.start) * 1000.0, 3)
            if item.ids is None:
                item_ids = [ids[32 * (k + j) : 32 * (k + j + 1)] for j in range(len(item.texts))]
                k += len(item.texts)
            else:
                item_ids = item.ids
            rids += item_ids
            latencies += [latency_ms] * len(item_ids)
        labels = [classes[i] for i in best]
        answers = [
            Answer(rid, label, dict(zip(classes, row, strict=True)))
            for rid, label, row in zip(rids, labels, rows, strict=True)
        ]
        k = 0
        for item in batch:
            out.append(answers[k : k + len(item.texts)])
            k += len(item.texts)
        if self.predlog is not None:  # JournalError: none of the batch is answered
            line = self._batch_record(model, texts, rids, labels, rows, latencies)
            self.predlog.record(line, list(zip(rids, labels, strict=True)), classes, model.name)
        self._count(model, best)
        return out

    def _batch_record(
        self,
        model: LoadedModel,
        texts: list[str],
        rids: list[str],
        labels: list[str],
        rows: list[list[float]],
        latencies: list[float],
    ) -> bytes:
        # One journal line per batch, in columns: one orjson call instead of one dict and one
        # call per text. Text hashes and lengths are left to the writer process when the text
        # is logged; without the text they must be computed here.
        rec: dict[str, Any] = {
            "batch": len(texts),
            "ts": time.time(),
            "model_name": model.name,
            "model_version": model.version,
            "variant": model.variant,
            "classes": model.classes,
            "request_id": rids,
            "label": labels,
            "probabilities": rows,
            "latency_ms": latencies,
        }
        if self.log_text:
            rec["text"] = texts
        else:
            rec["text_hash"] = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
            rec["text_length"] = [len(t) for t in texts]
        return orjson.dumps(rec) + b"\n"

    def _count(self, model: LoadedModel, best: list[int]) -> None:
        for index, count in Counter(best).items():
            self.metrics.predictions.labels(
                model.version, model.variant, model.classes[index], model.name
            ).inc(count)

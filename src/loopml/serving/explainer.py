"""Explanations in a process of their own, next to the worker, so they never slow predictions.

An explanation scores its text once per token: for a 5,000-character text, 250 variants in one
``predict_proba``, half a second of Python (the TF-IDF analyzer) holding the GIL. Run in a thread
of the worker, it stalled the event loop at every hand-over of the GIL: another client's 8-text
predictions went from p99 31 ms to 109 ms (p50 12 to 38 ms) while one key looped explains.

So a worker explains in one child process (spawned at its first explanation, ``spawn`` start
method, signals left to the worker, a lower CPU priority than the worker's): the model goes over
once per loaded version (pickled here, kept there, at most two: champion and challenger), each
text and its answer after that. A child that dies (OOM, a kill) is replaced at the next request,
which is answered 503 (retry). A model that cannot be pickled is explained in a thread of the
worker, as before. The child costs memory: its imports (scikit-learn, about 290 MB with the
default model) and a copy of each model it explains; ``LOOPML_EXPLAIN_PROCESS=false`` explains in
threads of the worker instead (small pods), with the fair share all the same.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from loopml.errors import ServingError
from loopml.pipeline.explain import Explanation, explain
from loopml.serving.explain_child import MissingModelError, child_setup, explain_in_child
from loopml.serving.loader import LoadedModel

__all__ = ["Explainer"]

log = logging.getLogger("loopml.serving")


class _NoProcessError(Exception):
    """The explain process cannot start here: explanations run in threads instead."""


def _in_thread(model: LoadedModel, text: str, top: int) -> tuple[Explanation, float]:
    start = time.thread_time()
    result = explain(model.classifier, text, top=top)
    return result, time.thread_time() - start


class Explainer:
    """Runs explanations of loaded models in the worker's explain process."""

    def __init__(self, *, process: bool = True) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._sent: set[tuple[str, float]] = set()
        self._unpicklable: set[tuple[str, float]] = set()
        #: why explanations run in threads (LOOPML_EXPLAIN_PROCESS off, or no process can start
        #: here: no /dev/shm, a process limit), None when they run in the explain process
        self.no_process: str | None = None if process else "LOOPML_EXPLAIN_PROCESS=false"

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=child_setup)
            self._sent.clear()
        return self._pool

    async def explain(
        self, model: LoadedModel, text: str, *, top: int
    ) -> tuple[Explanation, float]:
        """``model``'s explanation of ``text`` and the CPU seconds it took (a RequestError for a
        bad text, ServingError 503 when the explain process died)."""
        key = (model.version, model.loaded_at)
        if key in self._unpicklable or self.no_process is not None:
            return await asyncio.to_thread(_in_thread, model, text, top)
        blob = None
        if key not in self._sent:
            try:
                blob = await asyncio.to_thread(pickle.dumps, model.classifier, 5)
            except Exception as exc:  # a model holding a handle that does not pickle
                log.warning(
                    "version %s cannot be pickled (%s): explained in a thread of the worker",
                    model.version,
                    type(exc).__name__,
                )
                self._unpicklable.add(key)
                return await asyncio.to_thread(_in_thread, model, text, top)
        try:
            return await self._call(key, blob, text, top)
        except _NoProcessError as exc:
            self.no_process = str(exc)
            log.warning("no explain process (%s): explaining in threads", self.no_process)
            self._pool = None
            return await asyncio.to_thread(_in_thread, model, text, top)
        except MissingModelError:
            self._sent.discard(key)
            blob = await asyncio.to_thread(pickle.dumps, model.classifier, 5)
            return await self._call(key, blob, text, top)

    async def _call(
        self, key: tuple[str, float], blob: bytes | None, text: str, top: int
    ) -> tuple[Explanation, float]:
        loop = asyncio.get_running_loop()
        try:
            pool = self._executor()
            future = loop.run_in_executor(pool, explain_in_child, key, blob, text, top)
        except OSError as exc:  # no process or queue could be made (no /dev/shm, ulimit)
            raise _NoProcessError(f"{type(exc).__name__}: {exc}") from None
        try:
            return await future
        except BrokenProcessPool:
            log.error("the explain process died: a new one starts at the next explanation")
            self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise ServingError("the explain process stopped; retry") from None
        finally:
            # once sent, the child holds the model (also when it refused the text); if it
            # did not run the call after all, it says so and the model goes again
            if blob is not None and self._pool is pool:
                self._sent.add(key)

    def close(self) -> None:
        """Stop the explain process (blocking: call it off the event loop)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

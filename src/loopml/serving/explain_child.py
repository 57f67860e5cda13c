"""What runs in a worker's explain process (see :mod:`loopml.serving.explainer`).

Kept apart so that the process imports only what explaining needs (numpy, the explain method,
and what unpickling the model imports), not the serving stack (MLflow, the web framework).
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from typing import Any

from loopml.pipeline.explain import Explanation, explain

__all__ = ["MissingModelError", "child_setup", "explain_in_child"]

#: models kept in the child: the champion and a challenger
_KEEP = 2
#: the explain process's CPU priority below the worker's (nice 10: about a tenth of the CPU
#: share of a worker when both want it)
_NICE = 10
_models: dict[tuple[str, float], Any] = {}  # in the child: (version, loaded_at) -> classifier


class MissingModelError(Exception):
    """The child does not hold the model asked for (it was replaced): send it again."""


def child_setup() -> None:
    """Signals left to the worker, a lower CPU priority."""
    # The worker stops the child itself; a Ctrl-C or SIGTERM to the process group must not
    # print a traceback here or break a call in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Predictions first: when the cores are busy, the scheduler gives them to the workers.
    os.nice(_NICE)


def explain_in_child(
    key: tuple[str, float], blob: bytes | None, text: str, top: int
) -> tuple[Explanation, float]:
    """In the child: keep the model of ``key`` (unpickled from ``blob`` when given), explain;
    the explanation and the CPU seconds it took."""
    if blob is not None:
        _models[key] = pickle.loads(blob)
        while len(_models) > _KEEP:
            del _models[next(iter(_models))]
    model = _models.get(key)
    if model is None:
        raise MissingModelError(key)
    start = time.process_time()
    result = explain(model, text, top=top)
    return result, time.process_time() - start

"""Test-only model classes, importable by test servers (their PYTHONPATH includes this folder).

Pickled into registry versions by the tests, so a server process must import this module by the
same name (``loopml_test_models``) to load them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from loopml.recipes.base import TextClassifier

__all__ = ["WARM_UP_PREFIX", "FailsAfterWarmUp"]

# The serving loader's warm-up texts start with this (see loopml.serving.loader._WARMUP).
WARM_UP_PREFIX = "loopml warm-up"


class FailsAfterWarmUp(TextClassifier):
    """Wraps a real classifier: answers the loader's warm-up (any call holding a text that starts
    with ``WARM_UP_PREFIX``), then raises on every call. Its message quotes a request text, so
    tests can check that error records never carry texts."""

    def __init__(self, inner: TextClassifier) -> None:
        self.inner = inner
        self.classes = list(inner.classes)

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        if any(t.startswith(WARM_UP_PREFIX) for t in texts):
            return self.inner.predict_proba(texts)
        raise RuntimeError(f"test model refuses to answer {texts[0]!r}")

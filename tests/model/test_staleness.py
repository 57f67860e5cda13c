"""ML Test Score, Model 4: the impact of staleness is measured. A small run of
benchmarks/staleness.py: a model trained on the old domains loses macro-F1 step by step as the
new domain's share of the traffic grows, and a fresh model recovers part of it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from loopml.data import Dataset

pytestmark = pytest.mark.slow

BENCH = Path(__file__).parents[2] / "benchmarks" / "staleness.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("staleness_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decay_is_measured_step_by_step(tweets: Dataset) -> None:
    bench = _bench()
    result = bench.measure(
        tweets.frame, shares=[0.0, 0.5, 1.0], train_rows=3000, test_rows=800, seed=0
    )
    steps = result["steps"]
    assert [s["new_share"] for s in steps] == [0.0, 0.5, 1.0]
    stale = [s["stale_macro_f1"] for s in steps]
    # The old-world model does worse the newer the traffic: each step costs macro-F1...
    assert 0.55 < stale[0] < 0.8
    assert stale[0] > stale[1] > stale[2]
    assert steps[2]["decay_from_start"] == pytest.approx(stale[0] - stale[2], abs=1e-4)
    assert steps[1]["decay_this_step"] > 0.02 and steps[2]["decay_this_step"] > 0.02
    assert result["decay_per_10_points"] > 0.005
    # ...which retraining on the new mix wins back (the cost of staleness), at 100% new domain.
    assert steps[0]["cost_of_staleness"] == pytest.approx(0.0, abs=0.05)
    assert steps[2]["cost_of_staleness"] > 0.05
    # The alert threshold's input: the share at which the gate's tolerance is used up.
    per_point = result["decay_per_10_points"] / 10
    assert bench.tolerated_share(result, 0.01) == pytest.approx(0.01 / per_point / 100, abs=1e-4)
    assert 0 < bench.tolerated_share(result, 0.01) < 0.5
    assert bench.tolerated_share(result, 1.0) == 1.0

"""Data 7: a new feature reaches a canary's live answers through the CLI, within the budget of
``benchmarks/recipe_to_canary.py`` (the figure is the benchmark's, in benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "recipe_to_canary.py"


@pytest.mark.slow
def test_a_new_feature_serves_in_a_canary_within_the_budget() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "6000", "--no-record", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(done.stdout)
    assert report["gate"]["verdict"] == "passed", report["gate"]
    assert list(report["steps"]) == ["install", "list", "train", "approve", "promote", "canary"]
    assert report["requests_to_challenger"] >= 1
    assert report["within_budget"] and report["total_s"] <= report["budget_s"] == 600
    assert done.returncode == 0, done.stderr[-2000:]

from __future__ import annotations

import pytest

from loopml.config import Settings
from loopml.pipeline.behavioral import BehavioralReport, TestResult
from loopml.pipeline.evaluate import Evaluation
from loopml.pipeline.gate import run_gate


def ev(f1: float, slices: dict[str, float], passed: int = 10, p99: float = 1.0) -> Evaluation:
    behavioral = BehavioralReport([TestResult("t", "invariance", passed, 10)])
    return Evaluation(
        {"macro_f1": f1, "accuracy": f1}, slices, ["a", "b"], [[1, 0], [0, 1]], behavioral, p99
    )


def failed(result: object) -> set[str]:
    return {c.name for c in result.failures()}  # type: ignore[attr-defined]


@pytest.fixture
def cfg(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "gate_f1_tolerance": 0.01,
            "gate_slice_tolerance": 0.03,
            "gate_min_macro_f1": 0.6,
            "gate_min_slice_f1": 0.4,
            "gate_min_behavioral_pass_rate": 0.7,
            "gate_max_p99_latency_ms": 50,
        }
    )


def test_absolute_floors_without_champion(cfg: Settings) -> None:
    assert run_gate(ev(0.75, {"x": 0.5}), None, cfg).passed
    result = run_gate(ev(0.55, {"x": 0.3}), None, cfg)
    assert not result.passed and failed(result) == {"macro_f1", "f1_domain_x"}
    assert result.champion_version is None


def test_candidate_within_tolerance_of_champion_passes(cfg: Settings) -> None:
    champion = ev(0.75, {"x": 0.70, "y": 0.60})
    result = run_gate(ev(0.745, {"x": 0.68, "y": 0.58}), champion, cfg, champion_version="3")
    assert result.passed, result.to_dict()
    assert result.to_dict()["champion_version"] == "3"


def test_worse_macro_f1_or_slice_fails(cfg: Settings) -> None:
    champion = ev(0.75, {"x": 0.70, "y": 0.60})
    assert failed(run_gate(ev(0.73, {"x": 0.70, "y": 0.60}), champion, cfg)) == {"macro_f1"}
    assert failed(run_gate(ev(0.76, {"x": 0.66, "y": 0.60}), champion, cfg)) == {"f1_domain_x"}


def test_new_slices_are_not_compared(cfg: Settings) -> None:
    champion = ev(0.75, {"x": 0.70})
    assert run_gate(ev(0.75, {"x": 0.70, "new": 0.1}), champion, cfg).passed


def test_behavior_and_latency(cfg: Settings) -> None:
    result = run_gate(ev(0.8, {}, passed=6, p99=80.0), None, cfg)
    assert failed(result) == {"behavioral_pass_rate", "latency_p99_ms"}
    assert result.verdict == "failed"

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


def test_the_trusted_holdout_fails_a_candidate_whatever_the_feedback_slice_says(
    cfg: Settings,
) -> None:
    champion = ev(0.70, {"other": 0.70, "feedback": 0.40})
    # Better everywhere on the mixed split (it agrees with the poisoned feedback labels)...
    candidate = ev(0.74, {"other": 0.69, "feedback": 0.95})
    champ_trusted = {"macro_f1": 0.70, "f1_negative": 0.80, "f1_positive": 0.60}
    poisoned = {"macro_f1": 0.685, "f1_negative": 0.81, "f1_positive": 0.52}
    result = run_gate(candidate, champion, cfg, trusted=(poisoned, champ_trusted))
    # ...but its positive class fell 0.08 on the trusted holdout (tolerance 0.03).
    assert failed(result) == {"trusted_f1_positive"}
    names = [c.name for c in result.checks]
    assert names[3:6] == ["trusted_macro_f1", "trusted_f1_negative", "trusted_f1_positive"]
    check = next(c for c in result.checks if c.name == "trusted_f1_positive")
    assert (check.value, check.threshold) == (0.52, 0.57)
    honest = {"macro_f1": 0.69, "f1_negative": 0.78, "f1_positive": 0.58}
    assert run_gate(candidate, champion, cfg, trusted=(honest, champ_trusted)).passed
    # Without a champion the trusted scores have nothing to compare with.
    assert "trusted_macro_f1" not in {c.name for c in run_gate(candidate, None, cfg).checks}

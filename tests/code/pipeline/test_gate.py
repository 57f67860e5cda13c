from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

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


def _with_rows(candidate: Evaluation, truth: list[str], predicted: list[str]) -> Evaluation:
    candidate.rows = pd.DataFrame({"label": truth, "domain": "x", "predicted": predicted})
    candidate.labels = sorted(set(truth))
    return candidate


def test_a_first_model_is_held_to_the_unigram_baselines_slices_not_to_a_fixed_floor(
    settings: Settings,
) -> None:
    cfg = settings.model_copy(update={"gate_min_macro_f1": None, "gate_min_slice_f1": None})
    # A slice where the unigram baseline reaches 0.31 (the data allows no more): 0.30 passes.
    candidate = ev(0.7, {"x": 0.30})
    candidate.baseline_domain_f1 = {"x": 0.31}
    result = run_gate(candidate, None, cfg)
    check = next(c for c in result.checks if c.name == "f1_domain_x")
    assert check.passed and check.threshold == pytest.approx(0.31 - cfg.gate_slice_tolerance)
    assert "unigram baseline 0.3100" in check.detail
    assert "macro_f1" not in {c.name for c in result.checks}, "no absolute floor unless set"
    # Far below it: fails; an absolute floor, when set, is the higher of the two bars.
    candidate.domain_f1 = {"x": 0.2}
    assert "f1_domain_x" in failed(run_gate(candidate, None, cfg))
    set_floor = cfg.model_copy(update={"gate_min_slice_f1": 0.5})
    candidate.domain_f1 = {"x": 0.45}
    check = next(c for c in run_gate(candidate, None, set_floor).checks if "domain" in c.name)
    assert not check.passed and check.threshold == 0.5 and check.detail == "absolute floor"


def test_a_floor_fails_a_model_only_when_the_rows_say_it_is_below(settings: Settings) -> None:
    cfg = settings.model_copy(update={"gate_min_macro_f1": 0.62, "gate_min_slice_f1": None})
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    for n, expect_pass in ((60, True), (20_000, False)):
        truth = rng.choice(labels, n).tolist()
        predicted = [t if rng.random() < 0.4 else str(rng.choice(labels)) for t in truth]
        f1 = f1_score(truth, predicted, average="macro")
        assert 0.5 < f1 < 0.62
        candidate = _with_rows(ev(f1, {}), truth, predicted)
        check = next(c for c in run_gate(candidate, None, cfg).checks if c.name == "macro_f1")
        assert check.passed is expect_pass, (n, check)
        assert ("not clearly below: upper bound" in check.detail) is expect_pass


def test_the_behavioral_floor_is_what_the_unigram_baseline_passes_if_that_is_less(
    settings: Settings,
) -> None:
    candidate = ev(0.8, {}, passed=6)  # 0.6 < the 0.7 floor
    assert "behavioral_pass_rate" in failed(run_gate(candidate, None, settings))
    candidate.baseline_behavioral = 0.55
    check = next(c for c in run_gate(candidate, None, settings).checks if "behav" in c.name)
    assert check.passed and check.threshold == 0.55
    assert "what the unigram baseline passes (0.55)" in check.detail
    candidate.baseline_behavioral = 0.9  # a baseline above the floor does not raise it
    check = next(c for c in run_gate(candidate, None, settings).checks if "behav" in c.name)
    assert not check.passed and check.threshold == settings.gate_min_behavioral_pass_rate

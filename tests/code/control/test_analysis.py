from __future__ import annotations

import pytest

from loopml.control.analysis import (
    Limits,
    VariantStats,
    analyze,
    mcnemar_worse_p,
    two_proportion_worse_p,
)

LIMITS = Limits(
    max_error_rate=0.02,
    min_requests=100,
    max_latency_ratio=2.0,
    latency_slack_ms=5.0,
    min_labeled=100,
    quality_margin=0.0,
    alpha=0.05,
)


def stats(
    requests: int = 1000, errors: int = 0, p99: float = 10.0, labeled: int = 300, correct: int = 240
) -> VariantStats:
    return VariantStats(requests, errors, p99, labeled, correct)


def by_name(analysis: object) -> dict[str, str]:
    return {c.name: c.status for c in analysis.checks}  # type: ignore[attr-defined]


def test_equal_variants_pass() -> None:
    result = analyze(stats(), stats(), LIMITS)
    assert result.status == "pass", result.to_dict()


def test_too_little_traffic_or_labels_waits() -> None:
    result = analyze(stats(), stats(requests=50, labeled=20, correct=16), LIMITS)
    assert result.status == "wait"
    assert by_name(result) == {"error_rate": "wait", "latency_p99": "wait", "live_quality": "wait"}


def test_errors_fail_fast_even_on_little_traffic() -> None:
    result = analyze(stats(), stats(requests=30, errors=20, labeled=0, correct=0), LIMITS)
    assert result.status == "fail" and by_name(result)["error_rate"] == "fail"
    assert result.checks[0].p_value is not None and result.checks[0].p_value < 1e-6


def test_a_single_error_in_a_small_sample_is_not_a_verdict() -> None:
    result = analyze(stats(), stats(requests=20, errors=1), LIMITS)
    assert by_name(result)["error_rate"] == "wait"


def test_slow_challenger_fails_latency() -> None:
    assert by_name(analyze(stats(p99=10), stats(p99=26), LIMITS))["latency_p99"] == "fail"
    assert by_name(analyze(stats(p99=10), stats(p99=24), LIMITS))["latency_p99"] == "pass"


def test_clearly_worse_quality_fails_two_proportion_test() -> None:
    result = analyze(stats(correct=240), stats(correct=120), LIMITS)  # 80% vs 40%
    assert result.status == "fail" and by_name(result)["live_quality"] == "fail"


def test_slightly_worse_quality_is_not_significant() -> None:
    assert analyze(stats(correct=240), stats(correct=235), LIMITS).status == "pass"


def test_two_proportion_p_values() -> None:
    champ, chall = stats(labeled=400, correct=320), stats(labeled=400, correct=280)  # 0.80 vs 0.70
    p = two_proportion_worse_p(champ, chall, 0.0)
    assert 0.0002 < p < 0.001  # z = 3.27
    assert two_proportion_worse_p(chall, champ, 0.0) > 0.99


def test_mcnemar_exact_p_values() -> None:
    assert mcnemar_worse_p(0, 0) == 1.0
    assert mcnemar_worse_p(10, 0) == pytest.approx(0.5**10)
    assert mcnemar_worse_p(5, 5) == pytest.approx(0.623, abs=1e-3)


def test_shadow_uses_paired_counts() -> None:
    same = stats(correct=240)
    worse = analyze(same, stats(correct=215), LIMITS, paired=(30, 5))  # 25 fewer right
    assert by_name(worse)["live_quality"] == "fail" and "McNemar" in worse.checks[2].detail
    assert analyze(same, stats(correct=238), LIMITS, paired=(12, 10)).status == "pass"
    margin = Limits(**{**LIMITS.__dict__, "quality_margin": 0.15})
    assert analyze(same, stats(correct=215), margin, paired=(30, 5)).status == "pass"

"""Rollout analysis: is the challenger at least as good as the champion on live traffic?

Three checks, each "pass", "fail" or "wait" (not enough data yet):

- error rate: the challenger's share of failed model calls must stay under a ceiling;
- latency: the challenger's p99 must stay within a factor of the champion's;
- live quality on feedback labels: in shadow mode both models scored the same requests, so the
  paired McNemar test compares them; in canary mode the groups are disjoint and a one-sided
  two-proportion z-test is used. A check fails only when the challenger is significantly worse
  (p < alpha) by more than the margin, and passes only with enough labels on both sides.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from scipy.stats import binomtest, norm

from loopml.config import setting

__all__ = ["Analysis", "AnalysisCheck", "Limits", "VariantStats", "analyze"]

Status = Literal["pass", "fail", "wait"]


@dataclass
class VariantStats:
    """Live numbers of one variant since the current rollout step began."""

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    labeled: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        """Share of labeled predictions that were right."""
        return self.correct / self.labeled if self.labeled else None

    @property
    def error_rate(self) -> float:
        """Failed calls over all calls."""
        total = self.requests + self.errors
        return self.errors / total if total else 0.0


@dataclass
class Limits:
    """Thresholds of the analysis (from settings)."""

    max_error_rate: float = setting("rollout_max_error_rate")
    min_requests: int = setting("rollout_min_requests")
    max_latency_ratio: float = setting("rollout_max_latency_ratio")
    min_labeled: int = setting("rollout_min_labeled")
    quality_margin: float = setting("rollout_quality_margin")
    alpha: float = setting("rollout_alpha")
    latency_slack_ms: float = 5.0


@dataclass
class AnalysisCheck:
    """One check with its numbers."""

    name: str
    status: Status
    detail: str
    p_value: float | None = None


@dataclass
class Analysis:
    """Verdict over every check: fail if any fails, pass if all pass, else wait."""

    status: Status
    checks: list[AnalysisCheck]
    champion: VariantStats
    challenger: VariantStats

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "status": self.status,
            "checks": [asdict(c) for c in self.checks],
            "champion": asdict(self.champion),
            "challenger": asdict(self.challenger),
        }


def _errors(ch: VariantStats, limits: Limits) -> AnalysisCheck:
    total = ch.requests + ch.errors
    rate = ch.error_rate
    detail = (
        f"{ch.errors} errors in {total} calls ({rate:.2%}), ceiling {limits.max_error_rate:.2%}"
    )
    if ch.errors and total and rate > limits.max_error_rate:
        # Enough evidence that the true rate exceeds the ceiling: fail now, don't wait.
        p = binomtest(ch.errors, total, limits.max_error_rate, alternative="greater").pvalue
        if p < limits.alpha or total >= limits.min_requests:
            return AnalysisCheck("error_rate", "fail", detail, float(p))
    if total < limits.min_requests:
        return AnalysisCheck("error_rate", "wait", detail + f"; need {limits.min_requests} calls")
    return AnalysisCheck("error_rate", "pass", detail)


def _latency(champion: VariantStats, ch: VariantStats, limits: Limits) -> AnalysisCheck:
    if ch.p99_ms is None or champion.p99_ms is None or ch.requests < limits.min_requests:
        return AnalysisCheck("latency_p99", "wait", f"need {limits.min_requests} requests")
    budget = champion.p99_ms * limits.max_latency_ratio + limits.latency_slack_ms
    detail = f"challenger p99 {ch.p99_ms:.1f} ms, budget {budget:.1f} ms"
    return AnalysisCheck("latency_p99", "pass" if ch.p99_ms <= budget else "fail", detail)


def mcnemar_worse_p(champion_only: int, challenger_only: int) -> float:
    """One-sided exact McNemar p-value that the challenger is wrong more often than the champion.

    ``champion_only``: pairs the champion got right and the challenger wrong; ``challenger_only``
    the reverse. Under H0 each discordant pair goes either way with probability 1/2.
    """
    n = champion_only + challenger_only
    if n == 0:
        return 1.0
    return float(binomtest(champion_only, n, 0.5, alternative="greater").pvalue)


def two_proportion_worse_p(champion: VariantStats, ch: VariantStats, margin: float) -> float:
    """One-sided z-test p-value that challenger accuracy < champion accuracy - ``margin``."""
    p1, p2 = champion.accuracy or 0.0, ch.accuracy or 0.0
    pooled = (champion.correct + ch.correct) / (champion.labeled + ch.labeled)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / champion.labeled + 1 / ch.labeled))
    z = ((p1 - margin) - p2) / se
    return float(norm.sf(z))


def _quality(
    champion: VariantStats, ch: VariantStats, limits: Limits, paired: tuple[int, int] | None
) -> AnalysisCheck:
    need = limits.min_labeled
    if ch.labeled < need or champion.labeled < need:
        return AnalysisCheck(
            "live_quality",
            "wait",
            f"labels: champion {champion.labeled}, challenger {ch.labeled}; need {need} each",
        )
    gap = (champion.accuracy or 0) - (ch.accuracy or 0)
    if paired is not None:
        p = mcnemar_worse_p(*paired)
        test = f"McNemar on {sum(paired)} discordant pairs"
    else:
        p = two_proportion_worse_p(champion, ch, limits.quality_margin)
        test = "two-proportion z-test"
    detail = (
        f"accuracy champion {champion.accuracy:.3f} vs challenger {ch.accuracy:.3f} "
        f"({test}, one-sided p={p:.4f})"
    )
    worse = p < limits.alpha and gap > limits.quality_margin
    return AnalysisCheck("live_quality", "fail" if worse else "pass", detail, p)


def analyze(
    champion: VariantStats,
    challenger: VariantStats,
    limits: Limits,
    *,
    paired: tuple[int, int] | None = None,
) -> Analysis:
    """Run every check; ``paired`` = (champion-only correct, challenger-only correct) in shadow."""
    checks = [
        _errors(challenger, limits),
        _latency(champion, challenger, limits),
        _quality(champion, challenger, limits, paired),
    ]
    statuses = {c.status for c in checks}
    status: Status = "fail" if "fail" in statuses else "wait" if "wait" in statuses else "pass"
    return Analysis(status, checks, champion, challenger)

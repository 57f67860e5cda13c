"""The retraining policy: when does monitoring evidence justify a new challenger?

Two rules. The *alarm rule* adapts a champion to a change: drift or a live-quality alarm, with
``retrain_min_labeled`` new labels. Once the champion has learned from feedback, the *learning
rule* decides instead: retrain while ``retrain_min_new_labels`` new labels have arrived and live
macro-F1 is more than ``retrain_reachable_margin`` under the reachable estimate
(:mod:`loopml.control.learning`); stop when it has caught up, drift or not. Both respect the
cooldown (``retrain_cooldown_s``). See ``docs/loop.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from loopml.config import Settings

if TYPE_CHECKING:
    from loopml.monitoring import MonitorSummary

__all__ = ["Decision", "LearningGap", "cooling_down", "decide"]

Action = Literal["retrain", "wait", "none"]


@dataclass
class Decision:
    """What the policy wants, why, and the numbers it decided on (for the audit record)."""

    action: Action
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LearningGap:
    """Live quality of the champion against the quality a retrain could reach now.

    ``live_macro_f1``: the champion on the labelled traffic it has not trained on (the new
    labels); ``reachable_macro_f1``: the learning-curve estimate on the same labels; ``gap_ci``:
    the 95% interval of their paired difference; ``window_macro_f1``: the monitor's live figure
    on its window, for reference.
    """

    live_macro_f1: float
    reachable_macro_f1: float
    new_labels: int
    margin: float
    gap_ci: tuple[float, float] | None = None
    window_macro_f1: float | None = None

    @property
    def gap(self) -> float:
        """How far live macro-F1 is under the reachable estimate (negative: above it)."""
        return self.reachable_macro_f1 - self.live_macro_f1

    @property
    def worth_retraining(self) -> bool:
        """The gap exceeds the margin, and is no accident of the sample (its interval is > 0)."""
        return self.gap > self.margin and (self.gap_ci is None or self.gap_ci[0] > 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the gap (what the monitor summary and the audit record hold)."""
        return {
            "live_macro_f1": round(self.live_macro_f1, 4),
            "reachable_macro_f1": round(self.reachable_macro_f1, 4),
            "gap": round(self.gap, 4),
            "gap_ci": list(self.gap_ci) if self.gap_ci else None,
            "new_labels": self.new_labels,
            "margin": self.margin,
            "window_macro_f1": None
            if self.window_macro_f1 is None
            else round(self.window_macro_f1, 4),
        }


def cooling_down(last_retrain: datetime | None, now: datetime, settings: Settings) -> float | None:
    """Seconds since the last retrain while still inside the cooldown, else None."""
    if last_retrain is None:
        return None
    since = (now - last_retrain).total_seconds()
    return since if since < settings.retrain_cooldown_s else None


def _learning(
    gap: LearningGap | None, new_labels: int, cooldown: float | None, settings: Settings
) -> Decision:
    if new_labels < settings.retrain_min_new_labels:
        return Decision(
            "wait", f"waiting for new labels ({new_labels}/{settings.retrain_min_new_labels})"
        )
    if gap is None:
        # The controller estimates only outside the cooldown and with a measured live quality.
        why = (
            f"last retrain {cooldown:.0f}s ago (cooldown {settings.retrain_cooldown_s:.0f}s)"
            if cooldown is not None
            else f"live quality not measured yet (needs {settings.monitor_min_labeled} labels)"
        )
        return Decision("wait", f"{new_labels} new labels; {why}")
    numbers = gap.to_dict()
    if gap.worth_retraining:
        return Decision(
            "retrain",
            f"learning: live macro-F1 {gap.live_macro_f1:.3f} is {gap.gap:.3f} under the "
            f"reachable {gap.reachable_macro_f1:.3f} (margin {gap.margin}) with "
            f"{gap.new_labels} new labels",
            numbers,
        )
    within = (
        f"within {gap.margin} of"
        if gap.gap <= gap.margin
        else f"{gap.gap:.3f} under (interval {gap.gap_ci[0] if gap.gap_ci else 0:.3f} to "
        f"{gap.gap_ci[1] if gap.gap_ci else 0:.3f}, not surely above 0)"
    )
    return Decision(
        "none",
        f"caught up: live macro-F1 {gap.live_macro_f1:.3f} is {within} the "
        f"reachable {gap.reachable_macro_f1:.3f} ({gap.new_labels} new labels)",
        numbers,
    )


def decide(
    summary: MonitorSummary,
    *,
    new_labels: int,
    last_retrain: datetime | None,
    now: datetime,
    settings: Settings,
    learned: bool = False,
    learning: LearningGap | None = None,
) -> Decision:
    """The learning rule for a champion that ``learned`` from feedback (``learning``: its gap,
    when estimated), else the alarm rule; both wait out the cooldown."""
    verdict = summary.verdict
    if verdict == "insufficient_data":
        return Decision("none", f"monitor verdict: {verdict}")
    since = cooling_down(last_retrain, now, settings)
    if learned:
        decision = _learning(learning, new_labels, since, settings)
    elif verdict not in ("drift", "quality_alarm"):
        return Decision("none", f"monitor verdict: {verdict}")
    else:
        why = (
            "live quality under its floor"
            if verdict == "quality_alarm"
            else ("drift detected: " + ", ".join(summary.reasons[:3]))
        )
        if new_labels < settings.retrain_min_labeled:
            return Decision(
                "wait", f"{why}; waiting for labels ({new_labels}/{settings.retrain_min_labeled})"
            )
        decision = Decision("retrain", why)
    if decision.action == "retrain" and since is not None:
        return Decision(
            "wait",
            f"{decision.reason}; last retrain {since:.0f}s ago "
            f"(cooldown {settings.retrain_cooldown_s:.0f}s)",
            decision.numbers,
        )
    return decision

"""The retraining policy: when does monitoring evidence justify a new challenger?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from loopml.config import Settings

if TYPE_CHECKING:
    from loopml.monitoring import MonitorSummary

__all__ = ["Decision", "decide"]

Action = Literal["retrain", "wait", "none"]


@dataclass
class Decision:
    """What the policy wants and why."""

    action: Action
    reason: str


def decide(
    summary: MonitorSummary,
    *,
    new_labels: int,
    last_retrain: datetime | None,
    now: datetime,
    settings: Settings,
) -> Decision:
    """Retrain on drift or a live-quality alarm, given enough new labels and no recent retrain."""
    verdict = summary.verdict
    if verdict not in ("drift", "quality_alarm"):
        return Decision("none", f"monitor verdict: {verdict}")
    why = (
        "live quality under its floor"
        if verdict == "quality_alarm"
        else ("drift detected: " + ", ".join(summary.reasons[:3]))
    )
    if new_labels < settings.retrain_min_labeled:
        return Decision(
            "wait", f"{why}; waiting for labels ({new_labels}/{settings.retrain_min_labeled})"
        )
    if last_retrain is not None:
        since = (now - last_retrain).total_seconds()
        if since < settings.retrain_cooldown_s:
            return Decision(
                "wait",
                f"{why}; last retrain {since:.0f}s ago "
                f"(cooldown {settings.retrain_cooldown_s:.0f}s)",
            )
    return Decision("retrain", why)

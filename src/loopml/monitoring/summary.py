"""The typed result of one monitoring run: what the CLI, the controller, the demo, the HTML report
and the database read. ``to_dict`` gives the JSON written next to the report and stored in
``monitor_results``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from loopml.monitoring.drift import Check
from loopml.monitoring.proxy import OfflineLive
from loopml.monitoring.quality import Quality

__all__ = ["MonitorSummary", "ReportFiles", "Verdict", "WindowInfo"]

Verdict = Literal["ok", "drift", "quality_alarm", "insufficient_data"]


@dataclass
class WindowInfo:
    """The predictions a run looked at."""

    requested: int | None
    since: str | None
    rows: int
    sampled: int
    first_ts: str | None
    last_ts: str | None
    text_logged: bool | None


@dataclass
class ReportFiles:
    """Where a run wrote its reports."""

    html: str
    json: str
    evidently: list[str] = field(default_factory=list)


@dataclass
class MonitorSummary:
    """What one monitoring run found about one model version."""

    ts: str
    model_name: str
    model_version: str
    model_created_at: float | None
    verdict: Verdict
    drift_detected: bool
    quality_alarm: bool
    reasons: list[str]
    window: WindowInfo
    checks: list[Check]
    drift_scores: dict[str, float]
    quality: Quality
    thresholds: dict[str, float]
    reports: ReportFiles | None = None
    mlflow_run_id: str | None = None
    seconds: float | None = None
    #: filled by the controller for a champion that learned from feedback: live_macro_f1,
    #: reachable_macro_f1, gap, new_labels, margin and the estimate (see docs/loop.md)
    learning: dict[str, Any] | None = None
    #: the champion's offline test macro-F1 beside its live one (Model 2 of the ML Test Score)
    offline_vs_live: OfflineLive | None = None

    @property
    def alarm(self) -> bool:
        """Whether drift, a live-quality alarm or a too wide offline/live gap was found."""
        gap = self.offline_vs_live is not None and self.offline_vs_live.status == "alarm"
        return self.drift_detected or self.quality_alarm or gap

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the stored and written summary)."""
        return asdict(self)

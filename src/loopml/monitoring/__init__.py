"""Monitoring: drift of inputs and predictions, live quality, reports and Prometheus gauges."""

from __future__ import annotations

from loopml.monitoring.drift import Check, Reference, Thresholds, build_reference, detect_drift
from loopml.monitoring.monitor import (
    Assessment,
    MonitorError,
    MonitorReport,
    Verdict,
    assess,
    run_monitor,
)
from loopml.monitoring.quality import Quality, live_quality

__all__ = [
    "Assessment",
    "Check",
    "MonitorError",
    "MonitorReport",
    "Quality",
    "Reference",
    "Thresholds",
    "Verdict",
    "assess",
    "build_reference",
    "detect_drift",
    "live_quality",
    "run_monitor",
]

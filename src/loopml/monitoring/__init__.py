"""Monitoring: drift of inputs and predictions, live quality, reports and Prometheus gauges.

Names are imported on first use (PEP 562), so that ``loopml --help`` does not pay for
Evidently, MLflow and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "OFFLINE_ONLINE_KEY",
    "Agreement",
    "Assessment",
    "Check",
    "MonitorCollector",
    "MonitorError",
    "MonitorReport",
    "MonitorSummary",
    "Quality",
    "Reference",
    "SkewReport",
    "Thresholds",
    "Verdict",
    "agreement",
    "assess",
    "build_reference",
    "check_skew",
    "detect_drift",
    "live_quality",
    "run_monitor",
]

_HOME = {
    "Check": "drift",
    "Reference": "drift",
    "Thresholds": "drift",
    "build_reference": "drift",
    "detect_drift": "drift",
    "MonitorCollector": "metrics",
    "Assessment": "monitor",
    "MonitorReport": "monitor",
    "Verdict": "summary",
    "MonitorSummary": "summary",
    "assess": "monitor",
    "run_monitor": "monitor",
    "Quality": "quality",
    "live_quality": "quality",
    "SkewReport": "skew",
    "check_skew": "skew",
    "OFFLINE_ONLINE_KEY": "offline_online",
    "Agreement": "offline_online",
    "agreement": "offline_online",
}


def __getattr__(name: str) -> Any:
    if name == "MonitorError":
        from loopml.errors import MonitorError

        return MonitorError
    if name in _HOME:
        return getattr(importlib.import_module(f"loopml.monitoring.{_HOME[name]}"), name)
    raise AttributeError(f"module 'loopml.monitoring' has no attribute {name!r}")

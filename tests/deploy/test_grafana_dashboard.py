"""The Grafana dashboard is valid JSON and queries only metrics loopml exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.core import Metric

from loopml.monitoring.metrics import MONITOR_METRICS
from loopml.serving.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GRAFANA = DEPLOY / "grafana"

# Built-ins a query may name besides metrics.
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "le",
    "inf",
    "nan",
    "up",
}
_SUFFIXES = ("_bucket", "_sum", "_count")


def _serving_names() -> set[str]:
    registry = Metrics().registry
    assert registry is not None
    names: set[str] = set()
    family: Metric
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in _SUFFIXES}
        else:
            names.add(family.name)
    return names


def _recorded_names() -> set[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus/rules/recording.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"]}


def known_metrics() -> set[str]:
    """Every metric name a dashboard may query."""
    return _serving_names() | set(MONITOR_METRICS) | _recorded_names()


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, labels, keywords or durations)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"(?<![\w:.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", "0", expr)  # numbers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word, rest = match.group(0), expr[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(word)
    return names


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def test_parser_sees_metrics_not_functions() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, variant) (rate("
        'loopml_http_request_duration_seconds_bucket{route=~"/v1/predict"}[5m]))) '
        "/ ignoring(x) group_left max(loopml:drift_score:max) > 1e-3"
    )
    assert metric_names(expr) == {
        "loopml_http_request_duration_seconds_bucket",
        "loopml:drift_score:max",
    }


def test_dashboard_queries_only_exposed_metrics() -> None:
    known = known_metrics()
    dashboards = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"]
        panels = [p for p in _panels(dashboard) if p["type"] != "row"]
        assert len({p["id"] for p in _panels(dashboard)}) == len(_panels(dashboard))
        for panel in panels:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                unknown = metric_names(target["expr"]) - known
                assert not unknown, f"{path.name}: {panel['title']!r} queries {unknown}"


def test_dashboard_covers_the_essentials() -> None:
    dashboard = json.loads((GRAFANA / "dashboards/loopml.json").read_text())
    queried = set()
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            queried |= metric_names(target["expr"])
    for needed in (
        "loopml:http_requests:rate5m",
        "loopml:predict_latency_seconds:p99_5m",
        "loopml:http_errors:ratio_rate5m",
        "loopml_batch_size_sum",
        "loopml:drift_score:max",
        "loopml_live_macro_f1",
        "loopml:predictions:rate5m",
    ):
        assert needed in queried


def test_provisioning_files_are_valid_yaml() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/loopml.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    uid = datasource["datasources"][0]["uid"]
    dashboard = json.loads((GRAFANA / "dashboards/loopml.json").read_text())
    assert all(p["datasource"]["uid"] == uid for p in _panels(dashboard) if p["type"] != "row")
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/loopml.yml").read_text())
    assert provider["providers"][0]["type"] == "file"

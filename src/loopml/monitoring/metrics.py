"""Prometheus gauges of monitoring, read from the newest ``monitor_results`` row at scrape time.

Every serving worker adds a :class:`MonitorCollector` to what its ``/metrics`` exports (see
:meth:`loopml.serving.metrics.Metrics.add_collector`; once per scrape with several workers): every
replica then reports the same, database-held verdict, and nothing has to push numbers into a
running process. A scrape never waits on the database for long: the read runs in a thread of its
own, at most once per ``ttl``, and a scrape that finds it still running after ``timeout`` exports
the values read before (a database outage freezes them; the last-run timestamp then ages and
``LoopmlMonitorNotRunning`` fires).

Every gauge also carries ``model``: the model whose newest result it is (one collector covers every
model a server serves).

==========================================  ======  =========================================
name                                        labels  meaning
==========================================  ======  =========================================
loopml_drift_score                          kind    drift distance of one check (text = ROC AUC)
loopml_drift_threshold                      kind    the threshold that check is judged against
loopml_drift_detected                       -       1 when any drift check reached its threshold
loopml_live_accuracy                        -       accuracy on predictions with feedback
loopml_live_macro_f1                        -       macro-F1 on predictions with feedback
loopml_live_macro_f1_lower / _upper         -       its 95% bootstrap interval
loopml_live_labeled_rows                    -       predictions of the window with feedback
loopml_live_quality_floor                   -       macro-F1 floor (LOOPML_MONITOR_MIN_MACRO_F1)
loopml_quality_alarm                        -       1 when the whole macro-F1 interval is under it
loopml_reachable_macro_f1                   -       macro-F1 a retrain could reach (docs/loop.md)
loopml_learning_gap                         -       reachable minus live macro-F1
loopml_monitor_window_rows                  -       predictions in the last monitored window
loopml_monitor_verdict                      verdict 1 for the last verdict, 0 for the others
loopml_monitor_last_run_timestamp_seconds   -       when the last monitoring run finished
loopml_monitor_model_created_timestamp_seconds  -   when the monitored version was registered
loopml_skew_detected                        -       1 when the controller's last skew check
                                                    found logged and recomputed predictions apart
loopml_skew_max_abs_diff                    -       its largest |logged - recomputed| probability
loopml_skew_share_above                     -       share of rows beyond LOOPML_SKEW_TOLERANCE
loopml_skew_label_mismatches                -       rows whose recomputed label differs
loopml_skew_rows                            -       logged predictions it rescored
loopml_skew_last_check_timestamp_seconds    -       when that check ran
loopml_offline_online_points                -       ended rollouts (of the last
                                                    LOOPML_OFFLINE_ONLINE_ROLLOUTS) with both an
                                                    offline and a live delta
loopml_offline_online_sign_agreement        -       share of them whose deltas agree in sign
loopml_offline_online_correlation           -       Pearson r of the deltas (3 points or more)
==========================================  ======  =========================================

The skew gauges come from the ``skew`` the controller adds to a monitoring run's summary
(:meth:`loopml.control.Controller.tick`); the offline/online gauges from the audit records of
ended rollouts (:mod:`loopml.monitoring.offline_online`), read with the summary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loopml.errors import StoreError
from loopml.monitoring.offline_online import Agreement, agreement
from loopml.store import Store

__all__ = [
    "MONITOR_METRICS",
    "VERDICTS",
    "MonitorCollector",
    "families_from_agreement",
    "families_from_summary",
    "latest_summary",
]

log = logging.getLogger(__name__)

VERDICTS = ("ok", "drift", "quality_alarm", "insufficient_data")

MONITOR_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "loopml_drift_score": (
        "Drift distance of one check (text: domain-classifier ROC AUC).",
        ("kind",),
    ),
    "loopml_drift_threshold": ("Threshold a drift check is judged against.", ("kind",)),
    "loopml_drift_detected": ("1 when any drift check reached its threshold.", ()),
    "loopml_live_accuracy": ("Accuracy on predictions with feedback.", ()),
    "loopml_live_macro_f1": ("Macro-F1 on predictions with feedback.", ()),
    "loopml_live_macro_f1_lower": ("Lower end of the 95% interval of live macro-F1.", ()),
    "loopml_live_macro_f1_upper": ("Upper end of the 95% interval of live macro-F1.", ()),
    "loopml_live_labeled_rows": ("Predictions of the monitored window with feedback.", ()),
    "loopml_live_quality_floor": ("Macro-F1 floor of the quality alarm.", ()),
    "loopml_quality_alarm": ("1 when the whole live macro-F1 interval is under its floor.", ()),
    "loopml_reachable_macro_f1": (
        "Macro-F1 a retrain on the labels available would reach (learning-curve estimate).",
        (),
    ),
    "loopml_learning_gap": ("Reachable macro-F1 minus live macro-F1.", ()),
    "loopml_monitor_window_rows": ("Predictions in the last monitored window.", ()),
    "loopml_monitor_verdict": ("1 for the verdict of the last monitoring run.", ("verdict",)),
    "loopml_monitor_last_run_timestamp_seconds": ("When the last monitoring run finished.", ()),
    "loopml_monitor_model_created_timestamp_seconds": (
        "When the monitored model version was registered.",
        (),
    ),
    "loopml_skew_detected": (
        "1 when the last skew check found logged predictions the registered model does not "
        "reproduce.",
        (),
    ),
    "loopml_skew_max_abs_diff": ("Largest |logged - recomputed| class probability.", ()),
    "loopml_skew_share_above": ("Share of rescored rows beyond the skew tolerance.", ()),
    "loopml_skew_label_mismatches": ("Rescored rows whose label differs from the logged.", ()),
    "loopml_skew_rows": ("Logged predictions the last skew check rescored.", ()),
    "loopml_skew_last_check_timestamp_seconds": ("When the last skew check ran.", ()),
    "loopml_offline_online_points": (
        "Recent ended rollouts with both an offline (gate) and a live (canary) delta.",
        (),
    ),
    "loopml_offline_online_sign_agreement": (
        "Share of those rollouts whose offline and live deltas agree in sign.",
        (),
    ),
    "loopml_offline_online_correlation": (
        "Pearson correlation of offline and live deltas over those rollouts.",
        (),
    ),
}


def _gauge(name: str) -> GaugeMetricFamily:
    help_text, labels = MONITOR_METRICS[name]
    return GaugeMetricFamily(name, help_text, labels=["model", *labels])


def _plain(name: str, value: Any, model: str) -> GaugeMetricFamily | None:
    if value is None:
        return None
    family = _gauge(name)
    family.add_metric([model], float(value))
    return family


def families_from_summary(summary: dict[str, Any], *, ran_at: float, model: str) -> list[Metric]:
    """The monitoring gauges of ``model`` for one summary (as written by ``run_monitor``)."""
    score, threshold = _gauge("loopml_drift_score"), _gauge("loopml_drift_threshold")
    for check in summary.get("checks", []):
        if check.get("score") is not None:
            score.add_metric([model, check["kind"]], float(check["score"]))
            threshold.add_metric([model, check["kind"]], float(check["threshold"]))
    verdict = _gauge("loopml_monitor_verdict")
    for name in VERDICTS:
        verdict.add_metric([model, name], 1.0 if summary.get("verdict") == name else 0.0)
    q = summary.get("quality", {})
    ci = q.get("macro_f1_ci") or (None, None)
    plain = {
        "loopml_drift_detected": float(bool(summary.get("drift_detected"))),
        "loopml_live_accuracy": q.get("accuracy"),
        "loopml_live_macro_f1": q.get("macro_f1"),
        "loopml_live_macro_f1_lower": ci[0],
        "loopml_live_macro_f1_upper": ci[1],
        "loopml_live_labeled_rows": q.get("labeled", 0),
        "loopml_live_quality_floor": q.get("floor"),
        "loopml_quality_alarm": float(bool(summary.get("quality_alarm"))),
        "loopml_monitor_window_rows": summary.get("window", {}).get("rows", 0),
        "loopml_monitor_last_run_timestamp_seconds": ran_at,
        "loopml_monitor_model_created_timestamp_seconds": summary.get("model_created_at"),
        "loopml_reachable_macro_f1": (summary.get("learning") or {}).get("reachable_macro_f1"),
        "loopml_learning_gap": (summary.get("learning") or {}).get("gap"),
    }
    plain |= _skew(summary.get("skew") or {})
    families: list[Metric] = [score, threshold, verdict]
    families += [
        f for name, value in plain.items() if (f := _plain(name, value, model)) is not None
    ]
    return families


def _skew(skew: dict[str, Any]) -> dict[str, Any]:
    if "passed" not in skew:  # no check yet, or it could not run (its error is in the summary)
        return {}
    return {
        "loopml_skew_detected": float(not skew["passed"]),
        "loopml_skew_max_abs_diff": skew.get("max_abs_diff"),
        "loopml_skew_share_above": skew.get("share_above"),
        "loopml_skew_label_mismatches": skew.get("label_mismatches"),
        "loopml_skew_rows": skew.get("rows"),
        "loopml_skew_last_check_timestamp_seconds": datetime.fromisoformat(
            skew["checked_at"]
        ).timestamp(),
    }


def families_from_agreement(found: Agreement, model: str) -> list[Metric]:
    """The offline/online gauges of ``model`` (none before a rollout ended)."""
    if not found.pairs:
        return []
    plain = {
        "loopml_offline_online_points": found.points,
        "loopml_offline_online_sign_agreement": found.sign_agreement,
        "loopml_offline_online_correlation": found.correlation,
    }
    return [f for name, value in plain.items() if (f := _plain(name, value, model)) is not None]


def _merged(families: Iterable[Metric]) -> list[Metric]:
    """One family per metric name, with every model's samples (an exposition may not repeat a
    name)."""
    by_name: dict[str, Metric] = {}
    for family in families:
        if family.name in by_name:
            by_name[family.name].samples.extend(family.samples)
        else:
            by_name[family.name] = family
    return list(by_name.values())


def latest_summary(store: Store, model_name: str) -> tuple[dict[str, Any], datetime] | None:
    """The summary and time of the newest monitoring run of ``model_name``, if any."""
    row = store.latest_monitor_result(model_name)
    if row is None:
        return None
    return dict(row.summary), row.ts


class MonitorCollector(Collector):
    """Exposes the newest monitoring result of each model of ``models`` (a name or names).

    Reads the database at most every ``ttl`` seconds (many scrapers or replicas do not turn into
    many queries), in a daemon thread; ``collect`` waits for a read at most ``timeout`` seconds,
    then answers with the values read before. At most one read is in flight, so a hung database
    costs one thread, not one per scrape.
    """

    def __init__(
        self,
        store: Store,
        models: str | Sequence[str],
        *,
        ttl: float = 15.0,
        timeout: float = 2.0,
        rollouts: int = 10,
    ) -> None:
        self.store = store
        self.models = [models] if isinstance(models, str) else list(models)
        self.rollouts = rollouts
        self.ttl = ttl
        self.timeout = timeout
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._read_at = float("-inf")
        self._reader: threading.Thread | None = None

    def describe(self) -> Iterable[Metric]:
        """Nothing up front, so registering the collector does not query the database."""
        return []

    def _read(self) -> None:
        try:
            families: list[Metric] | None = _merged(
                family for name in self.models for family in self._families(name)
            )
        except StoreError as exc:
            # A scrape must not fail because the database blinked: keep the last values.
            log.warning("monitoring gauges not refreshed: %s", exc)
            families = None
        with self._lock:
            if families is not None:
                self._cached = families
            # Failed reads wait for the ttl too: an outage is not retried on every scrape.
            self._read_at = time.monotonic()

    def _families(self, name: str) -> list[Metric]:
        found = latest_summary(self.store, name)
        agreed = agreement(self.store, name, last=self.rollouts)
        ran = (
            []
            if found is None
            else families_from_summary(found[0], ran_at=found[1].timestamp(), model=name)
        )
        return ran + families_from_agreement(agreed, name)

    def collect(self) -> Iterator[Metric]:
        """The gauges of the newest monitoring run (cached for ``ttl`` seconds)."""
        with self._lock:
            reader = self._reader
            stale = time.monotonic() - self._read_at >= self.ttl
            if stale and (reader is None or not reader.is_alive()):
                # Daemon: a read stuck on a dead database must not hold up the process's exit.
                reader = threading.Thread(target=self._read, name="loopml-monitor-gauges")
                reader.daemon = True
                self._reader = reader
                reader.start()
        if stale and reader is not None:
            reader.join(self.timeout)
        with self._lock:
            cached = list(self._cached)
        yield from cached

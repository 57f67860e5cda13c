"""Prometheus metrics of the serving data plane. The names are a contract: alerts and
dashboards (deploy/prometheus, deploy/grafana) are written against them.

====================================== ========= ===================================================
name                                   type      labels: meaning
====================================== ========= ===================================================
loopml_http_requests_total             counter   route, method, status, model_version, variant,
                                                 model: HTTP requests answered (route = path
                                                 template; model = the model's name, "" when
                                                 none answered)
loopml_http_request_duration_seconds   histogram route, model_version, variant: request to response
loopml_predictions_total               counter   model_version, variant, label, model: predicted
                                                 classes
loopml_batch_size                      histogram texts per model call
loopml_model_call_duration_seconds     histogram duration of one model call
loopml_queue_depth                     gauge     texts waiting for the model (livesum)
loopml_predlog_served_total            counter   prediction records produced (journaled)
loopml_predlog_written_total           counter   own records committed to the database
loopml_predlog_backlog                 gauge     served - written - dead-lettered (livesum)
loopml_predlog_spooled_total           counter   records that waited on the spool for the database
loopml_predlog_dropped_total           counter   records of batches the journal refused (503)
loopml_predlog_dead_letter_total       counter   records the database refused or torn lines, kept in
                                                 the spool's deadletter.jsonl (alerted)
loopml_predlog_replayed_total          counter   records of dead processes replayed from the spool
loopml_model_info                      gauge     model_name, model_version, variant: 1 = loaded;
                                                 0 = replaced earlier in this process (livemax)
loopml_model_loaded_timestamp_seconds  gauge     variant, model: when the serving model was loaded
loopml_model_reloads_total             counter   result (loaded, unchanged, failed, no_alias), model
loopml_feedback_total                  counter   result (accepted, unknown_id, invalid_label,
                                                 wrong_model, invalid, error): feedback items
loopml_model_errors_total              counter   model_version, variant, model: texts whose
                                                 model call failed (a failed challenger call is
                                                 answered by the champion) or whose model failed
                                                 to load
loopml_shadow_skipped_total            counter   champion answers not scored in shadow because
                                                 the challenger's queue was full
loopml_model_refused_total             counter   model_version, model, reason (mismatch, unverified,
                                                 unavailable): loads refused before any model
                                                 code ran (artifact hashes recorded at
                                                 registration differ, are missing, or cannot be
                                                 read)
loopml_models_loaded                   gauge     models this worker holds loaded (livesum)
loopml_model_unloads_total             counter   model: models unloaded to stay under
                                                 LOOPML_MAX_LOADED_MODEL_BYTES
loopml_model_cold_load_seconds         histogram how long a request waited for its model to load
                                                 again after an unload
====================================== ========= ===================================================

``served == written + backlog`` holds in every process (so for the sum). With several workers,
:func:`loopml.serving.run` sets ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates every
worker's files: filter ``loopml_model_info == 1`` for what serves now.

Collectors added with :meth:`Metrics.add_collector` (the monitoring gauges of
:class:`loopml.monitoring.MonitorCollector`) are exported by every worker's ``/metrics`` once per
scrape: ``MultiProcessCollector`` only aggregates the mmap files, so they are added to the registry
built for each scrape, not written to files.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client import multiprocess as prom_mp
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "multiprocess_dir"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def multiprocess_dir() -> str | None:
    """The prometheus_client multiprocess directory, when several workers share metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Every serving metric; one instance per app (a private registry unless multiprocess)."""

    def __init__(self) -> None:
        # `*_created` series double the exposition and nobody graphs them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        # The value class is chosen when prometheus_client is first imported: trust it, not the env.
        self.multiprocess = values.ValueClass.__name__ == "MmapedValue"
        # In multiprocess mode values live in mmap files; the registry is only built at scrape time.
        self.registry: CollectorRegistry | None = None if self.multiprocess else CollectorRegistry()
        self._collectors: list[Collector] = []
        reg = self.registry
        self.http_requests = Counter(
            "loopml_http_requests_total",
            "HTTP requests answered.",
            ["route", "method", "status", "model_version", "variant", "model"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "loopml_http_request_duration_seconds",
            "Time from request to response.",
            ["route", "model_version", "variant"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.predictions = Counter(
            "loopml_predictions_total",
            "Predicted-class counts, one per text.",
            ["model_version", "variant", "label", "model"],
            registry=reg,
        )
        self.batch_size = Histogram(
            "loopml_batch_size", "Texts per model call.", buckets=_BATCH_BUCKETS, registry=reg
        )
        self.model_call = Histogram(
            "loopml_model_call_duration_seconds",
            "Duration of one model call.",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.queue_depth = Gauge(
            "loopml_queue_depth",
            "Texts waiting for the model.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.predlog_served = Counter(
            "loopml_predlog_served", "Prediction records produced.", registry=reg
        )
        self.predlog_written = Counter(
            "loopml_predlog_written", "Prediction records committed to the database.", registry=reg
        )
        self.predlog_backlog = Gauge(
            "loopml_predlog_backlog",
            "Prediction records not yet committed (served - written).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.predlog_spooled = Counter(
            "loopml_predlog_spooled",
            "Records kept on the spool while the database was unavailable.",
            registry=reg,
        )
        self.predlog_dropped = Counter(
            "loopml_predlog_dropped",
            "Prediction records refused because the journal write failed (their requests got 503).",
            registry=reg,
        )
        self.predlog_dead_letter = Counter(
            "loopml_predlog_dead_letter",
            "Prediction records the database refused, or torn journal lines, kept in the"
            " dead-letter file.",
            registry=reg,
        )
        self.predlog_replayed = Counter(
            "loopml_predlog_replayed",
            "Records of earlier or dead processes replayed from the spool.",
            registry=reg,
        )
        self.model_info = Gauge(
            "loopml_model_info",
            "1 for each loaded model.",
            ["model_name", "model_version", "variant"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.model_loaded = Gauge(
            "loopml_model_loaded_timestamp_seconds",
            "When the serving model was loaded.",
            ["variant", "model"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "loopml_model_reloads",
            "Model reload attempts by result.",
            ["result", "model"],
            registry=reg,
        )
        self.feedback = Counter(
            "loopml_feedback", "Feedback items by result.", ["result"], registry=reg
        )

        self.model_errors = Counter(
            "loopml_model_errors",
            "Texts whose model call failed, and models that failed to load.",
            ["model_version", "variant", "model"],
            registry=reg,
        )
        self.shadow_skipped = Counter(
            "loopml_shadow_skipped",
            "Champion answers not scored in shadow (the challenger's queue was full).",
            registry=reg,
        )

        self.models_loaded = Gauge(
            "loopml_models_loaded",
            "Models this worker holds loaded.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.model_unloads = Counter(
            "loopml_model_unloads",
            "Models unloaded to stay under LOOPML_MAX_LOADED_MODEL_BYTES.",
            ["model"],
            registry=reg,
        )
        self.cold_load = Histogram(
            "loopml_model_cold_load_seconds",
            "Time a request waited for its model to load again after an unload.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=reg,
        )
        self.model_refused = Counter(
            "loopml_model_refused",
            "Model loads refused because the files differ from the hashes recorded at"
            " registration, none were recorded, or they cannot be read.",
            ["model_version", "reason", "model"],
            registry=reg,
        )

    def set_model(
        self, name: str, variant: str, version: str, old_version: str | None, loaded_at: float
    ) -> None:
        """Point the model gauges at a newly loaded version."""
        if old_version is not None and old_version != version:
            # Multiprocess files cannot forget a label set: mark the old version 0 instead.
            self.model_info.labels(name, old_version, variant).set(0)
        self.model_info.labels(name, version, variant).set(1)
        self.model_loaded.labels(variant, name).set(loaded_at)

    def unset_model(self, name: str, variant: str, version: str) -> None:
        """Mark a model that stopped serving (the challenger after a rollout)."""
        self.model_info.labels(name, version, variant).set(0)

    def add_collector(self, collector: Collector) -> None:
        """Export ``collector``'s metrics too (once per scrape, whatever the number of workers)."""
        if self.registry is not None:
            self.registry.register(collector)
        else:
            self._collectors.append(collector)

    def render(self) -> bytes:
        """The text exposition of every metric (all workers' in multiprocess mode)."""
        if self.registry is not None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        prom_mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in self._collectors:
            registry.register(collector)
        return generate_latest(registry)

    def process_exit(self) -> None:
        """Forget this process's live gauges (graceful shutdown of a worker)."""
        if self.multiprocess:
            prom_mp.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

"""``run_monitor``: a window of logged predictions against the champion's reference data.

Steps: find the champion > load its reference (training/validation splits from MLflow lineage, the
model's own predictions) > read the window > drift checks + live quality > verdict > reports (JSON,
HTML, Evidently) > MLflow run > ``monitor_results`` row (which ``/metrics`` exposes).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from loopml._time import as_utc
from loopml.config import Settings
from loopml.data import load_splits
from loopml.errors import MonitorError
from loopml.monitoring.drift import (
    Check,
    Reference,
    Thresholds,
    build_reference,
    detect_drift,
    sample_rows,
)
from loopml.monitoring.proxy import OfflineLive, compare_offline_live, offline_class_f1
from loopml.monitoring.quality import Quality, live_quality
from loopml.monitoring.report import write_evidently_reports, write_json, write_summary_html
from loopml.monitoring.summary import MonitorSummary, ReportFiles, Verdict, WindowInfo
from loopml.monitoring.window import load_window
from loopml.pipeline.gate import FEEDBACK_DOMAIN
from loopml.registry import Registry
from loopml.routing import CHAMPION
from loopml.store import MonitorResult, Store, open_settings_store
from loopml.tracking import experiment_id, run_tags

__all__ = ["Assessment", "MonitorError", "MonitorReport", "Verdict", "assess", "run_monitor"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Assessment:
    """Drift checks, live quality and the verdict for one window."""

    window_rows: int
    sampled_rows: int
    checks: list[Check]
    quality: Quality
    verdict: Verdict
    reasons: list[str]

    @property
    def drift_detected(self) -> bool:
        """Whether any drift check reached its threshold."""
        return any(c.status == "drift" for c in self.checks)

    @property
    def quality_alarm(self) -> bool:
        """Whether live macro-F1 is confidently under its floor."""
        return self.quality.status == "alarm"


def assess(
    reference: Reference, window: pd.DataFrame, settings: Settings, *, seed: int | None = None
) -> Assessment:
    """Judge ``window`` (columns text, length, label, confidence, optional truth) against
    ``reference``: the one decision code of ``loopml monitor`` and of the rate tests."""
    seed = settings.seed if seed is None else seed
    rows = len(window)
    truth = (
        window["truth"]
        if "truth" in window
        else pd.Series([None] * rows, dtype=object, index=window.index)
    )
    quality = live_quality(
        truth,
        window["label"],
        floor=settings.monitor_min_macro_f1,
        min_labeled=settings.monitor_min_labeled,
        seed=seed,
    )
    if rows < settings.monitor_min_samples:
        reason = f"{rows} predictions in the window; at least {settings.monitor_min_samples} needed"
        return Assessment(rows, 0, [], quality, "insufficient_data", [reason])
    checks = detect_drift(
        reference,
        window,
        Thresholds.from_settings(settings),
        cap=settings.monitor_sample_cap,
        seed=seed,
    )
    reasons = [
        f"{c.kind} drift: {c.method} {c.score:.3f} >= {c.threshold}"
        for c in checks
        if c.status == "drift" and c.score is not None
    ]
    verdict: Verdict = "drift" if reasons else "ok"
    if quality.status == "alarm" and quality.macro_f1_ci is not None:
        reasons.insert(
            0,
            f"live macro-F1 {quality.macro_f1:.3f} (95% CI up to "
            f"{quality.macro_f1_ci[1]:.3f}) under the floor {quality.floor}",
        )
        verdict = "quality_alarm"
    sampled = min(rows, settings.monitor_sample_cap)
    return Assessment(rows, sampled, checks, quality, verdict, reasons)


@dataclass
class MonitorReport:
    """What one monitoring run found and where it wrote it."""

    summary: MonitorSummary
    assessment: Assessment
    report_path: Path
    json_path: Path
    evidently_paths: list[Path] = field(default_factory=list)
    result_id: int | None = None

    @property
    def verdict(self) -> Verdict:
        """ok, drift, quality_alarm or insufficient_data."""
        return self.assessment.verdict

    @property
    def alarm(self) -> bool:
        """Whether drift, a quality alarm or an offline/live gap was found (the CLI exits 1)."""
        return self.summary.alarm

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary (as written next to the HTML report and stored in the database)."""
        return self.summary.to_dict()


@dataclass(frozen=True)
class _ReferenceKey:
    """What a reference depends on. ``run_id`` and the registry (not hashable) ride along without
    taking part in equality, so ``functools.lru_cache`` keys on the rest."""

    mlflow_uri: str
    model_name: str
    version: str
    sample_cap: int
    seed: int
    run_id: str = field(compare=False)
    registry: Registry = field(compare=False, repr=False)
    feedback_share: float = 0.0
    embedding_cap: int = 1000


def mix_feedback(
    frame: pd.DataFrame, extra: pd.DataFrame | None, *, share: float, cap: int, seed: int
) -> list[str]:
    """Texts of ``frame`` (plus ``extra``'s feedback rows) in which the feedback rows (domain
    ``feedback``) make up ``share``, at most ``cap`` in all; every text when there is no feedback.

    A retrained champion's data is its original data plus the served traffic that came back
    labelled; drawn at random, a few thousand feedback rows drown in tens of thousands of original
    ones and the reference stays the old domain."""
    rows = frame if extra is None else pd.concat([frame, extra[extra["domain"] == FEEDBACK_DOMAIN]])
    if "domain" not in rows or share <= 0:
        return rows["text"].astype(str).tolist()
    is_feedback = rows["domain"] == FEEDBACK_DOMAIN
    feedback, original = rows[is_feedback], rows[~is_feedback]
    if feedback.empty:
        return original["text"].astype(str).tolist()
    n_feedback = min(len(feedback), round(share * cap))
    # The ratio holds even with few feedback rows: the reference shrinks rather than dilutes.
    n_original = min(len(original), round(n_feedback * (1 - share) / share)) if share < 1 else 0
    parts = [
        sample_rows(feedback, n_feedback, seed=seed),
        sample_rows(original, n_original, seed=seed),
    ]
    return pd.concat(parts)["text"].astype(str).tolist()


@lru_cache(maxsize=4)
def _cached_reference(key: _ReferenceKey) -> Reference:
    def read(name: str) -> pd.DataFrame:
        try:
            split = load_splits(key.registry.client, key.run_id, [name], columns=["text", "domain"])
        except (MlflowException, OSError) as exc:
            raise MonitorError(
                f"run {key.run_id} has no data/{name}.parquet to compare with: {exc}"
            ) from exc
        return split[name]

    train, validation = read("train"), read("validation")
    learned = "domain" in train and bool((train["domain"] == FEEDBACK_DOMAIN).any())
    # A retrained champion's feedback holdout sits in its test split: held-out rows of the new
    # traffic, the right place to observe its predictions (as the validation split is).
    test = read("test") if learned and key.feedback_share > 0 else None
    share, cap, seed = key.feedback_share, key.sample_cap, key.seed
    classifier = key.registry.load(key.version)
    return build_reference(
        mix_feedback(train, None, share=share, cap=cap, seed=seed),
        mix_feedback(validation, test, share=share, cap=cap, seed=seed),
        classifier,
        cap=key.sample_cap,
        seed=key.seed,
        embedding_cap=key.embedding_cap,
    )


def load_reference(settings: Settings, registry: Registry, version: str, run_id: str) -> Reference:
    """The reference of ``version`` (cached per process: the controller calls this in a loop)."""
    key = _ReferenceKey(
        settings.mlflow_uri,
        settings.model_name,
        version,
        settings.monitor_sample_cap,
        settings.seed,
        run_id,
        registry,
        settings.monitor_reference_feedback_share,
        settings.monitor_embedding_cap,
    )
    return _cached_reference(key)


def _iso(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return as_utc(pd.Timestamp(value).to_pydatetime()).isoformat()


def _summary(
    settings: Settings,
    version: str,
    created: float | None,
    a: Assessment,
    window: pd.DataFrame,
    requested: int | None,
    since: datetime | None,
    now: datetime,
) -> MonitorSummary:
    return MonitorSummary(
        ts=now.isoformat(),
        model_name=settings.model_name,
        model_version=version,
        model_created_at=created,
        verdict=a.verdict,
        drift_detected=a.drift_detected,
        quality_alarm=a.quality_alarm,
        reasons=list(a.reasons),
        window=WindowInfo(
            requested=requested,
            since=since.isoformat() if since else None,
            rows=a.window_rows,
            sampled=a.sampled_rows,
            first_ts=_iso(window["ts"].min()) if len(window) else None,
            last_ts=_iso(window["ts"].max()) if len(window) else None,
            text_logged=bool(window["text"].notna().any()) if len(window) else None,
        ),
        checks=list(a.checks),
        drift_scores={c.kind: c.score for c in a.checks if c.score is not None},
        quality=a.quality,
        thresholds={
            "min_samples": settings.monitor_min_samples,
            "min_labeled": settings.monitor_min_labeled,
            "sample_cap": settings.monitor_sample_cap,
            "text_auc": settings.monitor_text_auc_threshold,
            "descriptor": settings.monitor_descriptor_threshold,
            "confidence": settings.monitor_confidence_threshold,
            "label": settings.monitor_label_threshold,
            "min_macro_f1": settings.monitor_min_macro_f1,
        },
    )


def _log_mlflow(
    settings: Settings, registry: Registry, summary: MonitorSummary, files: list[Path]
) -> str:
    client = registry.client
    try:
        exp = experiment_id(settings, client)
        run = client.create_run(
            exp,
            run_name=f"monitor-v{summary.model_version}",
            tags={
                "loopml.kind": "monitor",
                "loopml.model_version": summary.model_version,
                "loopml.verdict": summary.verdict,
                **run_tags(),
            },
        )
        run_id = str(run.info.run_id)
        try:
            _log_run(client, run_id, summary, files)
        except BaseException:
            # Failed, or cut short (the controller stopping): the run ends, never stays RUNNING.
            with contextlib.suppress(MlflowException, OSError):
                client.set_terminated(run_id, "KILLED")
            raise
        client.set_terminated(run_id)
    except MlflowException as exc:
        raise MonitorError(f"cannot log the monitoring run to MLflow: {exc.message}") from exc
    return run_id


def _log_run(client: Any, run_id: str, summary: MonitorSummary, files: list[Path]) -> None:
    """The metrics, tags and report files of a monitoring run."""
    stamp = int(time.time() * 1000)
    scores = summary.drift_scores.items()
    values: dict[str, float] = {f"drift.{k}": float(v) for k, v in scores}
    q = summary.quality
    values["window_rows"] = float(summary.window.rows)
    values["labeled_rows"] = float(q.labeled)
    if q.accuracy is not None:
        values["live_accuracy"] = float(q.accuracy)
    if q.macro_f1 is not None:
        values["live_macro_f1"] = float(q.macro_f1)
    gap = summary.offline_vs_live.gap if summary.offline_vs_live else None
    if gap is not None:
        values["offline_live_gap"] = float(gap)
    values["drift_detected"] = float(summary.drift_detected)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, stamp, 0) for k, v in values.items()],
        tags=[RunTag("loopml.model_name", summary.model_name)],
    )
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="monitor")


def _store(store: Store, summary: MonitorSummary, report_path: Path) -> int:
    row = MonitorResult(
        ts=datetime.fromisoformat(summary.ts),
        model_name=summary.model_name,
        model_version=summary.model_version,
        window_size=summary.window.rows,
        verdict=summary.verdict,
        summary=summary.to_dict(),
        report_path=str(report_path),
    )
    with store.session() as session:
        session.add(row)
        session.flush()
        return int(row.id)


def _offline_live(
    settings: Settings, registry: Registry, run_id: str, window: pd.DataFrame
) -> OfflineLive | None:
    """The champion's recorded test scores beside its live ones (None if the run has none)."""
    try:
        metrics = registry.client.get_run(run_id).data.metrics
    except MlflowException:
        return None
    if "macro_f1" not in metrics:
        return None
    return compare_offline_live(
        float(metrics["macro_f1"]),
        offline_class_f1(metrics),
        window["truth"],
        window["label"],
        min_labeled=settings.monitor_min_labeled,
        max_gap=settings.monitor_max_offline_gap,
    )


def _check_usage(window: int | None, since: datetime | None) -> None:
    if window is not None and since is not None:
        raise MonitorError("give either a window size or a start time, not both")
    if window is not None and window < 1:
        raise MonitorError(f"window must be at least 1 prediction, got {window}")


def run_monitor(
    settings: Settings,
    *,
    window: int | None = None,
    since: datetime | None = None,
    progress: Progress | None = None,
) -> MonitorReport:
    """Compare the newest ``window`` predictions (or those since ``since``; default
    ``monitor_window``) of the champion with its reference data; write, log and store the result."""
    _check_usage(window, since)
    say = progress or (lambda _step: None)
    started = time.perf_counter()
    requested = window if window is not None or since is not None else settings.monitor_window
    registry = Registry(settings)
    champion = registry.alias(CHAMPION)
    if champion is None:
        raise MonitorError(
            f"model {settings.model_name!r} has no champion to monitor: "
            "train and promote a version first"
        )
    version = str(champion.version)
    if not champion.run_id:
        raise MonitorError(f"version {version} has no training run: no reference data")
    say("reference")
    reference = load_reference(settings, registry, version, champion.run_id)
    say("window")
    with open_settings_store(settings) as store:
        frame = load_window(
            store,
            model_name=settings.model_name,
            model_version=version,
            window=requested,
            since=since,
        )
        say("drift")
        assessment = assess(reference, frame, settings)
        now = datetime.now(UTC)
        created = champion.creation_timestamp / 1000 if champion.creation_timestamp else None
        summary = _summary(settings, version, created, assessment, frame, requested, since, now)
        summary.offline_vs_live = _offline_live(settings, registry, champion.run_id, frame)
        gap_reason = summary.offline_vs_live.reason() if summary.offline_vs_live else None
        if gap_reason:
            summary.reasons.append(gap_reason)
        say("report")
        report = _write_reports(settings, reference, frame, assessment, summary, now)
        say("log")
        # The Evidently pages (about 7.5 MB a run) go to MLflow only as the evidence of an
        # alarm: a controller monitoring a healthy model every 5 minutes would otherwise add
        # 2 GB a day to the artifact store. The summary page, JSON and scores always go.
        evidence = report.evidently_paths if summary.alarm else []
        summary.mlflow_run_id = _log_mlflow(
            settings, registry, summary, [report.report_path, report.json_path, *evidence]
        )
        summary.seconds = round(time.perf_counter() - started, 3)
        write_json(summary.to_dict(), report.json_path)
        report.result_id = _store(store, summary, report.report_path)
    _prune_reports(settings.reports_dir, settings.model_name, settings.monitor_keep_reports)
    return report


def _prune_reports(folder: Path, model_name: str, keep: int) -> None:
    """Remove the report files of all but the newest ``keep`` runs of ``model_name``: each run
    writes about 7.5 MB, and the controller runs one every ``monitor_interval_s``, forever."""
    stems = sorted(
        (p.with_suffix("") for p in folder.glob(f"monitor-{model_name}-v*.json")),
        key=lambda stem: stem.name.rsplit("-", 1)[-1],  # the run's UTC time, sortable as text
    )
    for stem in stems[:-keep]:
        for path in (
            stem.with_suffix(".json"),
            stem.with_suffix(".html"),
            *folder.glob(f"{stem.name}-evidently-*.html"),
        ):
            path.unlink(missing_ok=True)


def _write_reports(
    settings: Settings,
    reference: Reference,
    frame: pd.DataFrame,
    assessment: Assessment,
    summary: MonitorSummary,
    now: datetime,
) -> MonitorReport:
    folder = settings.reports_dir
    folder.mkdir(parents=True, exist_ok=True)
    stem = (
        folder / f"monitor-{settings.model_name}-v{summary.model_version}-"
        f"{now.strftime('%Y%m%dT%H%M%S%fZ')}"
    )
    evidently: list[Path] = []
    if assessment.checks:
        sample = sample_rows(frame, settings.monitor_sample_cap, seed=settings.seed)
        evidently = write_evidently_reports(reference, sample, assessment.checks, stem)
    summary.reports = ReportFiles(
        str(stem) + ".html", str(stem) + ".json", [str(p) for p in evidently]
    )
    json_path = write_json(summary.to_dict(), Path(str(stem) + ".json"))
    html_path = write_summary_html(summary, Path(str(stem) + ".html"))
    return MonitorReport(summary, assessment, html_path, json_path, evidently)

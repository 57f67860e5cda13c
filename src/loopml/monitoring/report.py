"""Monitoring reports: a JSON summary, a one-page HTML summary and Evidently's HTML reports."""

from __future__ import annotations

import functools
import json
import logging
import warnings
from pathlib import Path, PurePath
from typing import Any

import jinja2
import pandas as pd

from loopml.errors import MonitorError
from loopml.monitoring.descriptors import oov_rates, surface_descriptors
from loopml.monitoring.drift import Check, Reference
from loopml.monitoring.safe_html import REPORT_CSP, harden_evidently_html

__all__ = ["write_evidently_reports", "write_json", "write_summary_html"]

log = logging.getLogger(__name__)


def write_json(summary: dict[str, Any], path: Path) -> Path:
    """Write the summary as indented JSON."""
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _evidently_report(
    reference: pd.DataFrame, current: pd.DataFrame, checks: list[Check], path: Path
) -> Path | None:
    from evidently import DataDefinition, Report
    from evidently import Dataset as EvidentlyDataset
    from evidently.metrics import ValueDrift

    wanted = [c for c in checks if c.status != "unavailable" and c.kind in current.columns]
    if not wanted:
        return None
    columns = [c.kind for c in wanted]
    definition = DataDefinition(
        text_columns=[c for c in columns if c == "text"],
        categorical_columns=[c for c in columns if c == "label"],
        numerical_columns=[c for c in columns if c not in ("text", "label")],
    )
    report = Report(
        [ValueDrift(column=c.kind, method=c.method, threshold=c.threshold) for c in wanted]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Evidently's and pandas' internal chatter
        snapshot = report.run(
            EvidentlyDataset.from_pandas(
                current[columns].reset_index(drop=True), data_definition=definition
            ),
            EvidentlyDataset.from_pandas(
                reference[columns].reset_index(drop=True), data_definition=definition
            ),
        )
        page = snapshot.get_html_str(as_iframe=False)
    # Never Evidently's page as is: its data is unescaped JSON inside <script> (issue 19).
    try:
        safe = harden_evidently_html(page)
    except MonitorError as exc:
        # No page rather than an unsafe one; the checks and the summary do not need it.
        log.warning("Evidently report %s left out: %s", path.name, exc)
        return None
    path.write_text(safe, encoding="utf-8")
    return path


def write_evidently_reports(
    reference: Reference, sample: pd.DataFrame, checks: list[Check], stem: Path
) -> list[Path]:
    """Evidently HTML for the input checks and for the prediction checks (same methods, thresholds).

    Two reports because inputs are compared with the training split and predictions with the
    model's output on the validation split.
    """
    inputs = pd.DataFrame({"length": sample["length"].to_numpy()})
    texts = sample["text"].dropna()
    by_kind = {c.kind: c for c in checks}
    text_ok = by_kind.get("text") is not None and by_kind["text"].status != "unavailable"
    if text_ok:
        inputs = surface_descriptors(texts).reset_index(drop=True)
        inputs.insert(0, "text", texts.to_numpy())
    outputs = sample[["label", "confidence"]].copy()
    if text_ok and reference.vocabulary is not None:
        # Rows whose text was not logged get NaN, which Evidently leaves out.
        outputs["oov"] = pd.Series(oov_rates(texts, reference.vocabulary), index=texts.index)
    outputs = outputs.reset_index(drop=True)
    input_checks = [c for c in checks if c.group == "input" and c.kind != "oov"]
    output_checks = [c for c in checks if c.group == "prediction" or c.kind == "oov"]
    written = []
    for ref, cur, group, suffix in (
        (reference.inputs, inputs, input_checks, "inputs"),
        (reference.outputs, outputs, output_checks, "predictions"),
    ):
        target = stem.with_name(f"{stem.name}-evidently-{suffix}.html")
        path = _evidently_report(ref, cur, group, target)
        if path is not None:
            written.append(path)
    return written


@functools.cache
def _templates() -> jinja2.Environment:
    """The monitoring package's templates (created on first use), HTML-escaping every value."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("loopml.monitoring", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["csp"] = REPORT_CSP
    env.filters["fmt"] = _fmt
    env.filters["basename"] = lambda path: PurePath(str(path)).name
    return env


def _fmt(value: Any) -> str:
    """A value as the report shows it (the template escapes it): floats with 3 decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def write_summary_html(summary: object, path: Path) -> Path:
    """A self-contained page a person can open: verdict, every check, live quality, links.

    ``summary`` is the monitor's summary, a dict or an object with the same attributes (the
    template reads ``summary.window.rows``, ``summary.quality[key]`` and so on).
    """
    page = _templates().get_template("report.html").render(summary=summary)
    path.write_text(page, encoding="utf-8")
    return path

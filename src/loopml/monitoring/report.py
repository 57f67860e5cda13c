"""Monitoring reports: a JSON summary, a one-page HTML summary and Evidently's HTML reports."""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from loopml.monitoring.descriptors import oov_rates, surface_descriptors
from loopml.monitoring.drift import Check, Reference

__all__ = ["write_evidently_reports", "write_json", "write_summary_html"]


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
    report = Report([ValueDrift(column=c.kind, method=c.method, threshold=c.threshold)
                     for c in wanted])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Evidently's and pandas' internal chatter
        snapshot = report.run(
            EvidentlyDataset.from_pandas(current[columns].reset_index(drop=True),
                                         data_definition=definition),
            EvidentlyDataset.from_pandas(reference[columns].reset_index(drop=True),
                                         data_definition=definition),
        )
        snapshot.save_html(str(path))
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


_CSS = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:left}.drift,.alarm{color:#b00;font-weight:bold}.ok{color:#070}
.unavailable,.insufficient_data{color:#888}"""


def _row(cells: list[str], cls: str = "") -> str:
    tds = "".join(f"<td>{c}</td>" for c in cells)
    return f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return html.escape(str(value))


def write_summary_html(summary: dict[str, Any], path: Path) -> Path:
    """A self-contained page a person can open: verdict, every check, live quality, links."""
    checks = "".join(
        _row([_fmt(c["kind"]), _fmt(c["group"]), _fmt(c["method"]), _fmt(c["score"]),
              _fmt(c["threshold"]), f'<span class="{c["status"]}">{c["status"]}</span>',
              _fmt(c["note"])])
        for c in summary["checks"]
    )
    q = summary["quality"]
    quality = "".join(_row([html.escape(k), _fmt(q[k])]) for k in
                      ("labeled", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "floor",
                       "min_labeled", "status"))
    names = [html.escape(Path(p).name) for p in summary["reports"]["evidently"]]
    links = "".join(f'<li><a href="{n}">{n}</a></li>' for n in names)
    w = summary["window"]
    title = f"{html.escape(summary['model_name'])} version {_fmt(summary['model_version'])}"
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in summary["reasons"]) or "<li>none</li>"
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>loopml monitor: {title}</title>
<style>{_CSS}</style></head><body>
<h1>Monitoring: {title}</h1>
<p>Verdict: <span class="{html.escape(summary['verdict'])}">{html.escape(summary['verdict'])}</span>
 &mdash; {_fmt(summary['ts'])}</p>
<ul>{reasons}</ul>
<p>Window: {w['rows']} predictions ({w['sampled']} used for drift), from {_fmt(w['first_ts'])}
 to {_fmt(w['last_ts'])}; texts logged: {_fmt(w['text_logged'])}.</p>
<h2>Drift checks</h2>
<table><tr><th>check</th><th>group</th><th>method</th><th>score</th><th>threshold</th>
<th>status</th><th>note</th></tr>{checks}</table>
<h2>Live quality (from feedback)</h2><table>{quality}</table>
<h2>Evidently reports</h2><ul>{links or '<li>none</li>'}</ul>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path



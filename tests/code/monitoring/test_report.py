"""The one-page HTML summary: its content, escaping, and a summary given as a dict or objects."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopml.monitoring.report import write_summary_html

EVIL = "<script>alert(1)</script>"


def _summary() -> dict[str, Any]:
    return {
        "ts": "2024-01-02T03:04:05+00:00",
        "model_name": f"sentiment{EVIL}",
        "model_version": "3",
        "verdict": "drift",
        "reasons": ["text drift: AUC 0.912 > 0.8", EVIL],
        "window": {
            "rows": 1000,
            "sampled": 800,
            "first_ts": "2024-01-01T00:00:00+00:00",
            "last_ts": None,
            "text_logged": True,
        },
        "checks": [
            {
                "kind": "text",
                "group": "input",
                "method": "domain_classifier_auc",
                "score": 0.91234,
                "threshold": 0.8,
                "status": "drift",
                "note": None,
            },
            {
                "kind": "label",
                "group": "prediction",
                "method": "psi",
                "score": None,
                "threshold": 0.2,
                "status": "unavailable",
                "note": EVIL,
            },
        ],
        "quality": {
            "labeled": 10,
            "accuracy": 0.5,
            "accuracy_ci": [0.4, 0.6],
            "macro_f1": 0.45,
            "macro_f1_ci": (0.3, 0.55),
            "floor": 0.6,
            "min_labeled": 5,
            "status": "alarm",
        },
        "reports": {"evidently": ["/r/monitor-evidently-inputs.html", "/r/<b>&x.html"]},
    }


def _text(html: str) -> str:
    """The page without tags, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_summary_page_content_and_escaping(tmp_path: Path) -> None:
    page = write_summary_html(_summary(), tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>")
    assert "<script>" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4  # title x2, reason, note
    text = _text(page)
    for fragment in (
        "Verdict: drift — 2024-01-02T03:04:05+00:00",
        "text drift: AUC 0.912 &gt; 0.8",
        "Window: 1000 predictions (800 used for drift), from 2024-01-01T00:00:00+00:00 to -;"
        " texts logged: True.",
        "text input domain_classifier_auc 0.912 0.800 drift -",
        "label prediction psi - 0.200 unavailable",
        "labeled 10 accuracy 0.500 accuracy_ci [0.400, 0.600] macro_f1 0.450"
        " macro_f1_ci [0.300, 0.550] floor 0.600 min_labeled 5 status alarm",
        "Evidently reports monitor-evidently-inputs.html",
    ):
        assert fragment in text.replace("&mdash;", "—"), fragment
    assert '<span class="drift">drift</span>' in page
    assert '<a href="monitor-evidently-inputs.html">' in page
    assert '<li><a href="&lt;b&gt;&amp;x.html">&lt;b&gt;&amp;x.html</a></li>' in page

    empty = _summary()
    empty["reasons"], empty["reports"]["evidently"] = [], []
    text = _text(write_summary_html(empty, tmp_path / "e.html").read_text())
    assert "texts logged: True. Drift checks" in text
    assert text.count("none") == 2  # no reasons, no Evidently reports


@dataclass
class _Obj:
    """Stands in for the summary dataclass to come: attributes, no item access."""

    fields: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(name) from None


def _as_objects(value: Any) -> Any:
    if isinstance(value, dict):
        return _Obj({k: _as_objects(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_as_objects(v) for v in value]
    return value


def test_summary_as_objects_renders_the_same(tmp_path: Path) -> None:
    summary = _summary()
    as_dict = write_summary_html(summary, tmp_path / "d.html").read_text()
    as_objects = write_summary_html(_as_objects(copy.deepcopy(summary)), tmp_path / "o.html")
    assert as_objects.read_text() == as_dict

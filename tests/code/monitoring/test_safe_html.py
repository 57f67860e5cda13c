"""Evidently's pages as loopml writes them: the data's JSON cannot end its <script>, the texts
come back unchanged from it, and a CSP allows the page's own scripts only
(tests/e2e/test_hostile_reports.py opens such pages in Chromium)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from markupsafe import escape

from loopml.errors import MonitorError
from loopml.monitoring.drift import TEXT_METHOD, Check
from loopml.monitoring.report import _evidently_report, write_summary_html
from loopml.monitoring.safe_html import REPORT_CSP, harden_evidently_html, script_json

HOSTILE = [
    "</script><img src=y onerror=alert(1)>",
    "<!--<script>x</script>",
    "a & b </SCRIPT > <b>c</b>",
    "line\u2028sep",
]


def _texts(value: Any) -> set[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_texts(v) for v in value.values()), set())
    if isinstance(value, list):
        return set().union(*(_texts(v) for v in value), set())
    return set()


def _page(tmp_path: Path) -> str:
    """A real Evidently report (text drift) whose current texts are hostile."""
    ordinary = [f"an ordinary tweet about flights number {i}" for i in range(60)]
    reference = pd.DataFrame({"text": ordinary, "length": [len(t) for t in ordinary]})
    current_texts = [HOSTILE[i % len(HOSTILE)] + f" {i}" for i in range(60)]
    current = pd.DataFrame({"text": current_texts, "length": [len(t) for t in current_texts]})
    checks = [
        Check("text", "input", TEXT_METHOD, 0.9, 0.55, "drift"),
        Check("length", "input", "wasserstein", 0.1, 0.1, "ok"),
    ]
    path = _evidently_report(reference, current, checks, tmp_path / "inputs.html")
    assert path is not None
    return path.read_text(encoding="utf-8")


def test_script_json_reads_back_the_same() -> None:
    value = {"t": HOSTILE, "n": 1.5}
    safe = script_json(json.dumps(value))
    assert not set("<>&") & set(safe)
    assert json.loads(safe) == value


def test_evidently_page_keeps_its_texts_inside_its_scripts(tmp_path: Path) -> None:
    page = _page(tmp_path)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    # Evidently's own four: the data, `var global`, its library, the drawing call.
    assert len(scripts) == 4, [s[:60] for s in scripts]
    assert page.lower().count("</script") == 4
    data = re.search(r"var (metric_\w+) = ([^\n]*);\n", scripts[0])
    assert data is not None
    shown = _texts(json.loads(data.group(2)))
    assert any(s.startswith(HOSTILE[0]) for s in shown)  # Evidently's examples, verbatim
    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert meta is not None and page.index(meta.group()) < page.index("<script>")
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    }
    policy = meta.group(1)
    assert policy.startswith(REPORT_CSP)
    assert set(policy.split("script-src ", 1)[1].split()) == hashes
    assert "unsafe-inline" not in policy.split("script-src", 1)[1]


def test_a_page_of_another_shape_is_refused() -> None:
    with pytest.raises(MonitorError, match="unexpected Evidently report page"):
        harden_evidently_html("<html><head></head><body><script>var x = 1;</script></body>")


def test_summary_page_runs_no_script(tmp_path: Path) -> None:
    summary = {
        "ts": "t",
        "model_name": "m",
        "model_version": "1",
        "verdict": "ok",
        "reasons": [],
        "window": {"rows": 1, "sampled": 1, "first_ts": None, "last_ts": None, "text_logged": 1},
        "checks": [],
        "quality": dict.fromkeys(
            ("labeled", "accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "floor"), None
        )
        | {"min_labeled": 1, "status": "ok"},
        "reports": {"evidently": []},
    }
    page = write_summary_html(summary, tmp_path / "s.html").read_text()
    assert f'<meta http-equiv="Content-Security-Policy" content="{escape(REPORT_CSP)}">' in page
    assert "script-src" not in REPORT_CSP  # default-src 'none': no script at all

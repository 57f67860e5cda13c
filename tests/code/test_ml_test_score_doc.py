"""docs/ml-test-score.md: every test it cites exists, and every section reaches 6 points."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ml-test-score.md"
# `tests/x.py::name` or, after one, `::name` for another test of the same file
REF = re.compile(r"`(tests/[\w/]+\.py)?::(\w+)`")


def test_every_cited_test_exists() -> None:
    text = DOC.read_text()
    last: str | None = None
    missing = []
    cited = 0
    for path, name in REF.findall(text):
        last = path or last
        assert last is not None, f"::{name} cited before any test file"
        source = (ROOT / last).read_text() if (ROOT / last).is_file() else ""
        cited += 1
        if not re.search(rf"^(async )?def {name}\(", source, re.M):
            missing.append(f"{last}::{name}")
    assert cited > 80
    assert missing == []


def test_every_section_scores_at_least_six() -> None:
    rows = re.findall(
        r"^\| (Data|Model|Infrastructure|Monitoring) \|(.*)\| \*\*([\d.]+)\*\* \|$",
        DOC.read_text(),
        re.M,
    )
    assert [r[0] for r in rows] == ["Data", "Model", "Infrastructure", "Monitoring"]
    for section, items, total in rows:
        points = [float(p) for p in items.split("|")]
        assert len(points) == 7 and sum(points) == float(total) >= 6, section

"""Shared helper of the benchmarks: rewrite one marked section of benchmarks/README.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path(__file__).with_name("README.md")


def write_section(name: str, body: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (or append it)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _m: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    README.write_text(text)


def record(path: Path, report: dict[str, object], section: str, body: str) -> None:
    """Write ``report`` as JSON to ``path`` and ``body`` as the README section ``section``;
    called after each candidate, so a long run interrupted keeps what it measured."""
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    write_section(section, body)

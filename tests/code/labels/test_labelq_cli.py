"""``loopml label queue``: JSON for scripts, a table for people, exit 2 naming the bad input."""

from __future__ import annotations

import json
from typing import Any

from labelq_support import log_predictions
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings

runner = CliRunner()
TEXTS = [f"my bag was lost on flight {i}, {'again' if i % 2 else 'no answer'}" for i in range(30)]
PROBS = [
    {"negative": 0.4 + i / 100, "neutral": 0.35, "positive": 0.25 - i / 100} for i in range(30)
]


def cli(*args: str) -> tuple[int, Any, str]:
    result = runner.invoke(app, ["label", "queue", *args], catch_exceptions=False)
    parsed = json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None
    return result.exit_code, parsed, result.stdout + result.stderr


def test_json_table_and_leases(settings: Settings) -> None:
    log_predictions(settings, TEXTS, PROBS)
    code, doc, _ = cli("--limit", "5", "--strategy", "uncertainty", "--holder", "ann", "--json")
    assert code == 0
    assert doc["holder"] == "ann" and doc["strategy"] == "uncertainty"
    assert [i["request_id"] for i in doc["items"]] == ["r0", "r1", "r2", "r3", "r4"]
    assert doc["budget"]["handed_out"] == 5
    code, _, text = cli("-n", "3", "--holder", "bob")
    assert code == 0 and "leased to bob" in text
    code, doc, _ = cli("--limit", "100", "--json", "--holder", "cid")
    assert code == 0 and len(doc["items"]) == 22  # 30 - 5 - 3: nobody gets an item twice


def test_nothing_to_label(settings: Settings) -> None:
    code, doc, _ = cli("--json")
    assert code == 0 and doc["items"] == []
    code, _, text = cli()
    assert code == 0 and "nothing to label" in text


def test_bad_input_exits_2(settings: Settings) -> None:
    for args, words in (
        (("--strategy", "loudest"), "strategy"),
        (("--limit", "0"), "--limit"),
        (("--limit", "many"), "--limit"),
        (("--holder", "  "), "holder"),
        (("--lease-s", "0"), "--lease-s"),
    ):
        code, _, text = cli(*args, "--json")
        assert code == 2, args
        assert words in text, (args, text)
        assert "Traceback" not in text

"""Hostile training files (issue 19 row 9): every wrong type, a NUL, a missing or repeated column
is exit 2 from `loopml data validate` and `loopml train --data`, with the column and the row, never
a TypeError and exit 1 (the code of a failed gate); NUL is refused in training as in serving."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from loopml.cli import app

runner = CliRunner()
ROWS = 120


def rows() -> list[dict[str, object]]:
    return [{"text": f"a fine text number {i}", "label": "ab"[i % 2]} for i in range(ROWS)]


def jsonl(path: Path, records: list[Any]) -> None:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def with_row(n: int, **values: object) -> list[dict[str, object]]:
    """The good rows with data row ``n`` (1-based) changed."""
    records = rows()
    records[n - 1] = {**records[n - 1], **values}
    return records


def write_csv(
    path: Path, records: list[dict[str, object]], header: list[str] | None = None
) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header or ["text", "label"])
        for r in records:
            writer.writerow([r["text"], r["label"], *([r["text"]] if header else [])])


def jsonl_array_line(p: Path) -> None:
    records: list[object] = list(rows())
    records[2] = ["a fine text", "a"]
    jsonl(p, records)


def parquet_list_text(p: Path) -> None:
    frame = pd.DataFrame(rows())
    frame["text"] = [[t, "more"] for t in frame["text"]]
    frame.to_parquet(p)


def parquet_number_label(p: Path) -> None:
    frame = pd.DataFrame(rows())
    frame["label"] = [i % 2 for i in range(ROWS)]
    frame.to_parquet(p)


#: (file name, writer, what the message says)
CASES: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "object.jsonl",
        lambda p: jsonl(p, with_row(4, text={"nested": "text"})),
        "column 'text': not a string (found object): row 4",
    ),
    (
        "number.jsonl",
        lambda p: jsonl(p, with_row(2, text=42)),
        "column 'text': not a string (found number): row 2",
    ),
    (
        "label-object.jsonl",
        lambda p: jsonl(p, with_row(7, label={"a": 1})),
        "column 'label': not a string (found object): row 7",
    ),
    ("array-line.jsonl", jsonl_array_line, "row 3 (file line 3): a JSON array, not an object"),
    ("list.parquet", parquet_list_text, "column 'text': not a string (found list): 120 rows 1, 2"),
    ("labels.parquet", parquet_number_label, "column 'label': not a string (found number)"),
    (
        "nul-text.csv",
        lambda p: write_csv(p, with_row(8, text="a text\x00with NUL")),
        "column 'text': contains NUL (\\u0000), which serving refuses: row 8",
    ),
    (
        "nul-label.csv",
        lambda p: write_csv(p, with_row(9, label="a\x00")),
        "column 'label': contains NUL (\\u0000), which serving refuses: row 9",
    ),
    (
        "no-text.jsonl",
        lambda p: jsonl(p, [{"body": r["text"], "label": r["label"]} for r in rows()]),
        "missing column 'text' (columns present: body, label)",
    ),
    (
        "two-texts.csv",
        lambda p: write_csv(p, rows(), header=["text", "label", "text"]),
        "column 'text' appears 2 times",
    ),
]
IDS = [name for name, _, _ in CASES]


def refused(args: list[str], message: str) -> str:
    result = runner.invoke(app, args, catch_exceptions=False)
    out = result.stdout + result.stderr
    assert result.exit_code == 2, out
    assert message in out and "Traceback" not in out and "TypeError" not in out, out
    return out


@pytest.mark.parametrize(("name", "write", "message"), CASES, ids=IDS)
def test_data_validate_refuses_with_exit_2_the_column_and_the_row(
    home: Path, tmp_path: Path, name: str, write: Callable[[Path], None], message: str
) -> None:
    path = tmp_path / name
    write(path)
    refused(["data", "validate", str(path)], message)


TRAIN_CASES = [CASES[0], CASES[4], CASES[6]]  # the row's own: JSONL object, Parquet list, NUL


@pytest.mark.parametrize(("name", "write", "message"), TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses_the_file_and_registers_nothing(
    home: Path, tmp_path: Path, name: str, write: Callable[[Path], None], message: str
) -> None:
    path = tmp_path / name
    write(path)
    refused(["train", "--data", str(path)], message)
    listed = runner.invoke(app, ["models", "--json"], catch_exceptions=False)
    assert listed.exit_code == 0 and json.loads(listed.stdout) == [], listed.stdout


def test_a_good_file_of_the_same_shape_is_valid(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "good.jsonl"
    jsonl(path, list(rows()))
    result = runner.invoke(app, ["data", "validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.stdout + result.stderr

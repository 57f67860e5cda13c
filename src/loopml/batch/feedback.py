"""Labels that arrive later for scored rows: a file of ``batch_id,row_id,label`` or
``request_id,label`` rows (CSV or JSONL), turned into (request id, label) pairs.

Batch rows outside the logged sample get their prediction record first (from the batch's output
and input), so every label joins a prediction as API feedback does. Provenance: the key id
``import:<file name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loopml.batch.predlog import log_rows
from loopml.errors import DataError, DataSourceError

if TYPE_CHECKING:
    import pandas as pd

    from loopml.config import Settings
    from loopml.store import Store

__all__ = ["LabelFile", "import_key", "read_labels", "resolve_labels"]


@dataclass(frozen=True)
class LabelFile:
    """Labels read from a file: (request id, label) pairs and (batch id, row id, label) rows."""

    by_request: list[tuple[str, str]]
    by_row: list[tuple[str, int, str]]


def import_key(path: str | Path) -> str:
    """The provenance recorded with imported labels (the feedback's key id, 64 characters)."""
    return f"import:{Path(path).name}"[:64]


def _frame(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise DataSourceError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False).astype("string")
        return pd.read_csv(path, dtype="string", keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataSourceError(f"{path}: not readable as CSV or JSONL: {exc}") from exc


def _row_id(value: object) -> int | None:
    """A row id from a file's cell ("12", or "12.0" as pandas writes a column with gaps)."""
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() and number >= 0 else None


def read_labels(file: str | Path) -> LabelFile:
    """The labels of ``file``; DataError naming the file row for anything wrong."""
    path = Path(file)
    frame = _frame(path)
    columns = set(frame.columns)
    by_row = {"batch_id", "row_id", "label"} <= columns
    if not by_row and not {"request_id", "label"} <= columns:
        raise DataError(
            f"{path}: expected columns batch_id,row_id,label or request_id,label;"
            f" columns present: {', '.join(map(str, frame.columns))}"
        )
    requests: list[tuple[str, str]] = []
    rows: list[tuple[str, int, str]] = []
    for n, rec in enumerate(frame.to_dict("records"), start=2 if path.suffix == ".csv" else 1):
        label = str(rec.get("label") or "").strip()
        if not label:
            raise DataError(f"{path}, row {n}: no label")
        rid = str(rec.get("request_id") or "").strip() if "request_id" in columns else ""
        if rid:
            requests.append((rid, label))
            continue
        if not by_row:
            raise DataError(f"{path}, row {n}: no request_id")
        batch, row = str(rec.get("batch_id") or "").strip(), _row_id(rec.get("row_id"))
        if not batch or row is None:
            raise DataError(f"{path}, row {n}: needs a batch_id and a row_id (a number >= 0)")
        rows.append((batch, row, label))
    if not requests and not rows:
        raise DataError(f"{path}: no labels")
    return LabelFile(requests, rows)


def resolve_labels(store: Store, settings: Settings, labels: LabelFile) -> list[tuple[str, str]]:
    """(request id, label) for every label, batch rows logged as predictions first."""
    items = list(labels.by_request)
    batches: dict[str, set[int]] = {}
    for batch, row, _ in labels.by_row:
        batches.setdefault(batch, set()).add(row)
    ids = {batch: log_rows(store, settings, batch, rows) for batch, rows in batches.items()}
    items += [(ids[batch][row], label) for batch, row, label in labels.by_row]
    return items

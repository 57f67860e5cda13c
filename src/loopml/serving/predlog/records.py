"""Journal records: checking them and expanding the lines the batcher writes into rows.

A line is one record, or one model batch of records in columns (see ``Batcher._batch_record``):
the serving process makes one ``orjson`` call per batch and the writer computes text hashes and
lengths here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from loopml.store.models import PREDICTION_COLUMNS

COLUMNS = PREDICTION_COLUMNS  # one journal record: every column of ``predictions``
_STR = (str,)
_NUM = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "request_id": _STR,
    "ts": _NUM,
    "model_name": _STR,
    "model_version": _STR,
    "variant": _STR,
    "text": (str, type(None)),
    "text_hash": _STR,
    "text_length": (int,),
    "label": _STR,
    "probabilities": (dict,),
    "latency_ms": _NUM,
}


def _problem(rec: Any) -> str | None:
    """Why ``rec`` is not a storable record, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for col in COLUMNS:
        if col not in rec:
            return f"no {col!r}"
        types = _TYPES.get(col)
        value = rec[col]
        if types is not None and (not isinstance(value, types) or isinstance(value, bool)):
            return f"{col!r} is {type(value).__name__}"
    return None


def parse(lines: Iterable[bytes]) -> tuple[list[dict[str, Any]], list[tuple[bytes, str, int]]]:
    """Journal records, and the lines that are not valid records with the reason and the number
    of records they held. A line is one record, or one batch of records in columns."""
    rows: list[dict[str, Any]] = []
    bad: list[tuple[bytes, str, int]] = []
    for line in lines:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad.append((line, "not JSON (torn or corrupt)", 1))
            continue
        if isinstance(rec, dict) and "batch" in rec:
            expanded, problem = _expand(rec)
        else:
            expanded, problem = [rec], _problem(rec)
        if problem is None:
            problem = next((p for r in expanded if (p := _problem(r))), None)
        if problem is None:
            rows += expanded
        else:
            count = rec.get("batch") if isinstance(rec, dict) else None
            bad.append((line, problem, count if isinstance(count, int) and count > 0 else 1))
    return rows, bad


_BATCH_COLUMNS = ("request_id", "label", "probabilities", "latency_ms")


def _expand(batch: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The records of one batch line (see ``Batcher._batch_record``), or why it is invalid."""
    n = batch["batch"]
    classes = batch.get("classes")
    if not isinstance(classes, list):
        return [], "'classes' is not a list"
    texts = batch.get("text")
    if texts is None:
        texts = [None] * n if isinstance(n, int) else None
        hashes, lengths = batch.get("text_hash"), batch.get("text_length")
    else:
        hashes = (
            [hashlib.sha256(t.encode()).hexdigest() if isinstance(t, str) else None for t in texts]
            if isinstance(texts, list)
            else None
        )
        lengths = [len(t) if isinstance(t, str) else None for t in texts] if hashes else None
    columns: dict[str, Any] = {c: batch.get(c) for c in _BATCH_COLUMNS}
    columns |= {"text": texts, "text_hash": hashes, "text_length": lengths}
    for name, values in columns.items():
        if not isinstance(values, list) or len(values) != n:
            return [], f"{name!r} does not hold {n} values"
    shared = {c: batch.get(c) for c in ("ts", "model_name", "model_version", "variant")}
    records = []
    for i in range(n):
        rec = shared | {name: values[i] for name, values in columns.items()}
        probs = rec["probabilities"]
        if isinstance(probs, list) and len(probs) == len(classes):
            rec["probabilities"] = dict(zip(classes, probs, strict=True))
        records.append(rec)
    return records, None

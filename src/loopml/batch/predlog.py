"""Batch traffic in the prediction log: a sample of each batch, and single rows on demand.

A finished batch is recorded in the audit log (action ``batch_scored``, the batch id as reason,
the job and result as details): that is how a label for any of its rows finds the row later. A
uniform sample of its scored rows (``LOOPML_BATCH_LOG_SAMPLE``; every row of a smaller batch) is
written to ``predictions`` as variant ``batch`` with request ids :func:`batch_request_id`, so the
monitor and the controller see batch drift as they see live drift. Works on the output of either
engine: records are read back from the output parts, texts from the input.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from loopml.batch.inputs import list_inputs, parse_location, read_chunks
from loopml.batch.job import BatchJob, BatchResult
from loopml.errors import DataError, NotFoundError
from loopml.store import AuditEntry, Prediction, Store, current_actor

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import pyarrow as pa

    from loopml.config import Settings

__all__ = [
    "BATCH_ACTION",
    "BATCH_VARIANT",
    "batch_request_id",
    "check_batch_id",
    "find_batch",
    "log_rows",
    "log_sample",
    "record_batch",
]

BATCH_VARIANT = "batch"
BATCH_ACTION = "batch_scored"
_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}")


def check_batch_id(batch_id: str) -> str:
    """``batch_id`` if usable (letters, digits, ``.``, ``_``, ``-``; at most 50), else DataError."""
    if not _BATCH_ID.fullmatch(batch_id):
        raise DataError(
            f"batch id {batch_id!r}: use 1-50 letters, digits, '.', '_' or '-' (a letter or digit"
            " first)"
        )
    return batch_id


def batch_request_id(batch_id: str, row_id: int) -> str:
    """The prediction log's request id of one batch row (fits the 64-character column)."""
    rid = f"{batch_id}:{row_id}"
    return rid if len(rid) <= 64 else hashlib.sha256(rid.encode()).hexdigest()


def record_batch(store: Store, job: BatchJob, result: BatchResult) -> None:
    """Audit a finished batch (who scored what with which version, where the output is)."""
    store.audit(
        actor=current_actor(),
        action=BATCH_ACTION,
        model_name=job.model_name,
        from_version=None,
        to_version=result.model_version,
        reason=job.batch_id,
        details={"job": asdict(job), "result": asdict(result)},
    )


def find_batch(store: Store, batch_id: str) -> tuple[BatchJob, BatchResult]:
    """The job and result of a recorded batch; NotFoundError when none has that id."""
    query = (
        select(AuditEntry.details)
        .where(AuditEntry.action == BATCH_ACTION, AuditEntry.reason == batch_id)
        .order_by(AuditEntry.ts.desc())
        .limit(1)
    )
    with store.session() as session:
        details = session.scalars(query).first()
    if details is None:
        raise NotFoundError(f"no batch {batch_id!r} was scored here (see the audit log)")
    return BatchJob(**details["job"]), BatchResult(**details["result"])


def _output_parts(job: BatchJob) -> Iterator[pa.RecordBatch]:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    out = parse_location(job.output)
    fs = out.filesystem()
    infos = fs.get_file_info(pafs.FileSelector(out.path, recursive=True))
    errors = out.join("errors") + "/"
    parts = sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.endswith(".parquet")
        and not i.path.startswith(errors)
        and not i.base_name.startswith(("_", "."))
    )
    for path in parts:
        with fs.open_input_file(path) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=65536)


def _records(batch: pa.RecordBatch, keep: Iterable[int]) -> Iterator[dict[str, Any]]:
    """The records of rows ``keep`` of an output batch (only those rows are converted)."""
    indices = list(keep)
    if not indices:
        return
    columns = batch.take(_int64(indices)).to_pydict()
    probs = [c for c in columns if c.startswith("prob_")]
    for i in range(len(indices)):
        yield {
            "row_id": columns["row_id"][i],
            "label": columns["label"][i],
            "probabilities": {c.removeprefix("prob_"): float(columns[c][i]) for c in probs},
        }


def _sample(job: BatchJob, size: int) -> list[dict[str, Any]]:
    """A uniform sample of ``size`` scored rows (reservoir: one pass, memory of ``size``)."""
    rng = random.Random(job.batch_id)
    kept: list[dict[str, Any]] = []
    seen = 0
    for batch in _output_parts(job):
        picks: list[tuple[int | None, int]] = []
        for i in range(batch.num_rows):
            seen += 1
            if len(kept) + len(picks) < size:
                picks.append((None, i))
            elif (drawn := rng.randrange(seen)) < size:
                picks.append((drawn, i))
        for (slot, _), record in zip(picks, _records(batch, [i for _, i in picks]), strict=True):
            if slot is None:
                kept.append(record)
            else:
                kept[slot] = record
    return kept


def _wanted(job: BatchJob, rows: set[int]) -> list[dict[str, Any]]:
    """The output records of ``rows`` (rows not in the output are left out)."""
    import pyarrow.compute as pc

    found: list[dict[str, Any]] = []
    needle = sorted(rows)
    for batch in _output_parts(job):
        mask = pc.is_in(batch.column("row_id"), value_set=_int64(needle))
        keep = [i for i, hit in enumerate(mask.to_pylist()) if hit]
        found += _records(batch, keep)
    return found


def _int64(values: list[int]) -> pa.Array:
    import pyarrow as pa

    return pa.array(values, type=pa.int64())


def _texts(job: BatchJob, rows: set[int]) -> dict[int, str]:
    """The input texts of ``rows``, read again from the input (one streaming pass)."""
    source = parse_location(job.input)
    fs = source.filesystem()
    texts: dict[int, str] = {}
    last = max(rows, default=-1)
    for chunk in read_chunks(fs, list_inputs(source, fs), job.text_column, job.id_column):
        if chunk.start > last:
            break
        for i, text in enumerate(chunk.texts):
            if chunk.start + i in rows and isinstance(text, str):
                texts[chunk.start + i] = text
    return texts


def _insert(
    store: Store,
    settings: Settings,
    job: BatchJob,
    result: BatchResult,
    records: list[dict[str, Any]],
) -> int:
    """Write ``records`` as predictions (existing request ids left as they are)."""
    texts = _texts(job, {r["row_id"] for r in records})
    now = datetime.now(UTC)
    latency = 1000 * result.seconds / max(result.rows_scored + result.rows_failed, 1)
    rows = []
    for rec in records:
        text = texts[rec["row_id"]]
        rows.append(
            {
                "request_id": batch_request_id(job.batch_id, rec["row_id"]),
                "ts": now,
                "model_name": result.model_name,
                "model_version": result.model_version,
                "variant": BATCH_VARIANT,
                "text": text if settings.log_text else None,
                "text_hash": hashlib.sha256(text.encode()).hexdigest(),
                "text_length": len(text),
                "label": rec["label"],
                "probabilities": rec["probabilities"],
                "latency_ms": latency,
            }
        )
    if not rows:
        return 0
    dialect = postgresql if store.engine.dialect.name == "postgresql" else sqlite
    with store.session() as session:
        for at in range(0, len(rows), 500):
            stmt = dialect.insert(Prediction.__table__).values(rows[at : at + 500])
            session.execute(stmt.on_conflict_do_nothing())
    return len(rows)


def log_sample(store: Store, settings: Settings, job: BatchJob, result: BatchResult) -> int:
    """Record the batch and log a sample of its scored rows; the number of rows logged."""
    record_batch(store, job, result)
    if settings.batch_log_sample == 0 or result.rows_scored == 0:
        return 0
    return _insert(store, settings, job, result, _sample(job, settings.batch_log_sample))


def log_rows(store: Store, settings: Settings, batch_id: str, rows: set[int]) -> dict[int, str]:
    """Make sure ``rows`` of batch ``batch_id`` are in the prediction log (read from its output
    and input when not); row id -> request id. NotFoundError for rows the batch did not score."""
    job, result = find_batch(store, batch_id)
    ids = {row: batch_request_id(batch_id, row) for row in rows}
    with store.session() as session:
        query = select(Prediction.request_id).where(Prediction.request_id.in_(ids.values()))
        logged = set(session.scalars(query))
    missing = {row for row, rid in ids.items() if rid not in logged}
    if missing:
        records = _wanted(job, missing)
        absent = sorted(missing - {r["row_id"] for r in records})
        if absent:
            raise NotFoundError(
                f"batch {batch_id} scored no row {', '.join(map(str, absent[:10]))}"
                " (rows that went to its errors output, or beyond its input, have no prediction)"
            )
        _insert(store, settings, job, result, records)
    return ids

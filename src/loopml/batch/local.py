"""The local engine: the input streamed a chunk at a time through the in-process model.

Memory holds one chunk (``CHUNK_ROWS`` rows) and the open part files' current row group, whatever
the input's size. Scored rows go to ``<output>/part-NNNNN.parquet``, rows that cannot be scored to
``<output>/errors/part-NNNNN.parquet`` (``row_id``, ``id``, ``reason``), in input order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from loopml.batch.inputs import (
    Chunk,
    Location,
    check_columns,
    list_inputs,
    parse_location,
    problem_of,
    read_chunks,
)
from loopml.batch.job import BatchJob, BatchResult
from loopml.errors import DataError, UnknownVersionError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from rich.progress import Progress, TaskID

    from loopml.config import Settings
    from loopml.recipes.base import TextClassifier

__all__ = ["ROWS_PER_PART", "load_model", "output_schema", "run"]

ROWS_PER_PART = 1_000_000
_PREDICT_ROWS = 1024


def load_model(settings: Settings, name: str, ref: str) -> tuple[str, TextClassifier]:
    """The version that ``ref`` (a version number or an alias) names, and its classifier."""
    from loopml.registry import Registry

    registry = Registry(settings.model_copy(update={"model_name": name}))
    if ref.isdigit():
        version = str(registry.version(ref).version)
    else:
        mv = registry.alias(ref)
        if mv is None:
            raise UnknownVersionError(f"model {name!r} has no version with alias {ref!r}")
        version = str(mv.version)
    return version, registry.load(version)


def output_schema(classes: tuple[str, ...], with_id: bool) -> pa.Schema:
    """Columns of the scored output, in order."""
    import pyarrow as pa

    fields = [pa.field("row_id", pa.int64())]
    if with_id:
        fields.append(pa.field("id", pa.string()))
    fields.append(pa.field("label", pa.string()))
    fields += [pa.field(f"prob_{c}", pa.float64()) for c in classes]
    fields += [pa.field(n, pa.string()) for n in ("model_name", "model_version", "batch_id")]
    return pa.schema(fields)


def _errors_schema(with_id: bool) -> pa.Schema:
    import pyarrow as pa

    fields = [pa.field("row_id", pa.int64())]
    if with_id:
        fields.append(pa.field("id", pa.string()))
    return pa.schema([*fields, pa.field("reason", pa.string())])


class _Parts:
    """Parquet part files in one folder, a new one every ``ROWS_PER_PART`` rows."""

    def __init__(self, fs: pafs.FileSystem, folder: str, schema: pa.Schema) -> None:
        self.fs, self.folder, self.schema = fs, folder, schema
        self.writer: pq.ParquetWriter | None = None
        self.count = 0
        self.rows_in_part = 0
        self.rows = 0

    def write(self, columns: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(columns, schema=self.schema)
        if not table.num_rows:
            return
        if self.writer is None or self.rows_in_part >= ROWS_PER_PART:
            self.close()
            self.fs.create_dir(self.folder, recursive=True)
            path = f"{self.folder}/part-{self.count:05d}.parquet"
            self.writer = pq.ParquetWriter(path, self.schema, filesystem=self.fs)
            self.count += 1
            self.rows_in_part = 0
        self.writer.write_table(table)
        self.rows_in_part += table.num_rows
        self.rows += table.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class _Scorer:
    job: BatchJob
    version: str
    classifier: TextClassifier
    scored: _Parts
    errors: _Parts

    def score(self, chunk: Chunk) -> None:
        """Score one chunk's good rows and send the others to the errors output."""
        problems = [problem_of(t, self.job.max_text_chars) for t in chunk.texts]
        good = [i for i, p in enumerate(problems) if p is None]
        bad = [i for i, p in enumerate(problems) if p is not None]
        with_id = self.job.id_column is not None
        if bad:
            errors: dict[str, Any] = {"row_id": [chunk.start + i for i in bad]}
            if with_id and chunk.ids is not None:
                errors["id"] = [chunk.ids[i] for i in bad]
            errors["reason"] = [problems[i] for i in bad]
            self.errors.write(errors)
        if not good:
            return
        texts = [str(chunk.texts[i]) for i in good]
        proba = np.vstack(
            [
                self.classifier.predict_proba(texts[at : at + _PREDICT_ROWS])
                for at in range(0, len(texts), _PREDICT_ROWS)
            ]
        )
        classes = [str(c) for c in self.classifier.classes]
        columns: dict[str, Any] = {"row_id": [chunk.start + i for i in good]}
        if with_id and chunk.ids is not None:
            columns["id"] = [chunk.ids[i] for i in good]
        columns["label"] = [classes[j] for j in proba.argmax(axis=1)]
        for j, name in enumerate(classes):
            columns[f"prob_{name}"] = proba[:, j]
        columns["model_name"] = [self.job.model_name] * len(good)
        columns["model_version"] = [self.version] * len(good)
        columns["batch_id"] = [self.job.batch_id] * len(good)
        self.scored.write(columns)


def _check_output(out: Location, fs: pafs.FileSystem) -> None:
    import pyarrow.fs as pafs

    info = fs.get_file_info(out.path)
    if info.type == pafs.FileType.File:
        raise DataError(f"output {out.uri()} is a file; give a folder")
    if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(out.path)):
        raise DataError(f"output folder {out.uri()} is not empty; give a new or empty folder")


def _progress(total: int) -> tuple[Progress, TaskID]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("scoring"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows, {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    return progress, progress.add_task("scoring", total=max(total, 1), rows=0, rate=0.0)


def run(job: BatchJob, *, settings: Settings, progress: bool = True) -> BatchResult:
    """Score ``job`` on this machine; DataError (exit 2) for an unusable input or output."""
    source, out = parse_location(job.input), parse_location(job.output)
    in_fs, out_fs = source.filesystem(), out.filesystem()
    files = list_inputs(source, in_fs)
    check_columns(in_fs, files, job.text_column, job.id_column)
    _check_output(out, out_fs)
    version, classifier = load_model(settings, job.model_name, job.model_ref)
    classes = tuple(str(c) for c in classifier.classes)
    with_id = job.id_column is not None
    scorer = _Scorer(
        job,
        version,
        classifier,
        _Parts(out_fs, out.path, output_schema(classes, with_id)),
        _Parts(out_fs, out.join("errors"), _errors_schema(with_id)),
    )
    started = time.perf_counter()
    bar, task = _progress(sum(f.size for f in files))
    try:
        with bar if progress else _Quiet():
            rows = 0
            for chunk in read_chunks(in_fs, files, job.text_column, job.id_column):
                scorer.score(chunk)
                rows += len(chunk.texts)
                rate = rows / max(time.perf_counter() - started, 1e-9)
                bar.update(task, advance=chunk.progress, rows=rows, rate=rate)
    finally:
        scorer.scored.close()
        scorer.errors.close()
    return BatchResult(
        batch_id=job.batch_id,
        model_name=job.model_name,
        model_version=version,
        rows_scored=scorer.scored.rows,
        rows_failed=scorer.errors.rows,
        seconds=round(time.perf_counter() - started, 3),
        output=out.uri(),
        errors_output=out.uri(out.join("errors")) if scorer.errors.rows else None,
    )


class _Quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

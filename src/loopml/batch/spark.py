"""The Spark engine of ``loopml batch score``: a registered model over many files through
``mlflow.pyfunc.spark_udf``, on ``local[*]`` or any Spark master.

How rows are numbered (the same ``row_id`` as the local engine, whatever the splits): every row
carries its file and the start of the file split it was read from (Spark's ``_metadata``); one
pass counts the rows of each (file, split), the driver turns the counts into offsets (files in
sorted path order, splits by start), and a row's id is its split's offset plus its position in
the split (``monotonically_increasing_id`` is consecutive within a task, and a split is read in
order).

How a crashed run resumes: rows are cut into chunks of ``partition_rows`` consecutive row ids.
A chunk is scored and written by one task, errors first (``errors/part-NNNNN.parquet``), then its
scored rows (``part-NNNNN.parquet``, written to a hidden file and renamed: the completion marker).
A rerun skips the chunks whose part file exists, so no finished chunk is redone and no row appears
twice. Chunks are defined by row ids, not by Spark's splits, so a rerun on another master or with
other cores resumes the same chunks.

pyspark is imported only when a job runs (the ``spark`` extra).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from loopml.batch.job import BatchJob, BatchResult, row_problem
from loopml.config import Settings
from loopml.errors import DataError, DataSourceError, LoopmlError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["DEFAULT_PARTITION_ROWS", "FORMATS", "claimed_batch_id", "input_files", "run"]

#: rows per output chunk (the unit of resume); ``job.options["partition_rows"]`` overrides it
DEFAULT_PARTITION_ROWS = 100_000
#: file suffix -> Spark reader format
FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}
_CHUNK_NAME = re.compile(r"^part-(\d{5,})\.parquet$")
# What a bad row's text becomes on its way through the model (its score is thrown away): a 1 MB
# text never reaches the model, a null never becomes "None".
_PLACEHOLDER = "x"


def run(job: BatchJob, *, master: str = "local[*]", settings: Settings) -> BatchResult:
    """Score ``job`` on Spark (``master``: ``local[*]``, ``spark://...``, ``k8s://...``); an active
    SparkSession is reused as it is. Returns what the job did, counting chunks of earlier runs."""
    start = time.perf_counter()
    files = input_files(job.input)
    version, uri = _resolve_model(job, settings)
    _claim_output(job, version)
    with _session(job, master) as spark:
        frame, fmt_schema = _read(spark, files, job)
        numbered, total = _numbered(frame, files, job)
        _score(spark, numbered, total, job, uri, version, fmt_schema)
    scored, failed = _counts(job.output)
    return BatchResult(
        batch_id=job.batch_id,
        model_name=job.model_name,
        model_version=version,
        rows_scored=scored,
        rows_failed=failed,
        seconds=round(time.perf_counter() - start, 3),
        output=job.output,
        errors_output=_join(job.output, "errors") if failed else None,
    )


# --- input -------------------------------------------------------------------------------------


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    import pyarrow.fs as pafs

    try:
        if "://" not in uri:
            return pafs.LocalFileSystem(), _local(uri)
        fs, path = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError, ImportError) as exc:
        raise DataSourceError(f"cannot open {uri}: {exc}") from exc
    return fs, path


def _local(path: str) -> str:
    from pathlib import Path

    return str(Path(path).absolute())


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def input_files(source: str) -> list[str]:
    """The files to read from ``source`` (a file, a folder or an ``s3://`` / ``gs://`` prefix),
    in sorted path order: the order in which rows are numbered."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(source)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        found = [path]
    elif info.type == pafs.FileType.Directory or "://" in source:
        selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        found = [
            f.path
            for f in fs.get_file_info(selector)
            if f.type == pafs.FileType.File and _suffix(f.path) in FORMATS and not _hidden(f.path)
        ]
    else:
        raise DataSourceError(f"input {source} does not exist")
    if not found:
        raise DataSourceError(f"input {source} holds no {', '.join(sorted(FORMATS))} files")
    kinds = {FORMATS.get(_suffix(p)) for p in found}
    if None in kinds or len(kinds) > 1:
        raise DataSourceError(
            f"input {source}: one format per job ({', '.join(sorted(FORMATS))}), "
            f"found {', '.join(sorted({_suffix(p) or '(none)' for p in found}))}"
        )
    return [_uri(source, p) for p in sorted(found)]


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _hidden(path: str) -> bool:
    return any(part.startswith((".", "_")) for part in path.split("/")[-1:])


def _uri(source: str, path: str) -> str:
    """A path as Spark reads it: ``file:`` locally, ``s3a://`` for S3 (Hadoop's connector)."""
    if "://" not in source:
        return "file://" + path
    scheme = source.split("://", 1)[0]
    return f"{'s3a' if scheme == 's3' else scheme}://{path}"


def _read(spark: SparkSession, files: list[str], job: BatchJob) -> tuple[DataFrame, str]:
    """The input frame with its file and split start; the text column's Spark type name."""
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql.utils import AnalysisException

    fmt = FORMATS[_suffix(files[0])]
    reader = spark.read.format(fmt)
    if fmt == "csv":
        # Like pandas: a header, quoted fields spanning lines, every column text.
        reader = reader.option("header", True).option("multiLine", True).option("escape", '"')
    try:
        frame = reader.load(files)
    except AnalysisException as exc:
        raise DataSourceError(f"cannot read {job.input}: {exc}") from exc
    missing = [c for c in (job.text_column, job.id_column) if c and c not in frame.columns]
    if missing:
        raise DataError(
            f"input {job.input} has no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(frame.columns)})"
        )
    columns = [F.col(f"`{job.text_column}`").alias("text")]
    if job.id_column:
        columns.append(F.col(f"`{job.id_column}`").cast("string").alias("id"))
    columns += [
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.file_block_start").alias("_block"),
    ]
    return frame.select(*columns), frame.schema[job.text_column].dataType.typeName()


# --- numbering ---------------------------------------------------------------------------------


def _numbered(frame: DataFrame, files: list[str], job: BatchJob) -> tuple[DataFrame, int]:
    """``frame`` with ``row_id`` (see the module docstring) and ``chunk``; the number of rows."""
    from pyspark.sql import functions as F  # noqa: N812

    frame = frame.withColumn("_mid", F.monotonically_increasing_id())
    counts = frame.groupBy("_file", "_block").agg(F.count("*").alias("n"), F.min("_mid").alias("m"))
    order = {_canonical(f): i for i, f in enumerate(files)}
    bases: list[tuple[str, int, int]] = []
    total = 0
    for row in sorted(
        counts.collect(), key=lambda r: (order.get(_canonical(r["_file"]), -1), r["_block"])
    ):
        if _canonical(row["_file"]) not in order:
            raise DataSourceError(f"Spark read a file that was not listed: {row['_file']}")
        # row_id = rows before this split + position in it = total + (_mid - min _mid)
        bases.append((row["_file"], row["_block"], total - int(row["m"])))
        total += int(row["n"])
    table = frame.sparkSession.createDataFrame(bases, "_file string, _block long, _base long")
    numbered = frame.join(F.broadcast(table), ["_file", "_block"])
    numbered = numbered.withColumn("row_id", F.col("_base") + F.col("_mid"))
    rows = int(job.options.get("partition_rows", DEFAULT_PARTITION_ROWS))
    if rows < 1:
        raise DataError(f"partition_rows must be at least 1, got {rows}")
    numbered = numbered.withColumn("chunk", (F.col("row_id") / F.lit(rows)).cast("long"))
    return numbered.drop("_mid", "_base", "_file", "_block"), total


def _canonical(uri: str) -> str:
    """A file's URI as listed and as Spark reports it (``file:/x`` vs ``file:///x``)."""
    from urllib.parse import unquote

    scheme, _, rest = uri.partition(":")
    return f"{scheme}:/{unquote(rest).lstrip('/')}"


# --- scoring and writing -----------------------------------------------------------------------


def _score(
    spark: SparkSession,
    numbered: DataFrame,
    total: int,
    job: BatchJob,
    uri: str,
    version: str,
    text_type: str,
) -> None:
    """Score every chunk not done yet; each task writes its chunks (see the module docstring)."""
    import mlflow
    from pyspark.sql import functions as F  # noqa: N812

    rows = int(job.options.get("partition_rows", DEFAULT_PARTITION_ROWS))
    chunks = -(-total // rows)
    done = _done_chunks(job.output)
    todo = [c for c in range(chunks) if c not in done]
    _prepare_output(job.output)
    if not todo:
        return
    classes = _classes(uri)
    udf = mlflow.pyfunc.spark_udf(
        spark, uri, result_type=_result_type(classes), env_manager="local"
    )
    frame = numbered.filter(F.col("chunk").isin(todo)) if done else numbered
    frame = frame.withColumn("reason", _reason(frame, text_type, job.max_text_chars))
    # One task per chunk (two when their hashes meet), rows in order: each chunk is written as
    # soon as it is scored.
    frame = frame.repartition(len(todo), "chunk").sortWithinPartitions("chunk", "row_id")
    text = F.when(F.col("reason").isNull(), F.col("text").cast("string"))
    text = text.otherwise(F.lit(_PLACEHOLDER))
    frame = frame.withColumn("_pred", udf(F.struct(text.alias("text"))))
    keep = ["chunk", "row_id", *(["id"] if job.id_column else []), "reason"]
    frame = frame.select(
        *keep,
        F.col("_pred.label").alias("label"),
        *[F.col(f"_pred.`p_{c}`").alias(f"prob_{c}") for c in classes],
    )
    writer = _ChunkWriter(job.output, job.model_name, version, job.batch_id, classes, job.id_column)
    frame.mapInArrow(writer, "chunk long, scored long, failed long").collect()


def _reason(frame: DataFrame, text_type: str, max_chars: int) -> Column:
    """Why a row cannot be scored (``row_problem``'s words), null when it can."""
    from pyspark.sql import functions as F  # noqa: N812
    from pyspark.sql.functions import pandas_udf

    if text_type != "string":
        name = _PY_TYPES.get(text_type, text_type)
        return F.when(F.col("text").isNull(), F.lit("missing text")).otherwise(
            F.lit(f"not text: {name}")
        )

    def problems(texts: pd.Series) -> pd.Series:
        return pd.Series([row_problem(t, max_chars) for t in texts], dtype=object)

    return pandas_udf(problems, "string")(F.col("text"))


# What a non-text column's values are in Python (what the local engine's row_problem reports).
_PY_TYPES = {
    "integer": "int",
    "long": "int",
    "short": "int",
    "byte": "int",
    "double": "float",
    "float": "float",
    "decimal": "Decimal",
    "boolean": "bool",
    "binary": "bytes",
    "array": "list",
    "struct": "dict",
    "map": "dict",
}


class _ChunkWriter:
    """The function of ``mapInArrow``: buffers one chunk's rows at a time (they arrive sorted by
    chunk) and writes its errors, then its scored rows, atomically."""

    def __init__(
        self,
        output: str,
        model_name: str,
        version: str,
        batch_id: str,
        classes: list[str],
        id_column: str | None,
    ) -> None:
        self.output = output
        self.meta = {"model_name": model_name, "model_version": version, "batch_id": batch_id}
        self.classes = classes
        self.id_column = id_column

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        current: int | None = None
        held: list[pa.RecordBatch] = []
        for batch in batches:
            for chunk, part in _split_by_chunk(batch):
                if current is not None and chunk != current:
                    yield self._write(current, held)
                    held = []
                current = chunk
                held.append(part)
        if current is not None:
            yield self._write(current, held)

    def _write(self, chunk: int, parts: list[pa.RecordBatch]) -> pa.RecordBatch:
        import pyarrow as pa
        import pyarrow.compute as pc

        table = pa.Table.from_batches(parts)
        bad = pc.is_valid(table["reason"])
        errors = table.filter(bad).select(["row_id", "reason"])
        good = table.filter(pc.invert(bad))
        scored = self._scored(good)
        if errors.num_rows:
            _write_atomic(_join(_join(self.output, "errors"), _chunk_name(chunk)), errors)
        _write_atomic(_join(self.output, _chunk_name(chunk)), scored)
        return pa.RecordBatch.from_pydict(
            {"chunk": [chunk], "scored": [scored.num_rows], "failed": [errors.num_rows]}
        )

    def _scored(self, good: pa.Table) -> pa.Table:
        import pyarrow as pa

        n = good.num_rows
        columns: dict[str, pa.Array | pa.ChunkedArray] = {"row_id": good["row_id"]}
        if self.id_column:
            columns["id"] = good["id"]
        columns["label"] = good["label"]
        for c in self.classes:
            columns[f"prob_{c}"] = good[f"prob_{c}"]
        for key, value in self.meta.items():
            columns[key] = pa.array([value] * n, pa.string())
        return pa.table(columns)


def _split_by_chunk(batch: pa.RecordBatch) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Consecutive runs of one chunk in a batch sorted by chunk."""
    chunks = batch.column("chunk").to_pylist()
    start = 0
    for i in range(1, len(chunks) + 1):
        if i == len(chunks) or chunks[i] != chunks[start]:
            yield int(chunks[start]), batch.slice(start, i - start)
            start = i


def _chunk_name(chunk: int) -> str:
    return f"part-{chunk:05d}.parquet"


def _write_atomic(uri: str, table: pa.Table) -> None:
    """Write a Parquet file that readers see whole or not at all: a hidden file renamed on a
    local disk; one PUT on an object store (atomic there)."""
    import uuid

    import pyarrow.parquet as pq

    fs, path = _filesystem(uri)
    if "://" in uri:
        pq.write_table(table, path, filesystem=fs)
        return
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, path)


_CLAIM = "_spark.json"


def _claim_output(job: BatchJob, version: str) -> None:
    """Record in ``<output>/_spark.json`` what the chunks are made of; a rerun resumes only the
    same job (input, model version, batch id, columns, chunk size): a mixed output never forms."""
    import json

    claim = {
        "input": job.input,
        "model_name": job.model_name,
        "model_version": version,
        "batch_id": job.batch_id,
        "text_column": job.text_column,
        "id_column": job.id_column,
        "max_text_chars": job.max_text_chars,
        "partition_rows": int(job.options.get("partition_rows", DEFAULT_PARTITION_ROWS)),
    }
    found = _read_claim(job.output)
    if found is not None:
        changed = sorted(k for k in claim if found.get(k) != claim[k])
        if changed:
            raise DataError(
                f"output {job.output} holds chunks of another job (its "
                + ", ".join(f"{k} {found.get(k)!r}" for k in changed)
                + "): rerun that job to resume it, or give a new folder"
            )
        return
    if _done_chunks(job.output):
        raise DataError(f"output {job.output} holds part files of another job; give a new folder")
    fs, path = _filesystem(_join(job.output, _CLAIM))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(json.dumps(claim, indent=1).encode())


def _read_claim(output: str) -> dict[str, Any] | None:
    """The ``_spark.json`` of ``output``, None when there is none."""
    import json

    import pyarrow.fs as pafs

    fs, path = _filesystem(_join(output, _CLAIM))
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        found: dict[str, Any] = json.loads(stream.read())
    return found


def claimed_batch_id(output: str) -> str | None:
    """The batch id of the Spark job whose chunks ``output`` holds (a rerun resumes it), None
    for a new output. Needs no pyspark."""
    found = _read_claim(output)
    return None if found is None else str(found["batch_id"])


def _prepare_output(output: str) -> None:
    """Create the output folders and drop the hidden files a killed run left."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(output)
    for folder in (path, _join(path, "errors")):
        fs.create_dir(folder, recursive=True)
        for info in fs.get_file_info(pafs.FileSelector(folder)):
            if info.base_name.startswith(".") and info.base_name.endswith(".tmp"):
                fs.delete_file(info.path)


def _done_chunks(output: str) -> set[int]:
    """The chunks whose scored part file exists (their completion marker)."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(output)
    found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return {int(m.group(1)) for f in found if (m := _CHUNK_NAME.match(f.base_name))}


def _counts(output: str) -> tuple[int, int]:
    """Rows in the scored part files and in the errors files."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, path = _filesystem(output)
    totals = []
    for folder in (path, _join(path, "errors")):
        found = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        files = [f.path for f in found if _CHUNK_NAME.match(f.base_name)]
        totals.append(sum(pq.ParquetFile(fs.open_input_file(p)).metadata.num_rows for p in files))
    return totals[0], totals[1]


# --- model and session -------------------------------------------------------------------------


def _resolve_model(job: BatchJob, settings: Settings) -> tuple[str, str]:
    """The version that ``job.model_ref`` (a number or an alias) names, and its model URI."""
    from loopml.errors import UnknownVersionError
    from loopml.registry import Registry

    registry = Registry(settings.model_copy(update={"model_name": job.model_name}))
    ref = str(job.model_ref)
    if ref.isdigit():
        mv = registry.version(ref)
    else:
        found = registry.alias(ref)
        if found is None:
            raise UnknownVersionError(f"model {job.model_name!r} has no version aliased {ref!r}")
        mv = found
    return str(mv.version), f"models:/{job.model_name}/{mv.version}"


def _classes(uri: str) -> list[str]:
    """The model's classes, from its signature's ``p_<class>`` outputs."""
    import mlflow

    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as exc:  # MLflow or its store: translate at the boundary
        raise LoopmlError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
    signature = info.signature
    names = signature.outputs.input_names() if signature and signature.outputs else []
    classes = [str(n)[2:] for n in names if str(n).startswith("p_")]
    if not classes:
        raise LoopmlError(f"{uri} is not a loopml text classifier (no p_<class> outputs)")
    return classes


def _result_type(classes: list[str]) -> Any:
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    fields = [StructField("label", StringType())]
    fields += [StructField(f"p_{c}", DoubleType()) for c in classes]
    return StructType(fields)


@contextlib.contextmanager
def _session(job: BatchJob, master: str) -> Iterator[SparkSession]:
    """The active SparkSession (reused, left running), or a new one on ``master`` that the job
    owns (``job.options["spark_conf"]`` adds settings): stopped at the end, with the JVM it
    started, and its scratch folder removed."""
    import shutil
    import tempfile

    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    # Spark's scratch files and the JVM's temp files (native libraries, artifacts-*) go to one
    # folder under TMPDIR (Java ignores TMPDIR: /tmp otherwise), removed below; a killed run
    # leaves them in one place.
    scratch = tempfile.mkdtemp(prefix="loopml-spark-")
    try:
        launching = SparkContext._gateway is None
        builder = SparkSession.builder.master(master).appName(f"loopml batch {job.batch_id}")
        for key, value in _conf(job, master, scratch).items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        try:
            yield spark
        finally:
            spark.stop()
            if launching:
                _stop_jvm()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _conf(job: BatchJob, master: str, scratch: str) -> dict[str, str]:
    """The settings of a session the job owns: the user's ``spark_conf`` over ours."""
    import os
    import sys

    # Workers run this interpreter (where loopml and the model's dependencies are installed),
    # unless PYSPARK_PYTHON names another (a cluster's image).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    user = {str(k): str(v) for k, v in dict(job.options.get("spark_conf", {})).items()}
    conf = {"spark.sql.execution.arrow.pyspark.enabled": "true"}
    # Executors elsewhere (a cluster) have their own scratch disks: only a local one gets ours;
    # SPARK_LOCAL_DIRS (the spark image sets it) wins over spark.local.dir anyway.
    if master.startswith("local") and "SPARK_LOCAL_DIRS" not in os.environ:
        conf["spark.local.dir"] = scratch
    # The driver's JVM, started here (pyspark is always in client mode): its java.io.tmpdir.
    java = user.get("spark.driver.extraJavaOptions", "")
    if "-Djava.io.tmpdir=" not in java:
        user["spark.driver.extraJavaOptions"] = f'{java} -Djava.io.tmpdir="{scratch}"'.strip()
    return {**conf, **user}


def _stop_jvm() -> None:
    """End the JVM that pyspark started for this job (its temp files are in the job's scratch
    folder, about to be removed); the next session starts a new one. Nothing when the JVM was
    not pyspark's child (``spark-submit app.py`` starts Python from the JVM)."""
    import subprocess

    from pyspark import SparkContext

    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    if gateway is None or proc is None:
        return
    gateway.shutdown()
    proc.stdin.close()  # the gateway exits on EOF, running Spark's shutdown hooks
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None

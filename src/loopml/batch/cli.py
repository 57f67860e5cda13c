"""`loopml batch ...`: score files of texts with a registered model.

Exit codes: 0 every row scored, 1 some rows went to the errors output (or a store is down),
2 bad usage or bad data (a missing column, an unreadable input, an unknown model version).
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import json
import sys
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from loopml.cliutil import error_line, handle_loopml_errors
from loopml.errors import ConfigError

if TYPE_CHECKING:
    from loopml.batch.job import BatchJob, BatchResult
    from loopml.config import Settings

__all__ = ["batch_app", "new_batch_id"]

batch_app = typer.Typer(
    help="Batch scoring of files of texts, locally or on Apache Spark.", no_args_is_help=True
)

SPARK_EXTRA = (
    "pip install 'loopml[spark]' (pyspark) and a Java 17 runtime"
    " (apt-get install openjdk-17-jre-headless)"
)


class Engine(enum.StrEnum):
    """Where the rows are scored."""

    local = "local"
    spark = "spark"


def new_batch_id() -> str:
    """A fresh batch id: UTC time and a random suffix, e.g. ``b20261202T120000-1a2b3c``."""
    return f"b{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def _run_engine(
    engine: Engine, job: BatchJob, settings: Settings, *, master: str, quiet: bool
) -> BatchResult:
    if engine is Engine.local:
        from loopml.batch import local

        return local.run(job, settings=settings, progress=not quiet)
    try:
        importlib.import_module("pyspark")
    except ImportError as exc:
        raise ConfigError(f"--engine spark needs pyspark: {SPARK_EXTRA}") from exc
    try:
        spark = importlib.import_module("loopml.batch.spark")
    except ImportError as exc:
        raise ConfigError(f"--engine spark is not available ({exc}): {SPARK_EXTRA}") from exc
    result: BatchResult = spark.run(job, master=master, settings=settings)
    return result


def _batch_id(given: str | None, engine: Engine, output: str) -> str:
    """``given``, else the batch id of the Spark job that ``output`` holds (a rerun after a crash
    resumes it without repeating --batch-id), else a new one."""
    if given is not None:
        return given
    if engine is Engine.spark:
        from loopml.batch.spark import claimed_batch_id

        found = claimed_batch_id(output)
        if found is not None:
            typer.echo(f"resuming batch {found} (the output holds its chunks)", err=True)
            return found
    return new_batch_id()


def _write_manifest(job: BatchJob, result: BatchResult, logged: int | None) -> None:
    from loopml.batch.inputs import parse_location

    out = parse_location(job.output)
    data = {"job": asdict(job), "result": asdict(result), "logged_predictions": logged}
    fs = out.filesystem()
    fs.create_dir(out.path, recursive=True)
    with fs.open_output_stream(out.join("_batch.json")) as stream:
        stream.write(json.dumps(data, indent=2, default=str).encode())


@batch_app.command("score")
@handle_loopml_errors
def score(
    input_: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A file, a folder or an s3:// / gs:// prefix of CSV, Parquet, JSONL.",
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="A new or empty folder (or prefix).")
    ],
    model: Annotated[
        str | None, typer.Option(help="Registered model name.", show_default="LOOPML_MODEL_NAME")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Model version number.")] = None,
    alias: Annotated[str | None, typer.Option(help="Model alias.", show_default="champion")] = None,
    engine: Annotated[Engine, typer.Option(help="local (this machine) or spark.")] = Engine.local,
    spark_master: Annotated[
        str, typer.Option(help="Spark master (local[*], spark://..., k8s://...).")
    ] = "local[*]",
    text_column: Annotated[str, typer.Option(help="Column holding the texts.")] = "text",
    id_column: Annotated[
        str | None, typer.Option(help="Column copied to the output's `id` column.")
    ] = None,
    batch_id: Annotated[
        str | None,
        typer.Option(
            help="Batch id (spark: the one of the job the output holds, to resume it).",
            show_default="b<UTC time>-<random>",
        ),
    ] = None,
    partition_rows: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Spark: rows per output chunk, the unit of resume.",
            show_default="100000",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")
    ] = False,
) -> None:
    """Score every row of an input with a registered model; unscorable rows go to errors/."""
    from loopml.batch.job import BatchJob
    from loopml.batch.predlog import check_batch_id, log_sample
    from loopml.config import load_settings
    from loopml.errors import RequestError
    from loopml.store import open_settings_store

    if version is not None and alias is not None:
        raise RequestError("give --version or --alias, not both")
    if partition_rows is not None and engine is not Engine.spark:
        raise RequestError("--partition-rows is for --engine spark")
    options: dict[str, object] = {"engine": engine.value, "spark_master": spark_master}
    if partition_rows is not None:
        options["partition_rows"] = partition_rows
    settings = load_settings().prepare()
    job = BatchJob(
        input=input_,
        output=output,
        model_name=model or settings.model_name,
        model_ref=version or alias or "champion",
        text_column=text_column,
        id_column=id_column,
        batch_id=check_batch_id(_batch_id(batch_id, engine, output)),
        max_text_chars=settings.max_text_chars,
        options=options,
    )
    # in --json mode, libraries' prints (MLflow's) go to stderr: stdout stays parseable
    with contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext():
        result = _run_engine(engine, job, settings, master=spark_master, quiet=json_out)
    _write_manifest(job, result, None)  # the output is complete: say so before logging
    with open_settings_store(settings) as store:
        logged = log_sample(store, settings, job, result)
    _write_manifest(job, result, logged)
    _report(result, logged, json_out=json_out)
    if result.rows_failed:
        raise typer.Exit(1)


def _report(result: BatchResult, logged: int, *, json_out: bool) -> None:
    if json_out:
        data = {**asdict(result), "logged_predictions": logged}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    from rich.console import Console

    out = Console()
    rate = (result.rows_scored + result.rows_failed) / max(result.seconds, 1e-9)
    out.print(
        f"batch {result.batch_id}: {result.rows_scored:,} rows scored by {result.model_name}"
        f" v{result.model_version} in {result.seconds:.1f} s ({rate:,.0f} rows/s)"
        f" -> {result.output}"
        f"; {logged:,} logged for monitoring",
        highlight=False,
    )
    if result.rows_failed:
        error_line(
            f"{result.rows_failed:,} rows could not be scored: row ids and reasons in"
            f" {result.errors_output}"
        )

"""The Spark engine on a real Spark (local[2]) and a real MLflow store: the same probabilities as
the in-process model, stable row ids, hostile rows to the errors output, resume after SIGKILL."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_world import champion_home

from loopml.batch.job import BatchJob, row_problem
from loopml.config import Settings
from loopml.data import Dataset
from loopml.errors import DataError

# A few minutes on a quiet machine; a crowded one (six test suites on two cores) took 14.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

CLASSES = ("negative", "neutral", "positive")


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local[2] SparkSession for the module; small splits, so files are read in many blocks."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers import loopml and pandas
    session = (
        SparkSession.builder.master("local[2]")
        .appName("loopml-test-spark")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.files.maxPartitionBytes", str(256 * 1024))
        .config("spark.sql.files.openCostInBytes", str(64 * 1024))
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.port", "18201")
        .config("spark.blockManager.port", "18202")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_tweets: Dataset) -> Settings:
    """A real MLflow store holding one tfidf-logreg version of the sentiment model, champion."""
    with champion_home(tmp_path_factory.mktemp("spark-home"), small_tweets) as settings:
        return settings


def _in_process(settings: Settings, texts: list[str]) -> pd.DataFrame:
    import mlflow

    from loopml.tracking import configure_mlflow

    configure_mlflow(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/1")
    return model.predict(pd.DataFrame({"text": texts}))  # type: ignore[no-any-return]


def _read(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _job(source: Path, output: Path, **kw: Any) -> BatchJob:
    return BatchJob(
        input=str(source), output=str(output), model_name="sentiment", batch_id="b1", **kw
    )


@pytest.fixture(scope="module")
def fifty_thousand(tweets: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50,000 real tweets (the corpus, then its start again) in three Parquet files of many row
    groups, with an id column."""
    texts = tweets.frame["text"].tolist()
    texts = (texts * 2)[:50_000]
    folder = tmp_path_factory.mktemp("fifty")
    bounds = [0, 17_000, 33_000, 50_000]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        table = pa.table({"tweet_id": [f"t{k}" for k in range(a, b)], "text": texts[a:b]})
        pq.write_table(table, folder / f"tweets-{i}.parquet", row_group_size=2_000)
    return folder


def test_spark_scores_fifty_thousand_tweets_like_the_model_in_process(
    spark: Any, store: Settings, fifty_thousand: Path, tmp_path: Path
) -> None:
    from loopml.batch import spark as engine

    job = _job(
        fifty_thousand,
        tmp_path / "out",
        id_column="tweet_id",
        model_ref="1",
        options={"partition_rows": 7_000},
    )
    result = engine.run(job, settings=store)

    texts = pd.concat([pd.read_parquet(f) for f in sorted(fifty_thousand.iterdir())])["text"]
    texts = texts.tolist()
    assert all(row_problem(t) is None for t in texts)
    out = _read(tmp_path / "out")
    assert (result.rows_scored, result.rows_failed, result.model_version) == (50_000, 0, "1")
    assert out["row_id"].dtype == np.int64
    assert out["row_id"].tolist() == list(range(50_000))  # in order, none twice, none lost
    assert out["id"].tolist() == [f"t{k}" for k in range(50_000)]
    expected = _in_process(store, texts)
    probs = out[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert np.abs(probs - expected[[f"p_{c}" for c in CLASSES]].to_numpy()).max() < 1e-6
    assert out["label"].tolist() == expected["label"].tolist()
    assert set(out["model_name"]) == {"sentiment"}
    assert set(out["model_version"]) == {"1"} and set(out["batch_id"]) == {"b1"}
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 8  # 50,000 / 7,000 chunks
    assert list(out.columns) == [
        "row_id", "id", "label", *[f"prob_{c}" for c in CLASSES],
        "model_name", "model_version", "batch_id",
    ]  # fmt: skip


def test_spark_row_ids_follow_sorted_files_and_positions_in_csv_and_jsonl(
    spark: Any, store: Settings, tweets: Dataset, tmp_path: Path
) -> None:
    from loopml.batch import spark as engine

    texts = tweets.frame["text"].tolist()[:3_000]
    csv_dir, jsonl_dir = tmp_path / "csv", tmp_path / "jsonl"
    csv_dir.mkdir()
    jsonl_dir.mkdir()
    # Written out of name order, of unequal sizes; "b" sorts before "c".
    parts = {"c.csv": texts[2_000:], "a.csv": texts[:500], "b.csv": texts[500:2_000]}
    for name, chunk in parts.items():
        pd.DataFrame({"text": chunk}).to_csv(csv_dir / name, index=False)
        frame = pd.DataFrame({"text": chunk})
        frame.to_json(jsonl_dir / name.replace(".csv", ".jsonl"), orient="records", lines=True)
    expected = _in_process(store, texts)
    for source in (csv_dir, jsonl_dir):
        engine.run(_job(source, tmp_path / f"out-{source.name}"), settings=store)
        out = _read(tmp_path / f"out-{source.name}")
        assert out["row_id"].tolist() == list(range(3_000)), source.name
        got = out["prob_positive"].to_numpy()
        assert np.abs(got - expected["p_positive"].to_numpy()).max() < 1e-6, source.name


def test_spark_sends_hostile_rows_to_the_errors_output_and_scores_the_rest(
    spark: Any, store: Settings, tmp_path: Path
) -> None:
    from loopml.batch import spark as engine

    texts: list[str | None] = [
        "great flight, thanks",
        "",
        "   ",
        "x" * 1_000_000,
        None,
        "lost my bag again",
        "caf\ufffd au lait",
    ]
    source = tmp_path / "hostile.parquet"
    pq.write_table(pa.table({"text": texts}), source)
    result = engine.run(_job(source, tmp_path / "out"), settings=store)  # champion by alias

    out = _read(tmp_path / "out")
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert out["row_id"].tolist() == [0, 5]
    assert dict(zip(errors["row_id"], errors["reason"], strict=True)) == {
        1: "empty text",
        2: "empty text",
        3: "text of 1000000 characters is over the limit of 10000",
        4: "missing text",
        6: "text holds bytes that are not valid in its encoding",
    }
    assert (result.rows_scored, result.rows_failed) == (2, 5)
    assert result.errors_output == str(tmp_path / "out" / "errors")

    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": pa.array([1, None, 3], pa.int64())}), numbers)
    result = engine.run(_job(numbers, tmp_path / "out-n"), settings=store)
    errors = pd.read_parquet(tmp_path / "out-n" / "errors")
    assert errors["reason"].tolist() == ["not text: int", "missing text", "not text: int"]
    assert errors["row_id"].tolist() == [0, 1, 2]
    assert (result.rows_scored, result.rows_failed) == (0, 3)

    with pytest.raises(DataError, match=r"has no column 'body' \(columns: text\)"):
        engine.run(_job(source, tmp_path / "out-m", text_column="body"), settings=store)


def _parts(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("part-*.parquet")}


def _cli_env(store: Settings, tmp: Path) -> dict[str, str]:
    """The environment of a CLI process on ``store`` with TMPDIR ``tmp``; Spark settings through
    pyspark's launcher (the CLI has no option for them)."""
    env = {**os.environ, "LOOPML_HOME": str(store.home), "PYTHONUNBUFFERED": "1"}
    env["LOOPML_CONFIG"] = str(store.home / "loopml.toml")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["TMPDIR"] = str(tmp)
    env["PYSPARK_SUBMIT_ARGS"] = (
        "--conf spark.ui.enabled=false --conf spark.sql.shuffle.partitions=1"
        " --conf spark.driver.host=127.0.0.1 --conf spark.driver.port=18210"
        " --conf spark.blockManager.port=18211 pyspark-shell"
    )
    return env


def _cli(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from loopml.cli import app

    result = CliRunner().invoke(app, ["batch", "score", *args])
    return result.exit_code, result.stdout, result.stderr


def test_spark_run_killed_half_way_resumes_without_redoing_or_repeating_rows(
    spark: Any, store: Settings, tweets: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI run killed half-way, rerun by the same command (no --batch-id): it resumes the
    first run's batch, writes only the missing chunks, and no row twice."""
    from loopml.batch import spark as engine

    texts = tweets.frame["text"].tolist()[:10_000]
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": texts}), source)
    out = tmp_path / "out"
    command = ["--engine", "spark", "--input", str(source), "--output", str(out)]
    command += ["--model", "sentiment", "--version", "1", "--partition-rows", "400"]
    # The first run: the CLI as a user starts it, no --batch-id (it draws one), one core; what
    # its kill leaves in TMPDIR stays in tmp_path.
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopml", "batch", "score", *command, "--spark-master", "local[1]"],
        env=_cli_env(store, tmp_path / "tmp"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while len(_parts(out)) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the Python driver and its JVM
        proc.wait()
    before = _parts(out)
    assert 4 <= len(before) < 25, f"{len(before)} of 25 chunks done when killed"
    first_id = json.loads((out / "_spark.json").read_text())["batch_id"]
    assert set(_read(out)["batch_id"]) == {first_id}

    monkeypatch.setenv("LOOPML_HOME", str(store.home))
    monkeypatch.setenv("LOOPML_CONFIG", str(store.home / "loopml.toml"))
    code, stdout, stderr = _cli(*command, "--json")  # the same command, in this process's Spark

    assert code == 0, stderr
    assert f"resuming batch {first_id}" in stderr
    summary = json.loads(stdout)
    assert (summary["batch_id"], summary["rows_scored"]) == (first_id, 10_000)
    after = _parts(out)
    assert len(after) == 25
    assert {k: after[k] for k in before} == before  # finished chunks not written again
    frame = _read(out)
    assert frame["row_id"].tolist() == list(range(10_000))  # each row once, in order
    assert set(frame["batch_id"]) == {first_id}
    assert not list(out.glob(".*.tmp"))
    expected = _in_process(store, texts)
    assert np.abs(frame["prob_negative"] - expected["p_negative"]).max() < 1e-6
    # Another job never resumes into this output: another chunk size, another batch id.
    code, _, stderr = _cli(*command[:-1], "500")
    assert code == 2 and "holds chunks of another job (its partition_rows 400)" in stderr, stderr
    other = BatchJob(
        input=str(source), output=str(out), model_name="sentiment", model_ref="1",
        batch_id="b2", options={"partition_rows": 400},
    )  # fmt: skip
    with pytest.raises(DataError, match=rf"holds chunks of another job .*batch_id '{first_id}'"):
        engine.run(other, settings=store)
    assert _parts(out) == after  # refused before any work


def _walk(folder: Path, seen: set[str], done: threading.Event) -> None:
    """Record the paths (two levels deep) that appear in ``folder`` until ``done``."""
    while not done.wait(0.02):
        for path in list(folder.glob("*")) + list(folder.glob("*/*")):
            seen.add(path.relative_to(folder).as_posix())


def test_a_spark_run_keeps_its_temp_files_under_tmpdir_and_leaves_none(
    store: Settings, tweets: Dataset, tmp_path: Path
) -> None:
    """A CLI run (its own SparkSession and JVM) with TMPDIR an empty probe folder: Spark's
    scratch and the JVM's temp files (Java ignores TMPDIR: /tmp unless told) go to one folder
    there, and nothing is left when the command ends."""
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": tweets.frame["text"].tolist()[:2_000]}), source)
    probe = tmp_path / "probe"
    probe.mkdir()
    seen: set[str] = set()
    done = threading.Event()
    watcher = threading.Thread(target=_walk, args=(probe, seen, done))
    watcher.start()
    command = [sys.executable, "-m", "loopml", "batch", "score", "--engine", "spark"]
    command += ["--spark-master", "local[2]", "--input", str(source)]
    command += ["--output", str(tmp_path / "out"), "--json"]
    try:
        proc = subprocess.run(
            command,
            env=_cli_env(store, probe),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        done.set()
        watcher.join()

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["rows_scored"] == 2_000
    scratch = {p.split("/")[0] for p in seen if p.startswith("loopml-spark-")}
    assert len(scratch) == 1, sorted(seen)
    folder = scratch.pop()
    inside = {p.split("/")[1].split("-")[0] for p in seen if p.startswith(f"{folder}/")}
    # Spark's block manager and work folders, the JVM's artifacts and native libraries
    assert {"blockmgr", "spark", "artifacts", "liblz4"} <= inside, sorted(seen)
    assert sorted(probe.iterdir()) == []  # nothing left, not even an empty folder

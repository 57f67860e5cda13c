"""Batch scoring of 200,000 real tweets: texts/s and peak memory, four ways, in one run.

Run: .venv/bin/python benchmarks/batch_bench.py [--rows 200000]
Writes benchmarks/results/batch.json and the "batch" section of benchmarks/README.md.

Rows (each in its own process, so that its peak RSS is its own; the model is the default recipe
trained on the full built-in corpus, registered as champion in a fresh LOOPML_HOME):
- in-process ceiling: the registered classifier's predict_proba on 64-text batches, one thread,
  the texts already in memory (nothing read or written);
- ``loopml batch score --engine local``: the whole command (read Parquet, score, write Parquet
  and errors, log the monitoring sample, the manifest), wall time of the process;
- ``loopml batch score --engine spark --spark-master local[2]``, when loopml.batch.spark and
  pyspark are importable (else the row says why it was not run);
- ``mlflow models predict`` on the same registered model (CSV in and out, --env-manager local).
Peak memory is the sum of the peak resident sets (VmHWM) of the measured process and of its
descendants (a Spark JVM included), polled every 0.1 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _report import record

RESULTS = Path(__file__).parent / "results" / "batch.json"
SRC = Path(__file__).parents[1] / "src"

_CEILING = """
import sys, time
import pyarrow.parquet as pq
from loopml.config import load_settings
from loopml.registry import Registry
texts = pq.read_table(sys.argv[1], columns=["text"]).column("text").to_pylist()
classifier = Registry(load_settings().prepare()).load(sys.argv[2])
classifier.predict_proba(texts[:64])
start = time.perf_counter()
for at in range(0, len(texts), 64):
    classifier.predict_proba(texts[at : at + 64])
print(time.perf_counter() - start)
"""


def _env(home: Path, *, threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ, LOOPML_HOME=str(home), PYTHONPATH=str(SRC))
    env.pop("LOOPML_DATABASE_URL", None)
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    return env


def _hwm_kib(pid: int) -> int:
    try:
        with Path(f"/proc/{pid}/status").open() as status:
            line = next((x for x in status if x.startswith("VmHWM")), "VmHWM: 0 kB")
    except OSError:
        return 0
    return int(line.split()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a Spark JVM is one)."""
    try:
        with Path(f"/proc/{pid}/task/{pid}/children").open() as children:
            kids = [int(k) for k in children.read().split()]
    except OSError:
        return [pid]
    return [pid] + [p for kid in kids for p in _tree(kid)]


def _measure(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak memory (MiB) and stdout of one process.

    Peak memory: the sum of the peak resident sets (VmHWM) of the process and its descendants,
    polled every 0.1 s (ru_maxrss would carry over this process's own peak through fork)."""
    start = time.perf_counter()
    peak = 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        while proc.poll() is None:
            peak = max(peak, sum(_hwm_kib(p) for p in _tree(proc.pid)))
            time.sleep(0.1)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {stderr[-2000:]}")
    return wall, peak // 1024, stdout


def _setup(home: Path, rows: int, folder: Path) -> tuple[str, Path, Path]:
    os.environ["LOOPML_HOME"] = str(home)
    import pandas as pd

    from loopml.config import load_settings
    from loopml.control.promotion import promote
    from loopml.data import load_dataset
    from loopml.pipeline.train import train
    from loopml.registry import Registry
    from loopml.store import open_store

    settings = load_settings().prepare()
    dataset = load_dataset("builtin:tweets")
    result = train(settings, dataset=dataset)
    with open_store(settings.db_url) as store:
        promote(store, Registry(settings), result.version, force=True, reason="benchmark")
    texts = dataset.frame["text"].tolist()
    frame = pd.DataFrame({"text": (texts * (rows // len(texts) + 1))[:rows]})
    parquet, csv = folder / "texts.parquet", folder / "texts.csv"
    frame.to_parquet(parquet, index=False, row_group_size=50_000)
    frame.to_csv(csv, index=False)
    return result.version, parquet, csv


def _row(name: str, rows: int, seconds: float, peak: int, note: str) -> dict[str, Any]:
    return {
        "row": name,
        "seconds": round(seconds, 2),
        "texts_per_s": round(rows / seconds),
        "peak_rss_mib": peak,
        "note": note,
    }


def _spark_missing() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install 'loopml[spark]')"
    if not (SRC / "loopml" / "batch" / "spark.py").exists():
        return "loopml.batch.spark is not in this checkout"
    return None


def _score_cmd(parquet: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "loopml", "batch", "score", "--input", str(parquet),
        "--output", str(out), "--json", *extra,
    ]  # fmt: skip


def _measure_all(home: Path, folder: Path, version: str, rows: int) -> list[dict[str, Any]]:
    parquet, csv = folder / "texts.parquet", folder / "texts.csv"
    results = []
    wall, peak, out = _measure(
        [sys.executable, "-c", _CEILING, str(parquet), version], _env(home, threads=1)
    )
    results.append(
        _row(
            "in-process ceiling (1 thread, 64-text batches)",
            rows,
            float(out.split()[-1]),
            peak,
            f"predict_proba only; process wall {wall:.1f} s",
        )
    )
    print(results[-1], flush=True)
    wall, peak, out = _measure(_score_cmd(parquet, folder / "out-local"), _env(home))
    engine = json.loads(out)["seconds"]
    results.append(
        _row(
            "loopml batch score --engine local",
            rows,
            wall,
            peak,
            f"whole command; engine {engine:.1f} s ({rows / engine:,.0f}/s)",
        )
    )
    print(results[-1], flush=True)
    missing = _spark_missing()
    if missing is None:
        cmd = _score_cmd(parquet, folder / "out-spark", "--engine", "spark")
        wall, peak, out = _measure([*cmd, "--spark-master", "local[2]"], _env(home))
        engine = json.loads(out)["seconds"]
        results.append(
            _row(
                "loopml batch score --engine spark (local[2])",
                rows,
                wall,
                peak,
                f"whole command; engine {engine:.1f} s; start-up and per-partition overhead"
                f" = wall - engine = {wall - engine:.1f} s; JVM memory included",
            )
        )
    else:
        print(f"SPARK ROW NOT RUN: {missing}", flush=True)
        results.append({"row": "loopml batch score --engine spark (local[2])", "not_run": missing})
    env = _env(home)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    wall, peak, _ = _measure(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "predict",
            "-m",
            f"models:/sentiment/{version}",
            "-i",
            str(csv),
            "-t",
            "csv",
            "-o",
            str(folder / "mlflow-out.json"),
            "--env-manager",
            "local",
        ],
        env,
    )
    results.append(_row("mlflow models predict (CSV, --env-manager local)", rows, wall, peak,
                        "whole command"))  # fmt: skip
    print(results[-1], flush=True)
    return results


def _table(results: list[dict[str, Any]]) -> str:
    lines = ["| way | texts/s | seconds | peak RSS (MiB) | note |", "|---|---|---|---|---|"]
    for r in results:
        if "not_run" in r:
            lines.append(f"| {r['row']} | not run | | | {r['not_run']} |")
        else:
            lines.append(
                f"| {r['row']} | {r['texts_per_s']:,} | {r['seconds']} | {r['peak_rss_mib']}"
                f" | {r['note']} |"
            )
    return "\n".join(lines)


def main() -> None:
    """Measure, print, and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home, folder = Path(tmp) / "home", Path(tmp)
        version, _, _ = _setup(home, args.rows, folder)
        results = _measure_all(home, folder, version, args.rows)
    load = os.getloadavg()[0]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" load average {load:.1f} at the end"
    )
    report = {"machine": machine, "rows": args.rows, "results": results}
    table = _table(results)
    print(table)
    body = f"""
## Batch scoring (issue 22)

`.venv/bin/python benchmarks/batch_bench.py --rows {args.rows}` ({machine}; one run; the default
recipe trained on the full corpus; {args.rows:,} real tweets, the corpus repeated; each way in its
own process):

{table}
"""
    record(RESULTS, report, "batch", body)


if __name__ == "__main__":
    main()

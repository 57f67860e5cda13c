"""The Spark engine's overhead: SparkSession start-up, a job's fixed cost and the cost of one more
output partition (chunk), beside the in-process model on the same texts.

    PYTHONPATH=src python benchmarks/spark_overhead.py --rows 20000 --master 'local[2]'

Trains a tfidf-logreg model on 4,000 built-in tweets in a temporary LOOPML_HOME, writes ``--rows``
real tweets to Parquet, then times: the session start, a run in 1 chunk, a run in 10 chunks, and
``mlflow.pyfunc.load_model(...).predict`` in this process. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LOOPML_HOME"] = str(Path(tmp) / "home")
        print(json.dumps(_measure(Path(tmp), args.rows, args.master), indent=1))


def _measure(tmp: Path, rows: int, master: str) -> dict[str, object]:
    import mlflow
    import pandas as pd
    from pyspark.sql import SparkSession
    from sklearn.model_selection import train_test_split

    from loopml.batch import spark as engine
    from loopml.batch.job import BatchJob
    from loopml.config import load_settings
    from loopml.data import Dataset, content_version, load_dataset
    from loopml.pipeline.train import train

    settings = load_settings().prepare()
    tweets = load_dataset("builtin:tweets")
    frame, _ = train_test_split(tweets.frame, train_size=4000, random_state=0)
    version = train(settings, dataset=Dataset("sample", frame, content_version(frame))).version
    texts = (tweets.frame["text"].tolist() * (rows // len(tweets.frame) + 1))[:rows]
    source = tmp / "in.parquet"
    pq.write_table(pa.table({"text": texts}), source)

    start = time.perf_counter()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    spark.range(1).collect()
    startup = time.perf_counter() - start
    timings = {}
    try:
        for chunks in (1, 10):
            job = BatchJob(
                input=str(source),
                output=str(tmp / f"out-{chunks}"),
                model_name=settings.model_name,
                model_ref=version,
                batch_id=f"bench-{chunks}",
                options={"partition_rows": -(-rows // chunks)},
            )
            start = time.perf_counter()
            engine.run(job, settings=settings)
            timings[chunks] = time.perf_counter() - start
    finally:
        spark.stop()
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}")
    start = time.perf_counter()
    model.predict(pd.DataFrame({"text": texts}))
    in_process = time.perf_counter() - start
    return {
        "rows": rows,
        "master": master,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "session_start_s": round(startup, 1),
        "run_1_chunk_s": round(timings[1], 1),
        "run_10_chunks_s": round(timings[10], 1),
        "per_extra_chunk_s": round((timings[10] - timings[1]) / 9, 2),
        "spark_texts_per_s_1_chunk": round(rows / timings[1]),
        "in_process_predict_s": round(in_process, 2),
        "in_process_texts_per_s": round(rows / in_process),
    }


if __name__ == "__main__":
    main()

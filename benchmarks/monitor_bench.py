"""Time ``run_monitor`` on a 100,000-prediction window.

Trains a champion on the non-airline tweets (in a temporary LOOPML_HOME), logs 100,000 predictions
of real tweets of every domain (about 38% airline; a third with feedback) to a temporary SQLite
database, then times ``loopml.monitoring.run_monitor(settings, window=100_000)`` end to end:
reading the window, drift checks on a sample of ``LOOPML_MONITOR_SAMPLE_CAP`` rows, live quality
on every labeled row, reports, MLflow logging and the ``monitor_results`` row.

    .venv/bin/python benchmarks/monitor_bench.py [--rows 100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from loopml.config import load_settings
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version, load_dataset
from loopml.monitoring import run_monitor
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.store import Feedback, Prediction, open_store


def _fill(
    settings_db: str,
    model: str,
    version: str,
    texts: list[str],
    truth: list[str],
    proba: np.ndarray,
    classes: list[str],
) -> None:
    store = open_store(settings_db)
    start = datetime.now(UTC) - timedelta(hours=2)
    preds, feedback = [], []
    for i, text in enumerate(texts):
        rid = f"bench-{i:07d}"
        probs = {c: float(p) for c, p in zip(classes, proba[i], strict=True)}
        preds.append(
            {
                "request_id": rid,
                "ts": start + timedelta(milliseconds=50 * i),
                "model_name": model,
                "model_version": version,
                "variant": "champion",
                "text": text,
                "text_hash": hashlib.sha256(text.encode()).hexdigest(),
                "text_length": len(text),
                "label": classes[int(proba[i].argmax())],
                "probabilities": probs,
                "latency_ms": 2.0,
            }
        )
        if i % 3 == 0:
            feedback.append({"request_id": rid, "ts": start, "label": truth[i]})
    with store.engine.begin() as conn:
        conn.execute(insert(Prediction), preds)
        conn.execute(insert(Feedback), feedback)
    store.dispose()


def main() -> None:
    """Build the data once, then time run_monitor ``--repeat`` times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(home=Path(tmp)).prepare()
        frame = load_dataset("builtin:tweets").frame
        others = frame[frame["domain"] != "airline"]
        result = train(
            settings,
            dataset=Dataset("builtin:tweets[non-airline]", others, content_version(others)),
        )
        registry = Registry(settings)
        promote(open_store(settings.db_url), registry, result.version, force=True, reason="bench")
        classifier = registry.load(result.version)
        rng = np.random.default_rng(0)
        rows = frame.iloc[rng.integers(0, len(frame), size=args.rows)]
        texts, truth = rows["text"].tolist(), rows["label"].tolist()
        t0 = time.perf_counter()
        _fill(
            settings.db_url,
            settings.model_name,
            result.version,
            texts,
            truth,
            classifier.predict_proba(texts),
            classifier.classes,
        )
        print(f"filled {args.rows} predictions in {time.perf_counter() - t0:.1f} s")
        timings = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            report = run_monitor(settings, window=args.rows)
            timings.append(time.perf_counter() - t0)
        print(
            json.dumps(
                {
                    "rows": report.summary.window.rows,
                    "sampled": report.summary.window.sampled,
                    "labeled": report.summary.quality.labeled,
                    "verdict": report.verdict,
                    "seconds": [round(t, 2) for t in timings],
                    "note": "first run includes downloading the reference and loading the model",
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

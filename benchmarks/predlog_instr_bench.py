"""Instructions per text the prediction log costs the serving process (valgrind callgrind).

    .venv/bin/python benchmarks/predlog_instr_bench.py [--batches 100]

Throughput and CPU seconds on a shared 2-core machine swing by more than the log costs (see
benchmarks/README.md). Instruction counts do not: callgrind counts the same total for the same
program and input whatever else the machine runs. This drives the real batcher with the real
tfidf-logreg model on 64-text batches of real tweets, with and without the prediction log (its
journal, index and writer process; the writer is another process and is not counted), and
subtracts a short run from a long one so that start-up (imports, model load) cancels out.
Needs valgrind (Debian package ``valgrind``); takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SHORT = 10


def child(mode: str, batches: int, folder: Path) -> None:
    """Submit ``batches`` 64-text requests one after another (each is one model batch)."""
    from loopml.serving.batcher import Batcher
    from loopml.serving.loader import LoadedModel
    from loopml.serving.metrics import Metrics
    from loopml.serving.predlog import PredictionLog
    from loopml.store import open_store

    clf = pickle.loads((folder / "model.pkl").read_bytes())
    texts = json.loads((folder / "texts.json").read_text())
    plog = None
    if mode == "log":
        home = Path(tempfile.mkdtemp(dir=folder))
        store = open_store(f"sqlite:///{home / 'loopml.db'}")
        plog = PredictionLog(
            home / "spool", store.engine, Metrics(), batch_size=500, flush_interval_s=0.05
        )
        plog.start()
    model = LoadedModel("m", "1", "champion", clf, tuple(clf.classes))

    async def run() -> None:
        batcher = Batcher(Metrics(), plog, max_batch_size=64, max_queue_size=10_000)
        batcher.start()
        for _ in range(batches):
            await batcher.submit(model, texts)
        await batcher.close()

    asyncio.run(run())
    if plog is not None:
        plog.flush(120)
        plog.drain(60)


def instructions(mode: str, batches: int, folder: Path) -> int:
    """Instructions callgrind counts in the serving process for one run."""
    out = folder / f"callgrind.{mode}.{batches}"
    env = os.environ | {"PYTHONHASHSEED": "0"}
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--child",
        mode,
        str(batches),
        str(folder),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def prepare(folder: Path) -> None:
    """Fit tfidf-logreg on 8,000 built-in tweets; keep it and one 64-tweet batch."""
    from loopml.config import Settings
    from loopml.data import load_dataset
    from loopml.recipes import get_recipe

    frame = load_dataset(Settings().data_source).frame.sample(8000, random_state=0)
    model = get_recipe("tfidf-logreg").fit(frame["text"].tolist(), frame["label"].tolist())
    (folder / "model.pkl").write_bytes(pickle.dumps(model))
    (folder / "texts.json").write_text(json.dumps(frame["text"].tolist()[:64]))


def main() -> None:
    """Count both modes, print instructions per text and the log's share."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100, help="batches beyond the short run")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder)
        per_text = {}
        for mode in ("nolog", "log"):
            short = instructions(mode, SHORT, folder)
            long = instructions(mode, SHORT + args.batches, folder)
            per_text[mode] = (long - short) / (args.batches * 64)
    report = {
        "instructions_per_text": {k: round(v) for k, v in per_text.items()},
        "log_cost": round(per_text["log"] / per_text["nolog"] - 1, 4),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""How long the label-noise check adds to a retrain, and what it holds back.

Base data: the demo's champion data (the non-airline tweets, 80% as its train split, as a
retrain reads it); feedback: ``--feedback`` airline tweets with ``--flip`` of their labels flipped
as a confused annotator would (negative<->positive, neutral->negative). Runs the check as the
controller's retrain does (:func:`loopml.labels.noise.screen_feedback`, SQLite store, default
settings but the check on) and prints seconds, rows held back, precision and recall.

    .venv/bin/python benchmarks/noise_bench.py --feedback 2000 --flip 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from loopml.config import Settings
from loopml.data import load_dataset
from loopml.labels.noise import screen_feedback
from loopml.recipes import get_recipe
from loopml.store import open_store

FLIP = {"negative": "positive", "positive": "negative", "neutral": "negative"}


def main() -> None:
    """Run the check once and print its numbers as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedback", type=int, default=2000)
    parser.add_argument("--flip", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frame = load_dataset("builtin:tweets").frame
    base = frame[frame["domain"] != "airline"].sample(frac=0.8, random_state=args.seed)
    feedback = frame[frame["domain"] == "airline"].sample(args.feedback, random_state=args.seed)
    flip = np.random.default_rng(args.seed).random(len(feedback)) < args.flip
    feedback = feedback.assign(key_id="bench")
    feedback.loc[flip, "label"] = feedback.loc[flip, "label"].map(FLIP)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), noise_check=True).prepare()
        with open_store(settings.db_url) as store:
            cpu = time.process_time()
            kept, report = screen_feedback(
                settings, store, get_recipe("tfidf-logreg"), base, feedback, model_name="bench"
            )
            cpu = time.process_time() - cpu
    held = ~feedback.index.isin(kept.index)
    true_held = int((held & flip).sum())
    print(
        json.dumps(
            {
                "base_rows": len(base),
                "base_rows_used": min(len(base), settings.noise_base_rows),
                "feedback_rows": len(feedback),
                "flipped": int(flip.sum()),
                "flagged": report.flagged,
                "held": int(held.sum()),
                "guard_tripped": report.guard_tripped,
                "precision": round(true_held / max(1, int(held.sum())), 3),
                "recall": round(true_held / max(1, int(flip.sum())), 3),
                "seconds": round(report.seconds, 2),
                # CPU time of this process: the wall time on an idle core (the fits are serial)
                "cpu_seconds": round(cpu, 2),
                "load_average_1m": round(os.getloadavg()[0], 1),
                "folds": settings.noise_folds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

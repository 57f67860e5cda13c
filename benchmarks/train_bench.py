"""Wall time of validate + split + train + evaluate + gate + register on the full built-in corpus.

Run: .venv/bin/python benchmarks/train_bench.py [--repeats 3]
Writes benchmarks/results/train.json and the "train" section of benchmarks/README.md. The baseline
is the bare scikit-learn fit of the same recipe on the same split, measured in the same run, so
the ratio shows what tracking, evaluation and registration add.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import write_section

RESULTS = Path(__file__).parent / "results" / "train.json"


def _pipeline_once(home: Path) -> dict[str, float]:
    os.environ["LOOPML_HOME"] = str(home)
    from loopml.config import load_settings
    from loopml.data import load_dataset
    from loopml.pipeline.train import train

    settings = load_settings().prepare()
    start = time.perf_counter()
    dataset = load_dataset("builtin:tweets")
    validate_s = time.perf_counter() - start
    result = train(settings, dataset=dataset)
    return {
        "total_s": time.perf_counter() - start,
        "validate_s": validate_s,
        "fit_s": result.fit_seconds,
        "macro_f1": result.evaluation.metrics["macro_f1"],
    }


def _bare_fit() -> float:
    from loopml.config import load_settings
    from loopml.data import load_dataset, split_dataset
    from loopml.recipes import get_recipe

    splits = split_dataset(load_dataset("builtin:tweets"), seed=load_settings().seed)
    t0 = time.perf_counter()
    get_recipe("tfidf-logreg").fit(splits.train["text"].tolist(), splits.train["label"].tolist())
    return time.perf_counter() - t0


def main() -> None:
    """Measure, print, and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:  # a fresh store each time, as a new user has
            runs.append(_pipeline_once(Path(tmp) / "home"))
        print(f"run {i + 1}: {runs[-1]['total_s']:.1f}s", flush=True)
    fits = [_bare_fit() for _ in range(args.repeats)]
    total = statistics.median(r["total_s"] for r in runs)
    fit = statistics.median(fits)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "repeats": args.repeats,
        "pipeline_median_s": round(total, 2),
        "pipeline_min_s": round(min(r["total_s"] for r in runs), 2),
        "bare_fit_median_s": round(fit, 2),
        "pipeline_over_bare_fit": round(total / fit, 2),
        "validate_median_s": round(statistics.median(r["validate_s"] for r in runs), 2),
        "macro_f1": round(runs[-1]["macro_f1"], 4),
        "runs": runs,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    write_section(
        "train",
        f"""
## Training pipeline

`.venv/bin/python benchmarks/train_bench.py --repeats {args.repeats}` (fresh `LOOPML_HOME` each run;
{result["machine"]}; median of {args.repeats}):

| stage | seconds |
|---|---|
| validate + split + train + evaluate + gate + register, 37k tweets \
| **{result["pipeline_median_s"]}** (target < 60) |
| of which validate (read + pandera + hash) | {result["validate_median_s"]} |
| baseline: bare scikit-learn fit, same split, same run | {result["bare_fit_median_s"]} |
| ratio pipeline / bare fit | {result["pipeline_over_bare_fit"]} |

Test macro-F1 of the registered model: {result["macro_f1"]}.
""",
    )


if __name__ == "__main__":
    main()

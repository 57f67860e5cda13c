"""Recipes side by side on one split: quality (overall, per domain), training time, model size,
in-process throughput and served req/s and p99 through ``loopml serve``.

    .venv/bin/python benchmarks/recipe_bench.py --limit 6000
    .venv/bin/python benchmarks/recipe_bench.py --limit 6000 --recipes tfidf-logreg,minilm-lora

Every recipe trains through the real pipeline (``loopml train``'s code) on the same stratified
sample of the built-in corpus and the same 80/10/10 split, in its own fresh LOOPML_HOME (no
embedding cache), is promoted, then served by one worker and driven by ``wrk`` with single-text
requests at 1, 8 and 64 connections, the test texts in turn. The in-process column is the model's
own ``predict_proba`` in this process over the same texts (one per call, and 64 per call),
measured before and after serving, the higher kept: the ceiling the server is measured against.
Writes benchmarks/results/recipes.json and the "recipes" section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _report import record
from serve_bench import drive, in_process, start, stop

RESULTS = Path(__file__).parent / "results" / "recipes.json"
# name in the table -> (recipe, parameters)
CANDIDATES: dict[str, tuple[str, dict[str, str]]] = {
    "tfidf-logreg": ("tfidf-logreg", {}),
    "minilm-logreg": ("minilm-logreg", {}),
    "minilm-logreg-int8": ("minilm-logreg", {"quantize": "true"}),
    "minilm-lora": ("minilm-lora", {"max_seconds": "300", "max_steps": "600"}),
}
CONNECTIONS = (1, 8, 64)


def _split(limit: int, seed: int) -> tuple[Any, Any]:
    from sklearn.model_selection import train_test_split

    from loopml.data import Dataset, content_version, load_dataset, split_dataset

    tweets = load_dataset("builtin:tweets")
    frame = tweets.frame
    if limit < len(frame):
        frame, _ = train_test_split(
            frame, train_size=limit, random_state=seed, stratify=frame["label"]
        )
        frame = frame.sort_index()
    dataset = Dataset(
        source=f"builtin:tweets[sample {len(frame)}]", frame=frame, version=content_version(frame)
    )
    return dataset, split_dataset(dataset, seed=seed)


def bench_one(name: str, home: Path, dataset: Any, splits: Any, seconds: int) -> dict[str, Any]:
    """Train, promote, measure in process, serve and drive one candidate."""
    os.environ["LOOPML_HOME"] = str(home)
    from loopml.config import get_settings, load_settings
    from loopml.control.promotion import promote
    from loopml.pipeline.train import train
    from loopml.registry import Registry
    from loopml.store import open_store

    get_settings.cache_clear()
    settings = load_settings(home=home).prepare()
    recipe, params = CANDIDATES[name]
    t0 = time.perf_counter()
    result = train(settings, dataset=dataset, splits=splits, recipe=recipe, params=params)
    train_s = time.perf_counter() - t0
    store = open_store(settings.db_url)
    promote(store, Registry(settings), result.version, force=True, reason="recipe benchmark")
    store.dispose()
    texts = splits.test["text"].tolist()
    row: dict[str, Any] = {
        "recipe": name,
        "macro_f1": round(result.evaluation.metrics["macro_f1"], 4),
        "domain_f1": {d: round(v, 4) for d, v in result.evaluation.domain_f1.items()},
        "fit_s": round(result.fit_seconds, 1),
        "train_s": round(train_s, 1),
        "model_mb": round(result.model_bytes / 1e6, 1),
    }
    before = in_process(home, result.version, texts, seconds=6)
    print(f"{name}: {row}, in process {before}", flush=True)
    proc, url = start("lean-1w", home)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bodies = [json.dumps({"text": t}) for t in texts]
            drive(url, bodies, 8, 2, Path(tmp))  # warm-up
            for c in CONNECTIONS:
                row[f"c{c}"] = drive(url, bodies, c, seconds, Path(tmp))
                print(f"  c={c}: {row[f'c{c}']}", flush=True)
    finally:
        stop(proc)
    # The ceiling is measured before and after serving, and the higher of the two is kept: on
    # a noisy machine a single short measurement can flatter the server.
    after = in_process(home, result.version, texts, seconds=6)
    row["in_process"] = {k: round(max(before[k], after[k]), 1) for k in before}
    return row


def table(report: dict[str, Any]) -> str:
    """The Markdown section."""
    domains = sorted({d for r in report["rows"] for d in r["domain_f1"]})
    head = ["recipe", "macro-F1", *(f"F1 {d}" for d in domains), "fit s", "model MB"]
    head += ["in-process texts/s (1 / 64 per call)"]
    head += [f"served req/s, p99 ms @{c}" for c in CONNECTIONS]
    head += ["@64 / in-process 64"]
    lines = [
        "## Recipes",
        "",
        f"Command: `{report['command']}` ({report['machine']}; {report['rows_total']} tweets, "
        f"split 80/10/10 by seed {report['seed']}, test split {report['test_rows']} tweets; "
        f"wrk {report['seconds']} s per load, single-text requests, one worker).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in report["rows"]:
        cells = [r["recipe"], f"{r['macro_f1']:.3f}"]
        cells += [f"{r['domain_f1'].get(d, float('nan')):.3f}" for d in domains]
        cells += [f"{r['fit_s']:.0f}", f"{r['model_mb']:.1f}"]
        ip = r["in_process"]
        cells.append(f"{ip['batch1']:.0f} / {ip['batch64']:.0f}")
        cells += [f"{r[f'c{c}']['req_s']:.0f}, {r[f'c{c}']['p99_ms']:.0f}" for c in CONNECTIONS]
        cells.append(f"{r['c64']['req_s'] / ip['batch64']:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    timeouts = [
        f"{r['recipe']} @{c}: {r[f'c{c}']['socket_errors']}"
        for r in report["rows"]
        for c in CONNECTIONS
        if r[f"c{c}"]["socket_errors"]
    ]
    if timeouts:
        lines += [
            "",
            "wrk socket errors (its 2 s timeout caps p99 at 2000 ms): " + "; ".join(timeouts),
        ]
    return "\n".join(lines)


def main() -> None:
    """Run the candidates, print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=6000, help="tweets sampled (stratified)")
    parser.add_argument(
        "--recipes", default="tfidf-logreg,minilm-logreg,minilm-logreg-int8", help="comma list"
    )
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per load")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    names = args.recipes.split(",")
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    dataset, splits = _split(args.limit, args.seed)
    report: dict[str, Any] = {
        "command": "python benchmarks/recipe_bench.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "rows_total": len(dataset.frame),
        "test_rows": len(splits.test),
        "seed": args.seed,
        "seconds": args.seconds,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            report["rows"].append(bench_one(name, Path(tmp) / name, dataset, splits, args.seconds))
            record(RESULTS, report, "recipes", table(report))
    print(table(report))


if __name__ == "__main__":
    main()

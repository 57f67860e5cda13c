"""The inference core must not cost throughput: this tree against a base commit, in the same run.

    git worktree add /tmp/core-base 59fa90b        # the commit before the inference core
    .venv/bin/python benchmarks/core_bench.py --base /tmp/core-base [--rounds 5] [--seconds 8]
    git worktree remove /tmp/core-base

Single texts to ``POST /v1/predict`` at 64 connections, one worker (serve_bench's ``lean-1w``:
uvicorn, fast lane, prediction log on), driven by ``wrk``. Each round starts this tree's server
and the base's, one after the other (the order alternates: ABBA), on the same ``LOOPML_HOME``
and model, warms each up and measures it; the figures are the medians over rounds (the machine
is shared: one round proves little). The ratio is this tree's median req/s over the base's
(target >= 0.97). Writes benchmarks/results/core.json and the "Inference core" section of
benchmarks/README.md. Servers are started by serve_bench.py (``start``/``stop``), the base's
with ``PYTHONPATH`` pointing at its ``src``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _report import record
from serve_bench import drive, ensure_champion, start, stop

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "core.json"
VARIANT = "lean-1w"
CONNECTIONS = 64
TARGET = 0.97


def commit_of(tree: Path) -> str:
    """The short commit id checked out in ``tree``."""
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def loopml_of(src: Path) -> str:
    """Where ``loopml`` is imported from with ``PYTHONPATH=src`` (proves which tree serves)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    code = "import loopml; print(loopml.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return out.stdout.strip()


def measure(src: Path, home: Path, body: str, seconds: int, tmp: Path) -> dict[str, Any]:
    """One server of the tree at ``src``: warm-up, then ``seconds`` of single texts at 64."""
    proc, url = start(VARIANT, home, {"PYTHONPATH": str(src)})
    try:
        drive(url, body, CONNECTIONS, 2, tmp)  # warm-up
        return drive(url, body, CONNECTIONS, seconds, tmp)
    finally:
        stop(proc)


def run(base: Path, rounds: int, seconds: int, home: Path) -> dict[str, Any]:
    """Alternating rounds of this tree and the base; medians and the ratio."""
    _version, texts = ensure_champion(home)
    trees = {"this": ROOT / "src", "base": base.resolve() / "src"}
    for side, src in trees.items():
        print(f"{side}: loopml from {loopml_of(src)}", flush=True)
    body = json.dumps({"text": texts[0]})
    samples: dict[str, list[dict[str, Any]]] = {"this": [], "base": []}
    with tempfile.TemporaryDirectory() as tmp_dir:
        for i in range(rounds):
            order = ["this", "base"] if i % 2 == 0 else ["base", "this"]
            for side in order:
                res = measure(trees[side], home, body, seconds, Path(tmp_dir))
                samples[side].append(res)
                print(json.dumps({"round": i + 1, "side": side, **res}), flush=True)
    medians = {
        side: {
            key: statistics.median(r[key] for r in rows)
            for key in ("req_s", "p50_ms", "p99_ms", "non_2xx")
        }
        for side, rows in samples.items()
    }
    ratio = medians["this"]["req_s"] / medians["base"]["req_s"]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "this_commit": commit_of(ROOT),
        "base_commit": commit_of(base),
        "rounds": rounds,
        "seconds_per_point": seconds,
        "connections": CONNECTIONS,
        "medians": medians,
        "ratio": ratio,
        "samples": samples,
    }


def table(report: dict[str, Any]) -> str:
    """The README section: medians of both trees and the ratio."""
    med, ratio = report["medians"], report["ratio"]
    lines = [
        "## Inference core",
        "",
        "Reproduce: `git worktree add /tmp/core-base "
        f"{report['base_commit']}; .venv/bin/python benchmarks/core_bench.py --base"
        f" /tmp/core-base --rounds {report['rounds']} --seconds"
        f" {report['seconds_per_point']}` (needs `wrk`). Single texts to `/v1/predict`,"
        f" {report['connections']} connections, one worker (`lean-1w`), {report['rounds']}"
        f" alternating rounds (ABBA) of {report['seconds_per_point']} s each, medians;"
        f" {report['cpus']} CPUs shared with wrk and other work. Measured {report['date']}.",
        "",
        "| tree | commit | req/s | p50 ms | p99 ms | non-2xx |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for side, label in (("this", "inference core"), ("base", "before it")):
        m = med[side]
        commit = report[f"{side}_commit"]
        lines.append(
            f"| {label} | {commit} | {m['req_s']:,.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} |"
            f" {m['non_2xx']:.0f} |"
        )
    verdict = "met" if ratio >= TARGET else "not met"
    lines += ["", f"Ratio of req/s (core / before): {ratio:.3f} (target >= {TARGET}: {verdict})."]
    per_round = ", ".join(
        f"{a['req_s']:,.0f}/{b['req_s']:,.0f}"
        for a, b in zip(report["samples"]["this"], report["samples"]["base"], strict=True)
    )
    lines.append(f"Per round, req/s core/before: {per_round}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="worktree of the base commit")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--home", type=Path, default=ROOT / ".loopml" / "serve-bench")
    args = parser.parse_args()
    if not (args.base / "src" / "loopml").is_dir():
        raise SystemExit(f"--base {args.base}: no src/loopml there (a worktree of the base commit)")
    report = run(args.base, args.rounds, args.seconds, args.home.resolve())
    record(RESULTS, report, "core", table(report))
    print(table(report))


if __name__ == "__main__":
    main()

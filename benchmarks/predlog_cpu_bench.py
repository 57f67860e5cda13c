"""CPU time per text of the prediction log: the server process and its writer process.

    .venv/bin/python benchmarks/predlog_cpu_bench.py [--seconds 8]

Throughput ratios on a shared 2-core machine swing by +-20% between runs (see benchmarks/README.md),
more than the log costs. CPU seconds are steadier: for ``nolog-1w`` and ``lean-1w`` (serve_bench's
variants) this drives 64-text batches at 4 connections with ``wrk`` and reads, from /proc, the CPU
time of the server process and of each of its children (the database writer) over the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

from serve_bench import ROOT, drive, ensure_champion, start, stop


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


def measure(variant: str, home: Path, body: str, seconds: int) -> dict[str, float]:
    """texts/s and CPU microseconds per text of the server and its writer for ``variant``."""
    proc, url = start(variant, home)
    try:
        pids = [proc.pid, *_children(proc.pid)]
        with tempfile.TemporaryDirectory() as tmp:
            drive(url, body, 4, 2, Path(tmp))  # warm-up
            before = {p: _cpu_s(p) for p in pids}
            result = drive(url, body, 4, seconds, Path(tmp))
            spent = {p: _cpu_s(p) - before[p] for p in pids}
    finally:
        stop(proc)
    texts = result["req_s"] * 64 * seconds
    return {
        "texts_s": round(result["req_s"] * 64),
        "server_us_per_text": round(spent[proc.pid] / texts * 1e6, 2),
        "children_us_per_text": round(sum(spent[p] for p in pids[1:]) / texts * 1e6, 2),
    }


def main() -> None:
    """Measure both variants and print the per-text CPU cost of logging."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--home", type=Path, default=ROOT / ".loopml" / "serve-bench")
    args = parser.parse_args()
    home = args.home.resolve()
    _version, texts = ensure_champion(home)
    body = json.dumps({"texts": texts[:64]})
    report = {v: measure(v, home, body, args.seconds) for v in ("nolog-1w", "lean-1w")}
    off, on = report["nolog-1w"], report["lean-1w"]
    report["server_cpu_cost"] = round(on["server_us_per_text"] / off["server_us_per_text"] - 1, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Predictions while clients post feedback for unknown request ids (issue 10, row 3).

    .venv/bin/python benchmarks/feedback_miss_bench.py [--seconds 10] [--posters 4]

A real ``loopml serve`` (one worker, the serving benchmark's ``lean-1w``) on loopback, driven by
``wrk`` with single-text predictions at 16 connections: once alone (the baseline of this run), once
while ``--posters`` threads post feedback for 1,000 unknown ids each, in a loop. Before the
in-memory index of uncommitted ids, every miss scanned the whole journal: predictions fell from
984 to 25 req/s. Prints and writes ``benchmarks/results/feedback_miss.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
from serve_bench import ROOT, drive, ensure_champion, start, stop

RESULTS = ROOT / "benchmarks" / "results" / "feedback_miss.json"


def _post_misses(url: str, stop_flag: threading.Event, counts: dict[str, int]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop_flag.is_set():
            items = [{"request_id": uuid.uuid4().hex, "label": "negative"} for _ in range(1000)]
            status = client.post(url + "/v1/feedback", json=items).status_code
            counts[str(status)] = counts.get(str(status), 0) + 1


def measure(home: Path, seconds: int, posters: int) -> dict[str, Any]:
    """Single-text predictions alone, then with feedback misses, against the same server."""
    _version, texts = ensure_champion(home)
    body = json.dumps({"text": texts[0]})
    # No rate limit here: the point is the cost of each miss, not the limiter's refusal.
    proc, url = start("lean-1w", home, {"LOOPML_FEEDBACK_RATE_PER_MIN": "100000000"})
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            drive(url, body, 16, 2, tmp)  # warm-up
            alone = drive(url, body, 16, seconds, tmp)
            stop_flag, counts = threading.Event(), {}  # type: ignore[var-annotated]
            threads = [
                threading.Thread(target=_post_misses, args=(url, stop_flag, counts))
                for _ in range(posters)
            ]
            for thread in threads:
                thread.start()
            try:
                busy = drive(url, body, 16, seconds, tmp)
            finally:
                stop_flag.set()
                for thread in threads:
                    thread.join()
    finally:
        stop(proc)
    return {
        "alone": alone,
        "with_misses": busy,
        "feedback_posts": counts,
        "ratio_req_s": round(busy["req_s"] / alone["req_s"], 3),
    }


def main() -> None:
    """Run the measurement and write the result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--posters", type=int, default=4)
    parser.add_argument("--home", type=Path, default=ROOT / ".loopml" / "serve-bench")
    args = parser.parse_args()
    report = measure(args.home.resolve(), args.seconds, args.posters)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    alone, busy = report["alone"], report["with_misses"]
    print(
        f"predictions alone: {alone['req_s']:.0f} req/s, p99 {alone['p99_ms']:.1f} ms; "
        f"with {args.posters} clients posting 1,000 unknown ids each: {busy['req_s']:.0f} req/s, "
        f"p99 {busy['p99_ms']:.1f} ms ({report['ratio_req_s']:.0%} of alone); "
        f"feedback answers {report['feedback_posts']}"
    )


if __name__ == "__main__":
    main()

"""Many models in one server against one server per model, in the same run.

    .venv/bin/python benchmarks/many_models_bench.py [--rounds 3] [--seconds 8] [--loads 7]

Single texts to ``POST /v1/predict`` (the default model) at 64 connections, one worker
(serve_bench's ``lean-1w``: uvicorn, fast lane, prediction log on), driven by ``wrk``, on a server
holding 1, 2 and 10 models (``LOOPML_MODELS``; the extra models are registry copies of the
champion's artifact, each loaded and held in memory on its own). The 1-model server is the "one
server per model" baseline: N models that way are N such servers, so their memory is N times its
RSS. Rounds rotate the order of the three servers; the figures are medians over rounds (the
machine is shared). Resident memory is the serving process's VmRSS after its load (the prediction
log's writer process is apart and the same for every server).

Cold load: a server of 3 models with ``LOOPML_MAX_LOADED_MODEL_BYTES=1`` (each extra model is
unloaded once another one loads); requests alternate between the two extra models, so each one
finds its model unloaded and waits for its load: the client-side latency of that request and the
server's ``loopml_model_cold_load_seconds`` (the load itself), medians over ``--loads``.

Writes benchmarks/results/many_models.json and the "Many models" section of
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _report import record
from serve_bench import drive, ensure_champion, start, stop

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "many_models.json"
VARIANT = "lean-1w"
CONNECTIONS = 64
COUNTS = (1, 2, 10)
DEFAULT = "sentiment"


def clones(home: Path, count: int) -> list[str]:
    """``count`` registered models ``bench-m<i>``, each a version of the champion's artifact
    with the alias ``champion`` (created once; no training)."""
    from loopml.config import load_settings
    from loopml.tracking import configure_mlflow

    settings = load_settings(home=home)
    client = configure_mlflow(settings)
    source = client.get_model_version_by_alias(DEFAULT, "champion")
    names = []
    for i in range(1, count + 1):
        name = f"bench-m{i}"
        names.append(name)
        try:
            client.get_model_version_by_alias(name, "champion")
            continue
        except Exception:  # not there yet: create it
            with contextlib.suppress(Exception):  # it may exist without a champion
                client.create_registered_model(name)
        mv = client.create_model_version(name, source=source.source, run_id=source.run_id)
        client.set_registered_model_alias(name, "champion", mv.version)
    return names


def rss_mb(pid: int) -> float:
    """VmRSS of process ``pid`` in MB."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def wait_loaded(url: str, count: int, timeout: float = 180) -> None:
    """Until ``count`` models are loaded (``loopml_models_loaded``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(url, "loopml_models_loaded") >= count:
            return
        time.sleep(0.3)
    raise SystemExit(f"{url}: {count} models not loaded within {timeout} s")


def metric(url: str, name: str) -> float:
    """Sum of the samples of metric ``name``."""
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


def measure(home: Path, names: list[str], body: str, seconds: int, tmp: Path) -> dict[str, Any]:
    """A server holding ``names``: warm-up, RSS, then ``seconds`` of single texts at 64."""
    env = {"LOOPML_MODELS": ",".join(names), "PYTHONPATH": str(ROOT / "src")}
    proc, url = start(VARIANT, home, env)
    try:
        wait_loaded(url, len(names))
        drive(url, body, CONNECTIONS, 2, tmp)  # warm-up
        rss = rss_mb(proc.pid)
        return {**drive(url, body, CONNECTIONS, seconds, tmp), "rss_mb": rss}
    finally:
        stop(proc)


def cold_loads(home: Path, extra: list[str], text: str, loads: int) -> dict[str, Any]:
    """Alternate requests between two extra models under a 1-byte limit: each waits a load."""
    env = {
        "LOOPML_MODELS": ",".join([DEFAULT, *extra[:2]]),
        "LOOPML_MAX_LOADED_MODEL_BYTES": "1",
        "PYTHONPATH": str(ROOT / "src"),
    }
    proc, url = start(VARIANT, home, env)
    waits: list[float] = []
    try:
        deadline = time.monotonic() + 120
        while metric(url, "loopml_model_unloads_total") < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in range(loads):
                name = extra[i % 2]
                t0 = time.perf_counter()
                resp = http.post(f"/v1/models/{name}/predict", json={"text": text})
                waits.append(time.perf_counter() - t0)
                assert resp.status_code == 200, resp.text
                time.sleep(0.5)  # the other model's unload runs between requests
        count = metric(url, "loopml_model_cold_load_seconds_count")
        total = metric(url, "loopml_model_cold_load_seconds_sum")
    finally:
        stop(proc)
    return {
        "request_s": waits,
        "median_request_s": statistics.median(waits),
        "server_loads": count,
        "server_mean_load_s": total / count if count else float("nan"),
    }


def run(rounds: int, seconds: int, loads: int, home: Path) -> dict[str, Any]:
    """Rotating rounds of the 1-, 2- and 10-model servers, then the cold loads."""
    _version, texts = ensure_champion(home)
    extra = clones(home, max(COUNTS) - 1)
    body = json.dumps({"text": texts[0]})
    samples: dict[str, list[dict[str, Any]]] = {str(n): [] for n in COUNTS}
    with tempfile.TemporaryDirectory() as tmp_dir:
        for i in range(rounds):
            order = list(COUNTS[i % len(COUNTS) :] + COUNTS[: i % len(COUNTS)])
            for n in order:
                res = measure(home, [DEFAULT, *extra[: n - 1]], body, seconds, Path(tmp_dir))
                samples[str(n)].append(res)
                print(json.dumps({"round": i + 1, "models": n, **res}), flush=True)
    medians = {
        n: {
            k: statistics.median(r[k] for r in rows)
            for k in ("req_s", "p50_ms", "p99_ms", "rss_mb")
        }
        for n, rows in samples.items()
    }
    cold = cold_loads(home, extra, texts[1], loads)
    print(json.dumps({"cold": cold}), flush=True)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "rounds": rounds,
        "seconds_per_point": seconds,
        "connections": CONNECTIONS,
        "medians": medians,
        "cold": cold,
        "samples": samples,
    }


def table(report: dict[str, Any]) -> str:
    """The README section."""
    med = report["medians"]
    one = med["1"]
    lines = [
        "## Many models",
        "",
        f"Reproduce: `.venv/bin/python benchmarks/many_models_bench.py --rounds {report['rounds']}"
        f" --seconds {report['seconds_per_point']}` (needs `wrk`). Single texts to the default"
        f" model's `/v1/predict`, {report['connections']} connections, one worker (`lean-1w`),"
        " on one server holding 1, 2 or 10 models (`LOOPML_MODELS`), medians over"
        f" {report['rounds']} rotating rounds of {report['seconds_per_point']} s;"
        " one server per model = N times the 1-model server."
        f" {report['cpus']} CPUs shared with wrk. Commit {report['commit']}, measured"
        f" {report['date']}.",
        "",
        "| models | setup | req/s (default model) | vs 1 | p99 ms | RSS MB (all) | MB per model |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n_text, m in med.items():
        n = int(n_text)
        ratio = m["req_s"] / one["req_s"]
        lines.append(
            f"| {n} | one server | {m['req_s']:,.0f} | {ratio:.3f} | {m['p99_ms']:.1f} |"
            f" {m['rss_mb']:,.0f} | {m['rss_mb'] / n:,.0f} |"
        )
        if n > 1:
            lines.append(
                f"| {n} | {n} servers | {one['req_s']:,.0f} (each) | 1.000 | {one['p99_ms']:.1f} |"
                f" {one['rss_mb'] * n:,.0f} | {one['rss_mb']:,.0f} |"
            )
    ten, two = med.get("10"), med.get("2")
    if ten and two:
        marginal = (ten["rss_mb"] - one["rss_mb"]) / 9
        lines += [
            "",
            f"An extra model costs {marginal:,.0f} MB of RSS in a shared server (10 models:"
            f" {ten['rss_mb']:,.0f} MB) against {one['rss_mb']:,.0f} MB for a server of its own.",
        ]
    cold = report["cold"]
    lines += [
        "",
        f"Cold load after an unload (`LOOPML_MAX_LOADED_MODEL_BYTES=1`, {len(cold['request_s'])}"
        f" loads): the first request waited {cold['median_request_s'] * 1000:,.0f} ms (median,"
        f" client side); the load itself (`loopml_model_cold_load_seconds`) took"
        f" {cold['server_mean_load_s'] * 1000:,.0f} ms on average over"
        f" {cold['server_loads']:.0f} loads (verify the cached artifact's hashes, unpickle,"
        " warm up).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument("--home", type=Path, default=ROOT / ".loopml" / "serve-bench")
    args = parser.parse_args()
    report = run(args.rounds, args.seconds, args.loads, args.home.resolve())
    record(RESULTS, report, "many-models", table(report))
    print(table(report))


if __name__ == "__main__":
    main()

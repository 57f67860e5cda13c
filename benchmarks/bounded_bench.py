"""Replays of issue 19's rows 2 and 4 against one real server, with numbers for the notes:

    .venv/bin/python benchmarks/bounded_bench.py [--seconds 20] [--home DIR] [--out FILE]

- **amplify** (row 2): OIP infer of 256 texts whose ``outputs`` names ``probabilities`` 37,000
  times, over HTTP JSON; the request and response sizes, the time, the server's RSS before and
  after, and how long a ``/v1/predict`` sent meanwhile waited.
- **starve** (row 4): key A loops 256-token explains of 5,000-character texts on 2 connections;
  key B sends 20 explains one after the other; client C sends 8-text predictions on 2 connections.
  C's p50/p99 without A (quiet) and with A, and B's answers by status.

One ``loopml serve`` process (1 worker, 2 API keys) on loopback, the default recipe trained on
the built-in tweets (``--home`` keeps it between runs). Latencies are from a Python client on the
same 2 cores: compare runs of this script, not other tools' figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serve_bench import ensure_champion, free_port

MODEL = "sentiment"
KEY_A = "hammer-key-0123456789abcdef"
KEY_B = "polite-key-0123456789abcdef"


def start(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A 1-worker server with the two keys; (process, base URL) once ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "PROMETHEUS_"))}
    env.update(
        LOOPML_HOME=str(home),
        LOOPML_RELOAD_INTERVAL_S="3600",
        LOOPML_API_KEYS=f"{KEY_A},{KEY_B}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopml", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("server not ready")


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the explain process, if any), in MB."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(k) for k in kids]
    return out + [g for k in out for g in _children(k)]


def long_text(words: list[str], rng: random.Random) -> str:
    """256 whitespace tokens, 5,000 characters: each token a few real words joined by '-'."""
    tokens = []
    for _ in range(256):
        token = "-".join(rng.choice(words) for _ in range(3))
        tokens.append(token)
    text = " ".join(tokens)
    while len(text) < 5000:
        i = rng.randrange(256)
        tokens[i] += "-" + rng.choice(words)
        text = " ".join(tokens)
    return text[:5000].rsplit(" ", 1)[0] + " end"


async def predict_latencies(
    url: str, texts: list[str], seconds: float, headers: dict[str, str]
) -> list[float]:
    """Client C: 8-text predictions on 2 connections for ``seconds``; latencies in ms."""
    out: list[float] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=60, headers=headers) as http:

        async def worker(k: int) -> None:
            i = k
            while time.monotonic() < deadline:
                chunk = [texts[(i + j) % len(texts)] for j in range(8)]
                i += 16
                t0 = time.perf_counter()
                resp = await http.post(url + "/v1/predict", json={"texts": chunk})
                if resp.status_code == 200:
                    out.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.01)

        await asyncio.gather(worker(0), worker(1))
    return out


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (ms, one decimal)."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def starve(url: str, texts: list[str], heavy: str, seconds: float) -> dict[str, Any]:
    """Row 4's replay; C's latencies quiet and under A's hammering, B's statuses."""
    c_headers = {"X-API-Key": KEY_B}
    quiet = await predict_latencies(url, texts, seconds, c_headers)
    stop = asyncio.Event()
    a_statuses: dict[int, int] = {}

    async def hammer(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            resp = await http.post(url + "/v1/explain", json={"text": heavy})
            a_statuses[resp.status_code] = a_statuses.get(resp.status_code, 0) + 1
            if resp.status_code == 429:
                await asyncio.sleep(0.05)

    async def polite(http: httpx.AsyncClient) -> dict[int, int]:
        statuses: dict[int, int] = {}
        await asyncio.sleep(1)
        for i in range(20):
            text = texts[i] + " " + texts[i + 1]
            resp = await http.post(url + "/v1/explain", json={"text": text})
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
            await asyncio.sleep(0.2)
        return statuses

    async with (
        httpx.AsyncClient(timeout=120, headers={"X-API-Key": KEY_A}) as a_http,
        httpx.AsyncClient(timeout=120, headers={"X-API-Key": KEY_B}) as b_http,
    ):
        hammers = [asyncio.create_task(hammer(a_http)) for _ in range(2)]
        await asyncio.sleep(1)
        loaded, b_statuses = await asyncio.gather(
            predict_latencies(url, texts, seconds, c_headers), polite(b_http)
        )
        stop.set()
        await asyncio.gather(*hammers)
    return {
        "predict_quiet": {"n": len(quiet), "p50": pct(quiet, 0.5), "p99": pct(quiet, 0.99)},
        "predict_hammered": {"n": len(loaded), "p50": pct(loaded, 0.5), "p99": pct(loaded, 0.99)},
        "other_key_explains": {str(k): v for k, v in sorted(b_statuses.items())},
        "hammer_key_explains": {str(k): v for k, v in sorted(a_statuses.items())},
    }


async def amplify(url: str, pid: int, texts: list[str]) -> dict[str, Any]:
    """Row 2's replay: 256 texts, ``probabilities`` named 37,000 times."""
    batch = [texts[i % len(texts)] for i in range(256)]
    body = json.dumps(
        {
            "inputs": [{"name": "text", "shape": [256], "datatype": "BYTES", "data": batch}],
            "outputs": [{"name": "probabilities"}] * 37_000,
        }
    ).encode()
    headers = {"X-API-Key": KEY_B, "content-type": "application/json"}
    before = rss_mb(pid)
    peak = before
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.05)

    async def probe(http: httpx.AsyncClient) -> float:
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        await http.post(url + "/v1/predict", json={"text": "a probe"}, headers=headers)
        return round((time.perf_counter() - t0) * 1000, 1)

    async with httpx.AsyncClient(timeout=300) as http:
        watcher = asyncio.create_task(watch())
        t0 = time.perf_counter()
        attack = http.post(f"{url}/v2/models/{MODEL}/infer", content=body, headers=headers)
        resp, probe_ms = await asyncio.gather(attack, probe(http))
        seconds = time.perf_counter() - t0
        done.set()
        await watcher
    return {
        "request_bytes": len(body),
        "status": resp.status_code,
        "response_bytes": len(resp.content),
        "ratio": round(len(resp.content) / len(body), 3),
        "seconds": round(seconds, 2),
        "rss_mb_before": before,
        "rss_mb_peak": peak,
        "rss_mb_after": rss_mb(pid),
        "predict_meanwhile_ms": probe_ms,
        "error": resp.json().get("error") if resp.status_code != 200 else None,
    }


def main() -> None:
    """Run both replays and print (and write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--home", type=Path, default=Path("/tmp/loopml-bounded-bench"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    args.home.mkdir(parents=True, exist_ok=True)
    _, texts = ensure_champion(args.home)
    rng = random.Random(0)
    words = [w for t in texts for w in t.split() if w.isalpha() and len(w) > 3]
    heavy = long_text(words, rng)
    proc, url = start(args.home)
    try:
        results = {
            "label": args.label,
            "heavy_text": {"chars": len(heavy), "tokens": len(heavy.split())},
            "amplify": asyncio.run(amplify(url, proc.pid, texts)),
            "starve": asyncio.run(starve(url, texts, heavy, args.seconds)),
            "server_rss_mb_end": rss_mb(proc.pid),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

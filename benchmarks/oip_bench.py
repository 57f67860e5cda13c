"""Open Inference Protocol clients against one real server, in the same run:

    .venv/bin/python benchmarks/oip_bench.py [--seconds 8] [--concurrency 16]

One ``loopml serve --grpc-port`` process (1 worker) on loopback; for single texts and 64-text
batches it drives, one after the other, ``/v2/.../infer`` with JSON (httpx), the same route with
the binary tensor extension (``tritonclient.http.aio``, its defaults) and gRPC
(``tritonclient.grpc.aio``), each with ``--concurrency`` requests in flight from one asyncio
client process. The clients are Python, on the same 2 cores: the figures compare the protocols
under the same client-side cost, they are not the server's ceiling (see serve_bench.py, wrk).
Writes benchmarks/results/oip.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_bench import ensure_champion, free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "oip.json"
MODEL = "sentiment"


def start(home: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """A server with gRPC on; (process, HTTP port, gRPC port) once it is ready."""
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "PROMETHEUS_"))}
    env.update(LOOPML_HOME=str(home), LOOPML_RELOAD_INTERVAL_S="3600")
    cmd = [sys.executable, "-m", "loopml", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--grpc-port", str(grpc_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, port, grpc_port
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server not ready")


async def drive(
    call: Callable[[list[str]], Awaitable[None]],
    texts: list[str],
    batch: int,
    seconds: float,
    concurrency: int,
) -> dict[str, float]:
    """Requests/s and texts/s of ``call`` with ``concurrency`` requests in flight."""
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        i = k * batch
        while time.monotonic() < deadline:
            chunk = [texts[(i + j) % len(texts)] for j in range(batch)]
            i += concurrency * batch
            await call(chunk)
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.monotonic() - start
    return {"req_s": round(done / elapsed, 1), "texts_s": round(done * batch / elapsed, 1)}


async def measure(
    port: int, grpc_port: int, texts: list[str], seconds: float, concurrency: int
) -> dict[str, Any]:
    import tritonclient.grpc.aio as tgrpc
    import tritonclient.http.aio as thttp

    url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
    limits = httpx.Limits(max_connections=concurrency)
    http = httpx.AsyncClient(timeout=30, limits=limits)
    triton_http = thttp.InferenceServerClient(f"127.0.0.1:{port}", conn_limit=concurrency)
    triton_grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")

    async def json_call(chunk: list[str]) -> None:
        tensor = {"name": "text", "shape": [len(chunk)], "datatype": "BYTES", "data": chunk}
        resp = await http.post(url, json={"inputs": [tensor], "outputs": [{"name": "label"}]})
        assert resp.status_code == 200, resp.text

    def inputs(module: Any, chunk: list[str]) -> list[Any]:
        tensor = module.InferInput("text", [len(chunk)], "BYTES")
        tensor.set_data_from_numpy(np.array(chunk, dtype=object))
        return [tensor]

    async def binary_call(chunk: list[str]) -> None:
        out = [thttp.InferRequestedOutput("label")]
        await triton_http.infer(MODEL, inputs(thttp, chunk), outputs=out)

    async def grpc_call(chunk: list[str]) -> None:
        out = [tgrpc.InferRequestedOutput("label")]
        await triton_grpc.infer(MODEL, inputs(tgrpc, chunk), outputs=out)

    calls = {"http_json": json_call, "http_binary": binary_call, "grpc": grpc_call}
    rows: dict[str, Any] = {}
    try:
        for batch in (1, 64):
            for name, call in calls.items():
                await drive(call, texts, batch, 1.0, concurrency)  # warm up connections
                row = await drive(call, texts, batch, seconds, concurrency)
                rows[f"{name} x{batch}"] = row
                print(f"{name:12s} batch {batch:3d}: {row}", flush=True)
    finally:
        await http.aclose()
        await triton_http.close()
        await triton_grpc.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    home = Path(tempfile.gettempdir()) / "loopml-bench"
    _version, texts = ensure_champion(home)
    proc, port, grpc_port = start(home)
    try:
        rows = asyncio.run(measure(port, grpc_port, texts, args.seconds, args.concurrency))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

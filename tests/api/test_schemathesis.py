"""Property-based API test: schemathesis drives every operation of the app's own OpenAPI schema
on a live loopback server; no input may produce a 5xx."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from serving_helpers import ADMIN_TOKEN


@pytest.mark.slow
def test_no_input_produces_a_server_error(make_server, tmp_path) -> None:
    server = make_server(admin_token=ADMIN_TOKEN)
    report = tmp_path / "junit.xml"
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "50",
        "--workers",
        "2",
        "--phases",
        "examples,fuzzing",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "20",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--seed",
        "1",
    ]
    # The coverage phase is left out: its generator crashes inside schemathesis 4.32 on these
    # schemas ("Inconsistent results"), which says nothing about the server.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[:8000] + proc.stderr[-2000:]

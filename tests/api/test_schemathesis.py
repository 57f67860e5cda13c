"""The contract is the schema: schemathesis drives every operation of the app's own OpenAPI
schema on a live loopback server with every check it has (``--checks all``: no server error,
status codes, headers and bodies as documented, what the schema allows is accepted and what it
forbids is refused, undeclared methods get 405 with ``Allow``, ...), authenticated by a key that
holds every role; any failure fails the test.

Phases: examples, coverage (boundary values, missing fields, every undeclared method) and
fuzzing (``MAX_EXAMPLES`` per operation), with a fixed seed: for the 24 operations, about 1,300
cases in 35-80 s on 2 busy cores (before the fixes of issue 19: 14 failures in 882 cases).

It runs schemathesis' command line (its documented interface, the one an attacker uses):
its pytest loader ``schemathesis.pytest.from_fixture`` fails on pytest 9.2 ("'Function' object
has no attribute '_nodeid'"), and loading the schema at import would need a server before
collection.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from serving_helpers import ADMIN_TOKEN

#: a key with every role: the fuzzer may predict, give feedback and act as an admin
KEY = "schemathesis-key-0123456789abcdef"
MAX_EXAMPLES = 40


@pytest.mark.slow
def test_the_server_keeps_its_own_contract(make_server: Any, tmp_path: Any) -> None:
    # the contract, not the wait for other replicas (test_two_replicas.py): unknown ids 404 soon
    server = make_server(
        admin_token=ADMIN_TOKEN, api_keys=f"{KEY}:predict+feedback+admin", feedback_peer_wait_s=0.1
    )
    report = tmp_path / "run.json"
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {KEY}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "1",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "60",
        "--no-color",
        "--output-truncate",
        "false",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    failures = proc.stdout.find("= FAILURES =")
    assert proc.returncode == 0, proc.stdout[max(failures, 0) :][:30000] + proc.stderr[-2000:]
    doc = json.loads(report.read_text())
    print(f"schemathesis: {doc['test_cases']} in {doc['running_time']:.0f} s")

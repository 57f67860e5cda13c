"""The one-host stack (deploy/compose/compose.yaml) up on this machine's Docker engine, the loop
closed inside it: bootstrap training, two replicas behind the Caddy proxy, feedback, the controller
retraining through the MLflow server with its artifacts in the S3 store, a canary, a promotion, all
on the stack's own PostgreSQL. Then faults inside the stack, and a backup restored into an empty
one.

Registry images cannot be pulled here: tests/deploy/stack/compose.override.yaml swaps them for the
stand-ins of tests/deploy/standins/ (Debian's PostgreSQL 15, Caddy, Prometheus, Alertmanager; moto
for MinIO) and speeds the loop up. Grafana is left out: it is neither in Debian nor on PyPI, and its
image cannot be pulled (its provisioning is checked offline in test_compose.py).

Run alone: ``pytest -m stack -s`` (``-s`` shows the timings).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from deploy_helpers import ROOT, clean_env, need_binary
from standins import NAMES, build_loopml_image, build_standin

# Minutes, not the suite's 600 s default: images, bootstrap training and up come first.
pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(2400)]

COMPOSE_DIR = ROOT / "deploy" / "compose"
OVERRIDE = ROOT / "tests" / "deploy" / "stack" / "compose.override.yaml"
IMAGE, VERSION = "lstack-loopml", "test"
# Everything but Grafana (see the module docstring); `train` is the bootstrap profile's one-shot.
SERVICES: tuple[str, ...] = (
    *("postgres", "minio", "mlflow", "loopml-1", "loopml-2", "controller", "proxy"),
    *("prometheus", "alertmanager"),
)
# Every port variable of compose.yaml, each given a free port.
PORTS: tuple[str, ...] = (
    *("LOOPML_HTTP_PORT", "LOOPML_ADMIN_PORT", "MLFLOW_PORT", "MINIO_CONSOLE_PORT"),
    *("PROMETHEUS_PORT", "ALERTMANAGER_PORT", "GRAFANA_PORT"),
)
BUCKET = "mlflow-artifacts"
# Bootstrap on a sample (time): non-airline tweets; the stream then shifts to airline tweets.
CHAMPION_ROWS = 6000


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all bound at once: the kernel may hand a closed one out again)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def report(name: str, seconds: float) -> None:
    print(f"\n[stack] {name}: {seconds:.1f} s", flush=True)


@dataclass
class Stack:
    """One compose project of deploy/compose with the test override."""

    project: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def env_file(self) -> Path:
        return self.workdir / ".env"

    def command(self) -> list[str]:
        """The docker-compose command line of this project (without a subcommand)."""
        cmd = [need_binary("docker-compose", "the Debian package docker-compose")]
        cmd += ["-p", self.project, "--project-directory", str(COMPOSE_DIR)]
        cmd += ["-f", str(COMPOSE_DIR / "compose.yaml"), "-f", str(OVERRIDE)]
        return [*cmd, "--env-file", str(self.env_file)]

    def compose(
        self, *args: str, timeout: float = 600, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.command(), *args],
            env=clean_env(HOME=str(self.workdir), DOCKER_HOST=os.environ.get("DOCKER_HOST", "")),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}:\n{result.stderr[-4000:]}")
        return result

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "absent"
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        out = subprocess.run(["docker", "inspect", "-f", fmt, cid], capture_output=True, text=True)
        return out.stdout.strip()

    def wait_healthy(self, services: tuple[str, ...], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {s: self.health(s) for s in services}
            if all(v == "healthy" for v in states.values()):
                return
            time.sleep(2)
        logs = self.compose("logs", "--tail", "30", *services, check=False).stdout
        raise AssertionError(f"not healthy after {timeout:.0f} s: {states}\n{logs[-6000:]}")

    def psql(self, db: str, sql: str) -> str:
        out = self.compose(
            "exec", "-T", "postgres", "psql", "-U", "postgres", "-d", db, "-tAc", sql
        )
        return out.stdout.strip()

    def loopml(self, *args: str) -> Any:
        """``loopml ARGS --json`` in the controller's container, parsed."""
        out = self.compose("exec", "-T", "controller", "loopml", *args, "--json", timeout=120)
        return json.loads(out.stdout)

    def s3_keys(self) -> list[str]:
        """Every object key of the artifact bucket (boto3 in the S3 stand-in)."""
        script = (
            "import boto3, json\n"
            "s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:9000', region_name='us-east-1',"
            " aws_access_key_id='x', aws_secret_access_key='x')\n"
            f"p = s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}')\n"
            "print(json.dumps([o['Key'] for page in p for o in page.get('Contents', [])]))\n"
        )
        out = self.compose("exec", "-T", "minio", "python3", "-c", script)
        keys: list[str] = json.loads(out.stdout)
        return keys

    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['LOOPML_HTTP_PORT']}"

    def down(self) -> None:
        self.compose("--profile", "bootstrap", "down", "-v", "--remove-orphans", check=False)


def read_env(text: str) -> dict[str, str]:
    pairs = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def new_stack(root: Path) -> Stack:
    """A project name, an .env from gen-env.sh with free ports, the test's Alertmanager config."""
    project = f"lstack-{secrets.token_hex(4)}"
    workdir = root / project
    workdir.mkdir(mode=0o755)
    env = read_env(
        subprocess.run(
            ["sh", str(COMPOSE_DIR / "gen-env.sh")], capture_output=True, text=True, check=True
        ).stdout
    )
    env.pop("COMPOSE_PROJECT_NAME", None)
    ports = {name: str(port) for name, port in zip(PORTS, free_ports(len(PORTS)), strict=True)}
    mlflow = ports["MLFLOW_PORT"]
    am = yaml.safe_load((ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in am["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook.pop("url_file", None)
            hook["url"] = "http://127.0.0.1:9/alerts"  # nothing listens: alerts are not checked
    am_file = workdir / "alertmanager.yml"
    am_file.write_text(yaml.safe_dump(am))
    am_file.chmod(0o644)
    env |= ports | {
        "LOOPML_IMAGE": IMAGE,
        "LOOPML_VERSION": VERSION,
        "LOOPML_HTTP_BIND": "127.0.0.1",
        # One process: under load uvicorn's supervisor kills workers slow to answer its pings.
        "MLFLOW_WORKERS": "1",
        # The service name, the healthcheck's 127.0.0.1:5000 and the published port.
        "MLFLOW_ALLOWED_HOSTS": f"mlflow:5000,127.0.0.1:5000,127.0.0.1:{mlflow}",
        "ALERTMANAGER_WEBHOOK_URL": "http://127.0.0.1:9/alerts",
        "STACK_ALERTMANAGER_YML": str(am_file),
    }
    stack = Stack(project, workdir, env)
    stack.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    stack.env_file.chmod(0o600)
    return stack


def keys(stack: Stack) -> tuple[str, str]:
    """The predict-only client key and the predict+feedback (labeller) key of gen-env.sh."""
    entries = stack.env["LOOPML_API_KEYS"].split(",")
    client = next(e for e in entries if ":" not in e)
    labeller = next(e for e in entries if e.endswith(":predict+feedback")).split(":")[0]
    return client, labeller


def build_images() -> None:
    for name in NAMES:
        build_standin(name)
    assert build_loopml_image(IMAGE) == f"{IMAGE}:{VERSION}"


def bootstrap(stack: Stack, sample: pd.DataFrame) -> float:
    """``--profile bootstrap run --rm train`` on ``sample`` (a CSV mounted read-only)."""
    data = stack.workdir / "data"
    data.mkdir(mode=0o755)
    sample[["text", "label"]].to_csv(data / "champion.csv", index=False)
    (data / "champion.csv").chmod(0o644)
    started = time.monotonic()
    result = stack.compose(
        "--profile",
        "bootstrap",
        "run",
        "--rm",
        "-v",
        f"{data}:/data:ro",
        "train",
        "train",
        "--promote",
        "--data",
        "/data/champion.csv",
        "--json",
        timeout=900,
    )
    assert result.returncode == 0
    return time.monotonic() - started


def predict(client: httpx.Client, key: str, text: str) -> httpx.Response:
    return client.post("/v1/predict", json={"text": text}, headers={"X-API-Key": key})


def post_label(client: httpx.Client, key: str, request_id: str, label: str) -> httpx.Response:
    return client.post(
        "/v1/feedback", json={"request_id": request_id, "label": label}, headers={"X-API-Key": key}
    )


@cache
def corpus() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bootstrap sample (non-airline tweets) and the shifted stream (airline tweets)."""
    from loopml.data import load_dataset
    from loopml.data.sources import domain_of

    frame = load_dataset("builtin:tweets").frame
    domains = frame["text"].map(domain_of)
    home = frame[domains != "airline"].sample(frac=1.0, random_state=11)
    airline = frame[domains == "airline"].sample(frac=1.0, random_state=12)
    return home.iloc[:CHAMPION_ROWS], airline


def wait_for_prediction(stack: Stack, key: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=stack.url(), timeout=10) as client:
        while time.monotonic() < deadline:
            try:
                if predict(client, key, "the flight was fine").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
    raise AssertionError(f"no answer through the proxy within {timeout:.0f} s")


def bring_up(stack: Stack, *, bootstrap_sample: pd.DataFrame | None) -> None:
    """Bootstrap-train ``stack`` on ``bootstrap_sample`` (if given), then ``up`` it."""
    if bootstrap_sample is not None:
        report(
            "bootstrap: postgres, S3, MLflow up, train --promote",
            bootstrap(stack, bootstrap_sample),
        )
    started = time.monotonic()
    stack.compose("up", "-d", *SERVICES, timeout=600)
    if bootstrap_sample is not None:
        wait_for_prediction(stack, keys(stack)[0])
        report("up to the first prediction through the proxy", time.monotonic() - started)
    stack.wait_healthy(SERVICES)
    report("up to every service healthy", time.monotonic() - started)


@pytest.fixture(scope="module")
def workroot() -> Iterator[Path]:
    need_binary("docker", "the Debian package docker.io")
    build_images()
    root = Path(tempfile.mkdtemp(prefix="lstack-"))
    root.chmod(0o755)  # the containers' users read the bootstrap CSV and configs under it
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(workroot: Path) -> Iterator[Stack]:
    stack = new_stack(workroot)
    try:
        bring_up(stack, bootstrap_sample=corpus()[0])
        yield stack
    finally:
        stack.down()


def served_per_replica(stack: Stack) -> dict[str, float]:
    """Prediction records each replica produced (its own /metrics, read inside its container)."""
    script = (
        "import urllib.request as u\n"
        "t = u.urlopen('http://127.0.0.1:8000/metrics', timeout=5).read().decode()\n"
        "print(sum(float(l.split()[-1]) for l in t.splitlines()"
        " if l.startswith('loopml_predlog_served_total')))\n"
    )
    return {
        name: float(stack.compose("exec", "-T", name, "python3", "-c", script).stdout)
        for name in ("loopml-1", "loopml-2")
    }


def test_the_proxy_serves_the_status_page_and_keeps_admin_internal(stack: Stack) -> None:
    client_key = keys(stack)[0]
    admin = {"Authorization": f"Bearer {stack.env['LOOPML_ADMIN_TOKEN']}"}
    with httpx.Client(base_url=stack.url(), timeout=15) as client:
        # A production server shows its status page to the admin token only.
        assert client.get("/", headers={"X-API-Key": client_key}).status_code == 403
        page = client.get("/", headers=admin)
        assert page.status_code == 200, page.text
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
        assert {a.split("?")[0].rsplit(".", 1)[-1] for a in assets} >= {"css", "js"}, assets
        for asset in assets:
            answer = client.get(asset)
            assert answer.status_code == 200 and answer.content, asset
        for path in ("/v1/admin/rollout", "/metrics"):
            assert client.get(path, headers=admin).status_code == 404, path
    # Operators: the admin site on the loopback-only port (the token is still required).
    admin_url = f"http://127.0.0.1:{stack.env['LOOPML_ADMIN_PORT']}"
    with httpx.Client(base_url=admin_url, timeout=15) as client:
        assert client.get("/v1/admin/rollout").status_code == 401
        assert client.get("/v1/admin/rollout", headers=admin).status_code == 200


def test_the_loop_closes_inside_the_stack(stack: Stack) -> None:
    client_key, labeller_key = keys(stack)
    before = stack.loopml("models")
    assert [m["aliases"] for m in before] == [["champion"]], before
    first = before[0]["version"]
    with httpx.Client(base_url=stack.url(), timeout=15) as client:
        # Through the proxy: a key is needed, and both replicas answer.
        assert client.post("/v1/predict", json={"text": "hi"}).status_code == 401
        for text in corpus()[1]["text"].iloc[:200]:
            answer = predict(client, client_key, text)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == first
        served = served_per_replica(stack)
        assert all(n > 20 for n in served.values()), f"both replicas answer: {served}"
        # The shifted stream, labelled by the labeller key 60 requests late (the prediction log
        # is written in batches), until answers come from a promoted new champion.
        started = time.monotonic()
        pending: list[tuple[str, str]] = []
        versions: list[tuple[str, str]] = []
        first_try: Counter[int] = Counter()
        refused: list[tuple[str, str]] = []
        promoted: str | None = None
        stream = corpus()[1][["text", "label"]].itertuples(index=False)
        while promoted is None:
            assert time.monotonic() - started < 900, (
                f"no promotion within 900 s; answers by (version, variant): "
                f"{sorted(set(versions))}; history: {stack.loopml('history', '--limit', '15')}"
            )
            try:
                text, label = next(stream)
            except StopIteration:
                stream = corpus()[1][["text", "label"]].itertuples(index=False)
                continue
            answer = predict(client, client_key, text)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            versions.append((body["model_version"], body["variant"]))
            if body["model_version"] != first and body["variant"] == "champion":
                promoted = body["model_version"]
            pending.append((body["predictions"][0]["request_id"], label))
            if len(pending) > 60:
                rid, truth = pending.pop(0)
                fed = post_label(client, labeller_key, rid, truth)
                first_try[fed.status_code] += 1
                if fed.status_code != 200:
                    refused.append((rid, truth))
        stream_to_promotion = time.monotonic() - started
        # A labeller retries what was refused for now (429, 503, or a 404 for an id whose replica
        # had not written it within LOOPML_FEEDBACK_PEER_WAIT_S); every label must get in.
        time.sleep(3)
        again = Counter(post_label(client, labeller_key, *pair).status_code for pair in refused)
    print(f"\n[stack] feedback first try: {dict(first_try)}; retried: {dict(again)}")
    assert set(again) <= {200}, f"labels refused twice: {dict(again)}"
    assert first_try[200] > 0.9 * sum(first_try.values()), dict(first_try)
    assert any(v == "challenger" for _, v in versions), "a canary served the challenger"
    after = {m["version"]: m["aliases"] for m in stack.loopml("models")}
    assert "champion" in after[promoted] and "champion" not in after[first], after
    history = stack.loopml("history", "--limit", "200")
    stamps = {e["action"]: datetime.fromisoformat(e["ts"]) for e in reversed(history)}
    actions = [e["action"] for e in reversed(history)]
    for step in ("retrain", "rollout_start_canary", "rollout_advance", "rollout_promote"):
        assert step in actions, actions
    # The retrained model's run and its artifacts went through MLflow into the S3 bucket.
    run_ids = {m["version"]: m["run_id"] for m in stack.loopml("models")}
    mlflow = f"http://127.0.0.1:{stack.env['MLFLOW_PORT']}/api/2.0/mlflow/runs/get"
    run = httpx.get(mlflow, params={"run_id": run_ids[promoted]}, timeout=15).json()["run"]
    retrain_started = datetime.fromtimestamp(run["info"]["start_time"] / 1000, tz=UTC)
    report("feedback stream start to promotion", stream_to_promotion)
    report(
        "retrain start (the challenger's MLflow run) to promotion",
        (stamps["rollout_promote"] - retrain_started).total_seconds(),
    )
    report(
        "challenger registered (audit 'retrain') to promotion: the canary",
        (stamps["rollout_promote"] - stamps["retrain"]).total_seconds(),
    )
    objects = stack.s3_keys()
    for version in (first, promoted):
        mine = [k for k in objects if run_ids[version] in k]
        assert mine, f"version {version}: no object of run {run_ids[version]} in s3://{BUCKET}"
    # The stack's own PostgreSQL holds the predictions and the labels.
    stored = int(
        stack.psql("loopml", f"SELECT count(*) FROM predictions WHERE model_version = '{promoted}'")
    )
    labels = int(stack.psql("loopml", "SELECT count(*) FROM feedback"))
    assert stored > 0 and labels > 0
    print(f"\n[stack] answers by (version, variant): {dict(Counter(versions))}; labels {labels}")


@dataclass
class Load:
    """Predictions through the proxy from ``threads`` clients until stopped: every answer's
    status, and the request ids of the 200s."""

    stack: Stack
    key: str
    threads: int = 4
    statuses: Counter[str] = field(default_factory=Counter)
    answered: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _client(self, n: int) -> None:
        texts = corpus()[1]["text"].iloc[n * 2000 : (n + 1) * 2000].tolist()
        with httpx.Client(base_url=self.stack.url(), timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                try:
                    answer = predict(client, self.key, texts[i % len(texts)])
                    self.statuses[str(answer.status_code)] += 1
                    if answer.status_code == 200:
                        self.answered.append(answer.json()["predictions"][0]["request_id"])
                except httpx.TransportError as exc:
                    self.statuses[type(exc).__name__] += 1
                i += 1

    def run(self, seconds: float, *, at: float, fault: Any) -> None:
        """Load for ``seconds``; ``fault()`` ``at`` seconds in."""
        with ThreadPoolExecutor(self.threads) as pool:
            futures = [pool.submit(self._client, n) for n in range(self.threads)]
            time.sleep(at)
            fault()
            time.sleep(seconds - at)
            self.stop.set()
            for future in futures:
                future.result()

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "200")


def test_a_killed_replica_does_not_fail_requests(stack: Stack) -> None:
    load = Load(stack, keys(stack)[0])
    try:
        load.run(20, at=6, fault=lambda: stack.compose("kill", "loopml-1"))
    finally:
        stack.compose("start", "loopml-1")
    print(f"\n[stack] replica killed under load: {dict(load.statuses)}", flush=True)
    assert load.statuses["200"] > 500, load.statuses
    # Caddy retries a refused connection on the other replica (lb_try_duration); only requests
    # in flight on the killed replica at the kill can fail (one per client at most).
    assert load.failed <= load.threads, load.statuses
    stack.wait_healthy(("loopml-1", "loopml-2"))


def test_every_answered_prediction_is_stored_once_across_a_postgres_restart(
    stack: Stack,
) -> None:
    since = stack.psql("loopml", "SELECT now()")
    load = Load(stack, keys(stack)[0])
    load.run(25, at=6, fault=lambda: stack.compose("restart", "postgres", timeout=120))
    stack.wait_healthy(("postgres",))
    answered = set(load.answered)
    assert len(answered) == len(load.answered), "request ids are unique"
    deadline = time.monotonic() + 120
    while True:  # the replicas replay their spools once the database is back
        rows = stack.psql(
            "loopml", f"SELECT request_id FROM predictions WHERE ts >= '{since}'::timestamptz"
        ).split()
        stored = [r for r in rows if r in answered]
        if len(set(stored)) == len(answered) or time.monotonic() > deadline:
            break
        time.sleep(3)
    print(
        f"\n[stack] postgres restarted under load: {dict(load.statuses)}; answered 200: "
        f"{len(answered)}, stored: {len(stored)} ({len(set(stored))} distinct)",
        flush=True,
    )
    assert load.failed == 0, load.statuses
    assert len(stored) == len(set(stored)) == len(answered)


def champion(stack: Stack) -> str:
    models: list[dict[str, Any]] = stack.loopml("models")
    return str(next(m["version"] for m in models if "champion" in m["aliases"]))


def script(name: str, stack: Stack, *args: str) -> str:
    """deploy/compose/NAME ARGS against ``stack``; its output."""
    env = clean_env(HOME=str(stack.workdir), COMPOSE=" ".join(stack.command()))
    result = subprocess.run(
        ["bash", str(COMPOSE_DIR / name), *args],
        cwd=COMPOSE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


Answer = tuple[str, str, dict[str, float]]


def champion_answers(stack: Stack, texts: list[str]) -> dict[str, Answer]:
    """The champion's version, label and probabilities per text (a canary's answers left out)."""
    out: dict[str, Answer] = {}
    with httpx.Client(base_url=stack.url(), timeout=15) as client:
        for text in texts:
            answer = predict(client, keys(stack)[0], text)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            if body["variant"] == "champion":
                first = body["predictions"][0]
                out[text] = (body["model_version"], first["label"], first["probabilities"])
    return out


def test_a_backup_restores_into_an_empty_stack(stack: Stack, workroot: Path) -> None:
    version = champion(stack)
    texts = corpus()[1]["text"].iloc[-60:].tolist()
    started = time.monotonic()
    backups = workroot / "backups"
    backups.mkdir(mode=0o755)
    archive = script("backup.sh", stack, str(backups)).strip().splitlines()[-1]
    report("backup (two dumps and the bucket)", time.monotonic() - started)
    fresh = new_stack(workroot)
    try:
        started = time.monotonic()
        script("restore.sh", fresh, archive)
        fresh.compose("up", "-d", *SERVICES, timeout=600)
        fresh.wait_healthy(SERVICES)
        report("restore into an empty stack until healthy", time.monotonic() - started)
        assert champion(fresh) == version
        # Every object of the backup is back (both controllers keep adding monitor reports).
        with tarfile.open(archive) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
        saved = {n.split("/bucket/", 1)[1] for n in names if "/bucket/" in n}
        assert saved and saved <= set(fresh.s3_keys())
        before, after = champion_answers(stack, texts), champion_answers(fresh, texts)
        both = set(before) & set(after)
        assert len(both) >= 30, (len(before), len(after))
        for text in both:
            assert before[text][:2] == after[text][:2] == (version, before[text][1])
            assert before[text][2] == pytest.approx(after[text][2], abs=1e-6)
        print(f"\n[stack] restore drill: champion {version}, {len(both)} answers equal", flush=True)
        # A second restore into the now non-empty stack is refused.
        again = subprocess.run(
            ["bash", str(COMPOSE_DIR / "restore.sh"), archive],
            cwd=COMPOSE_DIR,
            env=clean_env(HOME=str(fresh.workdir), COMPOSE=" ".join(fresh.command())),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert again.returncode == 1 and "not empty" in again.stderr, again.stderr
    finally:
        fresh.down()

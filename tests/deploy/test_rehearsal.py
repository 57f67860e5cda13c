"""A cluster rehearsal without a cluster: the prod overlay, rendered, runs on the Docker engine.

Every pod template becomes ``docker run`` with the manifests' own command and args (Kubernetes
semantics), environment (ConfigMap literals, Secret keys), user, read-only root, dropped
capabilities, emptyDir volumes and memory limit; each Service's name is a network alias of the
pods it selects; probes are called on their declared ports and paths. Only the image reference is
replaced (by the image built from this tree). A PostgreSQL and an S3 stand-in play the managed
database and the bucket. Run it alone with ``pytest -m rehearsal``.

The cheap tests at the end feed the same machinery mutated manifests (a bad command, port,
setting, Secret key) and check it refuses them with a clear message.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from rehearsal_helpers import (
    ROOT,
    Engine,
    ImageFacts,
    Pod,
    Probe,
    RehearsalError,
    check_commands,
    docker,
    docker_run_argv,
    expand,
    image_facts,
    plan_pods,
    render,
)

PREFIX = "lreh"
IMAGE = f"{PREFIX}-loopml:test"
# The order a cluster reaches, one workload at a time: the schema first (the migration Job), the
# tracking server, the replicas (unready: no champion yet), the first champion, the controller.
# Every Job named *-migrate runs first (in name order).
RUN_ORDER = ("*-migrate", "mlflow", "loopml-server", "loopml-bootstrap", "loopml-controller")
# Rendered but not run: the weekly retrain is the bootstrap's training without --promote (its
# command line is still checked against the image and the CLI).
NOT_RUN = {"loopml-train": "suspended CronJob; the same training as the bootstrap Job"}


class Credentials:
    """Fresh random passwords and tokens for one run (never printed)."""

    def __init__(self) -> None:
        self.postgres = secrets.token_hex(16)
        self.loopml_db = secrets.token_hex(16)
        self.mlflow_db = secrets.token_hex(16)
        self.admin_token = secrets.token_hex(24)
        self.api_key = secrets.token_hex(24)
        self.routing_secret = secrets.token_hex(24)
        self.s3_key = "lreh" + secrets.token_hex(8)
        self.s3_secret = secrets.token_hex(20)


def operator_secrets(c: Credentials) -> dict[str, dict[str, str]]:
    """Every Secret key the rehearsal knows: what deploy/k8s/secret.example.yaml has the operator
    create outside the manifests, pointed at the stand-ins. A manifest naming any other fails."""
    return {
        "loopml-secrets": {
            "LOOPML_DATABASE_URL": f"postgresql+psycopg://loopml:{c.loopml_db}@postgres:5432/loopml",
            "LOOPML_ADMIN_TOKEN": c.admin_token,
            "LOOPML_API_KEYS": c.api_key,
            "LOOPML_ROUTING_SECRET": c.routing_secret,
        },
        "mlflow-secrets": {
            "MLFLOW_BACKEND_STORE_URI": (
                f"postgresql+psycopg://mlflow:{c.mlflow_db}@postgres:5432/mlflow"
            ),
        },
    }


#: The artifact bucket: cluster.env.example names a gs:// bucket (GKE) and no GCS stand-in runs
#: here, so the rendered cluster.env names one on the S3 stand-in (s3:// is the EKS form).
CLUSTER_ENV = {"MLFLOW_ARTIFACTS_DESTINATION": f"s3://{PREFIX}-artifacts/mlflow"}


def cloud_only_env(c: Credentials) -> dict[str, dict[str, str]]:
    """The test's only additions to the manifests, per workload. A cluster gives MLflow its bucket
    credentials through the ServiceAccount's cloud identity (IRSA on EKS, Workload Identity on
    GKE), which no Docker engine has: here they are the S3 stand-in's keys and endpoint."""
    return {
        "mlflow": {
            "AWS_ACCESS_KEY_ID": c.s3_key,
            "AWS_SECRET_ACCESS_KEY": c.s3_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": "http://s3:9000",
        }
    }


# ---- the rehearsal ----------------------------------------------------------------------------


_IMAGE_BUILD_S: list[float] = []


@pytest.fixture(scope="session")
def image() -> str:
    """The image built from this tree (`make image`); the manifests' image reference becomes it.
    Its base (and the stand-ins') is Debian-made here: registry images cannot be pulled."""
    from standins import build_loopml_image

    started = time.monotonic()
    try:
        tag = build_loopml_image(f"{PREFIX}-loopml")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    _IMAGE_BUILD_S.append(time.monotonic() - started)
    assert tag == IMAGE
    return IMAGE


_HTTP = """
import json, os, socket, sys, urllib.error, urllib.request
url, method, body = sys.argv[1], sys.argv[2], sys.argv[3]
if method == "TCP":
    host, port = url.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print(200)
    except OSError as exc:
        print(0); print(repr(exc))
    sys.exit()
headers = {"Content-Type": "application/json", "X-API-Key": os.environ["LREH_API_KEY"]}
req = urllib.request.Request(url, data=body.encode() or None, method=method, headers=headers)
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(r.status); print(r.read().decode()[:20000])
except urllib.error.HTTPError as exc:
    print(exc.code); print(exc.read().decode()[:2000])
except Exception as exc:
    print(0); print(repr(exc))
"""


class Cluster:
    """The rehearsal's state: the engine, a client container on the network, the step timer."""

    def __init__(self, engine: Engine, creds: Credentials) -> None:
        self.engine, self.creds = engine, creds
        self.client = f"{PREFIX}-client"

    def start_client(self) -> None:
        """A container on the network that calls probes and Services, as the kubelet and other
        pods would (the host never talks to a container's bridge address)."""
        self.engine.run(
            ["run", "-d", "--name", self.client, "--network", self.engine.network,
             "--read-only", "--cap-drop", "ALL", "-e", "LREH_API_KEY",
             "--entrypoint", "sleep", self.engine.image, "infinity"],
            self.client,
            {"LREH_API_KEY": self.creds.api_key},
        )  # fmt: skip

    def http(self, url: str, method: str = "GET", body: str = "") -> tuple[int, str]:
        done = docker("exec", self.client, "python3", "-c", _HTTP, url, method, body, timeout=30)
        status, _, text = done.stdout.partition("\n")
        return int(status), text

    def probe(self, container: str, probe: Probe) -> tuple[int, str]:
        """One probe of ``container`` as the kubelet would make it."""
        if probe.action == "exec":
            done = docker("exec", container, *probe.command, check=False, timeout=30)
            return (200 if done.returncode == 0 else 0), done.stderr[-500:]
        if probe.action == "tcpSocket":
            return self.http(f"{container}:{probe.port}", "TCP")
        return self.http(f"{probe.scheme.lower()}://{container}:{probe.port}{probe.path}")

    def until(self, container: str, probe: Probe, timeout: float) -> float:
        """Call ``probe`` every 2 s until it answers 200; the seconds it took."""
        started = time.monotonic()
        status, text = 0, ""
        while time.monotonic() - started < timeout:
            if not self.engine.running(container):
                pytest.fail(f"{container} exited before its {probe.kind} probe passed:\n"
                            f"{self.engine.logs(container)}")  # fmt: skip
            status, text = self.probe(container, probe)
            if status == 200:
                return time.monotonic() - started
            time.sleep(2)
        pytest.fail(
            f"{container}: {probe.kind} probe {probe.action} :{probe.port}{probe.path} "
            "did not pass "
            f"in {timeout:.0f} s (last: {status} {text[:300]})\n{self.engine.logs(container)}"
        )

    def run_job(self, pod: Pod) -> str:
        name = self.engine.start(pod, 0)
        code = self.engine.wait(name, timeout=min(pod.deadline_s or 1800, 1800))
        logs = self.engine.logs(name, tail=40)
        assert code == 0, f"Job {pod.name} exited {code}:\n{logs}"
        return logs


@pytest.fixture
def capture_off(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Timings are printed even when pytest captures output."""
    with capsys.disabled():
        yield


@pytest.mark.rehearsal
@pytest.mark.slow
def test_prod_overlay_runs_on_docker(tmp_path: Path, image: str, capture_off: None) -> None:
    from standins import build_standin

    total = time.monotonic()
    creds = Credentials()
    objects = render("prod", tmp_path, cluster_env=CLUSTER_ENV)
    pods = plan_pods(objects, secrets=operator_secrets(creds))
    migrations = sorted(p.name for p in pods.values() if p.kind == "Job" and "migrate" in p.name)
    workloads = {p.name for p in pods.values()} - set(migrations)
    assert migrations and workloads == set(RUN_ORDER[1:]) | set(NOT_RUN), (
        f"the prod overlay runs {sorted(workloads)}; the rehearsal knows {RUN_ORDER} and "
        f"{sorted(NOT_RUN)}: add new workloads to RUN_ORDER"
    )
    check_commands(pods, image_facts(image, pods))
    images = {p.manifest_image for p in pods.values()}
    print(f"\nrehearsal: {len(pods)} pod templates; image {sorted(images)} replaced by {image}")

    engine = Engine(PREFIX, image, tmp_path)
    try:
        _rehearse(engine, creds, pods, migrations, build_standin)
    finally:
        engine.step("total (image built before)", total)
        print("\nrehearsal timings:")
        engine.timings.insert(0, ("make image (base image made when missing)", sum(_IMAGE_BUILD_S)))
        print("\n".join(f"  {seconds:7.1f} s  {label}" for label, seconds in engine.timings))


def _rehearse(
    engine: Engine, creds: Credentials, pods: dict[str, Pod], migrations: list[str], build: Any
) -> None:
    extra = cloud_only_env(creds)
    with engine:
        cluster = Cluster(engine, creds)
        step = time.monotonic()
        postgres, s3 = build("postgres"), build("s3")
        engine.step("stand-in images (built when missing or changed)", step)
        step = time.monotonic()
        cluster.start_client()
        engine.run(
            ["run", "-d", "--name", f"{PREFIX}-postgres", "--network", engine.network,
             "--network-alias", "postgres",
             "-e", "POSTGRES_PASSWORD", "-e", "PG_MLFLOW_PASSWORD", "-e", "PG_LOOPML_PASSWORD",
             "--mount", f"type=bind,source={ROOT / 'deploy/compose/postgres/init-databases.sh'},"
             "destination=/docker-entrypoint-initdb.d/10-init-databases.sh,readonly",
             postgres],
            f"{PREFIX}-postgres",
            {"POSTGRES_PASSWORD": creds.postgres, "PG_MLFLOW_PASSWORD": creds.mlflow_db,
             "PG_LOOPML_PASSWORD": creds.loopml_db},
        )  # fmt: skip
        engine.run(
            ["run", "-d", "--name", f"{PREFIX}-s3", "--network", engine.network,
             "--network-alias", "s3", s3],
            f"{PREFIX}-s3",
        )  # fmt: skip
        cluster.until(f"{PREFIX}-s3", Probe("readiness", "tcpSocket", port=9000), 60)
        _wait_postgres(engine, f"{PREFIX}-postgres")
        buckets = _buckets(pods)
        _make_buckets(cluster, buckets, extra["mlflow"])
        engine.step(f"stand-ins up (PostgreSQL, S3 with buckets {sorted(buckets)})", step)

        step = time.monotonic()
        for name in migrations:
            cluster.run_job(pods[name])
        engine.step(f"migration Jobs {', '.join(migrations)} (exit 0)", step)

        step = time.monotonic()
        mlflow = _start(engine, pods["mlflow"], extra)
        for name in mlflow:
            _probes_pass(cluster, pods["mlflow"], name)
        engine.step("MLflow Deployment ready", step)

        step = time.monotonic()
        server = pods["loopml-server"]
        replicas = _start(engine, server, extra)
        for name in replicas:
            _startup(cluster, server, name)
            status, _ = cluster.probe(name, server.probes["readiness"])
            assert status != 200, f"{name} is ready before any champion exists"
            assert cluster.probe(name, server.probes["liveness"])[0] == 200
        engine.step(f"{len(replicas)} server replicas live, unready (no champion)", step)

        step = time.monotonic()
        cluster.run_job(pods["loopml-bootstrap"])
        tracking = server.env["LOOPML_TRACKING_URI"].rstrip("/")
        model = server.env.get("LOOPML_MODEL_NAME", "sentiment")
        status, text = cluster.http(
            f"{tracking}/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion"
        )
        assert status == 200, f"no champion after the bootstrap Job: {status} {text[:500]}"
        champion = json.loads(text)["model_version"]["version"]
        engine.step(f"bootstrap Job (exit 0, champion version {champion})", step)

        step = time.monotonic()
        for name in replicas:
            _probes_pass(cluster, server, name)
        engine.step("server replicas ready", step)

        step = time.monotonic()
        controller = pods["loopml-controller"]
        # Two replicas (the lease lets one act at a time): both run, the second stands by.
        controllers = _start(engine, controller, extra)
        assert len(controllers) == 2, controllers
        # Every Service port reaches a listener on every pod it selects (targetPort is what the
        # container listens on), and through the Service's name.
        for pod, names in ((pods["mlflow"], mlflow), (server, replicas)):
            for svc_port, target in pod.service_ports.items():
                for address in (svc_port, *(f"{n}:{target}" for n in names)):
                    status, text = cluster.http(address, "TCP")
                    assert status == 200, f"{address} ({pod.workload}) does not listen: {text}"
        host, port = next(iter(server.service_ports)).split(":")
        for _ in range(4):  # the alias resolves to either replica
            status, text = cluster.http(
                f"http://{host}:{port}/v1/predict", "POST", json.dumps({"text": "great flight"})
            )
            assert status == 200, f"prediction through Service {host}: {status} {text[:500]}"
            assert json.loads(text)["model_version"] == champion
        time.sleep(5)
        for name in controllers:
            assert engine.running(name), engine.logs(name)
        engine.step(f"controller up; prediction through Service {host} by version {champion}", step)

        # restartPolicy Always brings a crashed container back, as the kubelet would; a clean
        # first install has no crash to hide.
        restarts = {n: engine.restarts(n) for n in [*mlflow, *replicas, *controllers]}
        stats = docker(
            "stats", "--no-stream", "--format", "{{.Name}}: {{.MemUsage}}", *restarts, timeout=60
        )
        engine.timings += [(f"  memory {line}", 0.0) for line in stats.stdout.splitlines()]

        step = time.monotonic()
        stopping = [(server, n) for n in replicas] + [(controller, n) for n in controllers]
        with ThreadPoolExecutor(len(stopping)) as pool:
            stops = list(pool.map(lambda pn: _stop(engine, *pn), stopping))
        for (pod, name), (code, took) in zip(stopping, stops, strict=True):
            assert code == 0, (
                f"{name} exited {code} on SIGTERM (grace {pod.grace_s} s):\n{engine.logs(name)}"
            )
            engine.timings.append((f"  {name}: preStop + SIGTERM to exit 0", took))
        engine.step("server and controller stopped within their grace periods", step)
        crashed = {n: c for n, c in restarts.items() if c}
        assert not crashed, f"containers crashed and were restarted: {crashed}\n" + "\n".join(
            f"--- {n}:\n{_errors(engine.logs(n, tail=100_000, limit=10**7))}" for n in crashed
        )


def _errors(logs: str) -> str:
    """The error lines of a log (a crash's cause, not the requests that followed)."""
    lines = [line for line in logs.splitlines() if "Error" in line or "Traceback" in line]
    return "\n".join(lines[:12])


def _start(engine: Engine, pod: Pod, extra: dict[str, dict[str, str]]) -> list[str]:
    return [engine.start(pod, i, extra.get(pod.name)) for i in range(pod.replicas)]


def _startup(cluster: Cluster, pod: Pod, name: str) -> None:
    """The startup probe (else the liveness probe) passes within its budget, as the kubelet
    allows it: periodSeconds x failureThreshold."""
    first = pod.probes.get("startup") or pod.probes.get("liveness")
    assert first is not None, f"{pod.workload} has no startup or liveness probe"
    cluster.until(name, first, max(first.period_s * first.failure_threshold, 30))


def _probes_pass(cluster: Cluster, pod: Pod, name: str) -> None:
    _startup(cluster, pod, name)
    for probe in pod.probes.values():
        cluster.until(name, probe, 90)


def _stop(engine: Engine, pod: Pod, name: str) -> tuple[int, float]:
    """What the kubelet does: the preStop sleep, then SIGTERM and SIGKILL after what remains of
    terminationGracePeriodSeconds. The exit code and the seconds it took."""
    began = time.monotonic()
    time.sleep(pod.pre_stop_sleep_s)
    remaining = max(pod.grace_s - pod.pre_stop_sleep_s, 1)
    docker("stop", "-t", str(remaining), name, timeout=remaining + 30)
    return engine.exit_code(name), time.monotonic() - began


def _wait_postgres(engine: Engine, name: str) -> None:
    for _ in range(60):
        ready = docker("exec", name, "pg_isready", "-h", "127.0.0.1", "-d", "loopml", check=False)
        if ready.returncode == 0:
            return
        time.sleep(1)
    pytest.fail(f"the PostgreSQL stand-in is not ready:\n{engine.logs(name)}")


def _buckets(pods: dict[str, Pod]) -> set[str]:
    """Every s3:// bucket the workloads name (the cloud's Terraform creates them)."""
    import re

    words = [
        w for p in pods.values() for w in [*(p.command or []), *(p.args or []), *p.env.values()]
    ]
    return {m.group(1) for w in words for m in re.finditer(r"s3://([a-z0-9.\-]+)", w)}


def _make_buckets(cluster: Cluster, buckets: set[str], keys: dict[str, str]) -> None:
    script = (
        "import os, sys, boto3\n"
        "s3 = boto3.client('s3', endpoint_url='http://s3:9000')\n"
        "for b in sys.argv[1:]: s3.create_bucket(Bucket=b)\n"
    )
    env = {k: keys[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    flags = [a for k in env for a in ("-e", k)]
    docker("exec", *flags, cluster.client, "python3", "-c", script, *sorted(buckets), env=env)


# ---- what the rehearsal catches (cheap: no containers) ----------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render("prod", tmp_path_factory.mktemp("render"))


def _secrets() -> dict[str, dict[str, str]]:
    return operator_secrets(Credentials())


def _container(
    objects: list[dict[str, Any]], name: str, kind: str = "Deployment"
) -> dict[str, Any]:
    (obj,) = (o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
    containers: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return containers[0]


# What a cluster gives every image: tini as PID 1 running loopml (COMMON contract, the Dockerfile).
FACTS = ImageFacts(
    entrypoint=("/usr/bin/tini", "--", "loopml"),
    cmd=("serve", "--host", "0.0.0.0", "--port", "8000"),
    executables=frozenset({"/usr/bin/tini", "loopml", "mlflow", "/bin/sh"}),
)


def test_prod_overlay_plans_with_exactly_the_operator_secrets(
    rendered: list[dict[str, Any]],
) -> None:
    pods = plan_pods(rendered, secrets=_secrets())
    server = pods["loopml-server"]
    assert server.read_only and server.cap_drop == ["ALL"] and server.no_new_privileges
    assert server.user == "10001:10001" and server.memory
    assert "loopml-server" in server.aliases and server.service_ports
    check_commands(pods, FACTS)


def test_a_secret_key_the_operator_does_not_create_fails(rendered: list[dict[str, Any]]) -> None:
    objects = copy.deepcopy(rendered)
    _container(objects, "loopml-server").setdefault("env", []).append(
        {"name": "LOOPML_METRICS_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": "loopml-secrets", "key": "LOOPML_METRICS_TOKEN"}}}
    )  # fmt: skip
    with pytest.raises(RehearsalError, match="secret 'loopml-secrets' key 'LOOPML_METRICS_TOKEN'"):
        plan_pods(objects, secrets=_secrets())


def test_an_unknown_loopml_setting_fails(rendered: list[dict[str, Any]]) -> None:
    (config,) = (o for o in rendered if o["kind"] == "ConfigMap" and "LOOPML_HOME" in o["data"])
    objects = copy.deepcopy(rendered)
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == config["metadata"]["name"]:
            obj["data"]["LOOPML_RELOAD_INTERVAL"] = "10"  # the setting is ..._INTERVAL_S
    with pytest.raises(RehearsalError, match="LOOPML_RELOAD_INTERVAL is no loopml setting"):
        plan_pods(objects, secrets=_secrets())


def test_a_port_the_container_does_not_declare_fails(rendered: list[dict[str, Any]]) -> None:
    objects = copy.deepcopy(rendered)
    for obj in objects:
        if obj["kind"] == "Service" and obj["metadata"]["name"] == "loopml-server":
            obj["spec"]["ports"][0]["targetPort"] = "metrics"
    _container(objects, "loopml-server")["readinessProbe"]["httpGet"]["port"] = "htttp"
    with pytest.raises(RehearsalError) as caught:
        plan_pods(objects, secrets=_secrets())
    assert "targetPort 'metrics' is no port of Deployment/loopml-server" in str(caught.value)
    assert "readinessProbe names port 'htttp'" in str(caught.value)


def test_a_command_the_image_does_not_have_fails(rendered: list[dict[str, Any]]) -> None:
    objects = copy.deepcopy(rendered)
    _container(objects, "loopml-server")["args"] = ["serve", "--prot", "8000"]
    _container(objects, "loopml-server")["livenessProbe"]["httpGet"]["path"] = "/health"
    _container(objects, "loopml-controller")["command"] = ["loopml-controller"]
    bootstrap = _container(objects, "loopml-bootstrap", "Job")
    bootstrap["args"] = [a.replace("train --promote", "train --promot") for a in bootstrap["args"]]
    _container(objects, "mlflow")["command"] = ["/usr/bin/tini", "--", "mlflow-server"]
    creds = Credentials()
    pods = plan_pods(objects, secrets=operator_secrets(creds))
    with pytest.raises(RehearsalError) as caught:
        check_commands(pods, FACTS)
    # mlflow's args carry the database URL: its password is not shown
    assert "the image has no mlflow-server" in str(caught.value)
    assert creds.mlflow_db not in str(caught.value)
    assert "`loopml serve --prot 8000` does not parse" in str(caught.value)
    assert "the image has no loopml-controller" in str(caught.value)
    assert "`loopml train --promot --json` does not parse" in str(caught.value)
    assert "livenessProbe GET /health: loopml serve has no such path" in str(caught.value)


def test_a_path_on_the_read_only_root_fails(rendered: list[dict[str, Any]]) -> None:
    objects = copy.deepcopy(rendered)
    _container(objects, "loopml-controller")["env"].append(
        {"name": "LOOPML_HOME", "value": "/var/lib/loopml-data"}
    )
    with pytest.raises(
        RehearsalError, match="LOOPML_HOME=/var/lib/loopml-data is on the read-only"
    ):
        plan_pods(objects, secrets=_secrets())


def test_an_undefined_variable_in_args_fails(rendered: list[dict[str, Any]]) -> None:
    objects = copy.deepcopy(rendered)
    _container(objects, "loopml-server")["args"] = ["serve", "--port", "$(SERVER_PORT)"]
    with pytest.raises(RehearsalError, match=r"uses \$\(SERVER_PORT\), which its environment"):
        plan_pods(objects, secrets=_secrets())


def test_variables_expand_as_kubernetes_does() -> None:
    assert expand("$(A)/$(B)-$$(A)", {"A": "x"}) == ("x/$(B)-$(A)", ["B"])


def test_docker_run_carries_the_security_context_and_no_secret(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    creds = Credentials()
    pods = plan_pods(rendered, secrets=operator_secrets(creds))
    server = pods["loopml-server"]
    line = docker_run_argv(
        server, image=IMAGE, name="x", network="n", prefix=PREFIX, workdir=tmp_path
    )
    text = " ".join(line)
    for flag in ("--read-only", "--cap-drop ALL", "--user 10001:10001", "no-new-privileges:true",
                 "--network-alias loopml-server", "-e LOOPML_DATABASE_URL"):  # fmt: skip
        assert flag in text
    assert creds.admin_token not in text and creds.loopml_db not in text

"""deploy/k8s: the overlays render (the prod one from cluster.env, the one file Terraform writes),
validate offline against the Kubernetes schemas with and without the optional components, follow
the security and operations policy, agree with the app (routes, probe paths, settings, CLI
commands, shutdown timeouts), with MLflow's server, with deploy/prometheus and deploy/grafana
(generated objects), and pass checkov."""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from deploy_helpers import CLUSTER_ENV_KEYS, check_loopml_args, checkov_kubernetes_failures

from loopml.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROD = K8S / "overlays" / "prod"
OVERLAYS = ("dev", "prod")
# Each overlay as committed, and with the optional components it leaves out (or the other cloud):
# every variant must render, validate and pass checkov.
VARIANTS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "dev": ("dev", None),
    "prod": ("prod", None),
    "dev-with-components": ("dev", ("ingress", "monitoring")),
    "prod-without-components": ("prod", ()),
    "prod-eks": ("prod", ("ingress", "monitoring", "eks")),
}
IDENTITY_ANNOTATION = {"gke": "iam.gke.io/gcp-service-account", "eks": "eks.amazonaws.com/role-arn"}
# Oldest Kubernetes minor the manifests support (the preStop `sleep` action is on by default
# from 1.30) and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
# Prometheus Operator CRDs: kubernetes-validate has no schema for them, so their structure is
# checked by the dedicated tests below instead (test_prometheus_rule_*, test_servicemonitor_*).
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SETTING_VARS = {f"LOOPML_{name.upper()}" for name in Settings.model_fields}
SECRET_VARS = {
    "LOOPML_ADMIN_TOKEN",
    "LOOPML_DATABASE_URL",
    "LOOPML_API_KEYS",
    "LOOPML_ROUTING_SECRET",
}
SERVER = "loopml-server"
MLFLOW = "mlflow"
MLFLOW_MIGRATE = "mlflow-migrate"
WORKLOAD_KINDS = {"Deployment", "CronJob", "Job"}
# Applied only after the migration Jobs completed (the README's deploy sequence selects on it).
AFTER_MIGRATION = ("loopml.io/apply", "after-migration")


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl (with kustomize) is not installed: it is on the dev and CI machines")
    return path


def cluster_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as kustomize's env files."""
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def copy_tree(
    *,
    overlay: str | None = None,
    components: tuple[str, ...] | None = None,
    env: dict[str, str] | None = None,
    image: dict[str, str] | None = None,
) -> Path:
    """deploy/k8s copied to a temporary directory, with cluster.env written from
    cluster.env.example (updated with ``env``; never the developer's own cluster.env), and, for
    ``overlay``, its components and its loopml image entry replaced when given."""
    tree = Path(tempfile.mkdtemp(prefix="loopml-k8s-")) / "k8s"
    atexit.register(shutil.rmtree, tree.parent, True)
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("cluster.env", "__pycache__"))
    values = cluster_env((PROD / "cluster.env.example").read_text()) | (env or {})
    (tree / "overlays" / "prod" / "cluster.env").write_text(
        "".join(f"{k}={v}\n" for k, v in values.items())
    )
    if overlay is not None:
        path = tree / "overlays" / overlay / "kustomization.yaml"
        kustomization = yaml.safe_load(path.read_text())
        if components is not None:
            kustomization["components"] = [f"../../components/{c}" for c in components]
        if image is not None:
            kustomization["images"] = [{"name": "loopml", **image}]
        path.write_text(yaml.safe_dump(kustomization))
    return tree


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def render_dir(directory: Path) -> tuple[dict[str, Any], ...]:
    result = kustomize(directory)
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize`` of ``base`` or of a variant (see VARIANTS; ``overlays/<name>`` is
    the overlay as committed), on a copy of the tree with cluster.env from its example."""
    name = target.removeprefix("overlays/")
    if name == "base":
        return render_dir(K8S / "base")
    overlay, components = VARIANTS[name]
    return render_dir(copy_tree(overlay=overlay, components=components) / "overlays" / overlay)


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(overlay) if o["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]  # type: ignore[no-any-return]
    return obj["spec"]["template"]  # type: ignore[no-any-return]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return pod_template(obj)["spec"]  # type: ignore[no-any-return]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return pod_template(obj)["metadata"]["labels"]  # type: ignore[no-any-return]


def workloads(overlay: str) -> Iterator[dict[str, Any]]:
    return (o for o in render(overlay) if o["kind"] in WORKLOAD_KINDS)


def loopml_workloads(overlay: str) -> Iterator[dict[str, Any]]:
    """The workloads that run loopml (all but the MLflow server and its migration Job)."""
    return (o for o in workloads(overlay) if o["metadata"]["name"] not in {MLFLOW, MLFLOW_MIGRATE})


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def _peer_in_namespace(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    """A NetworkPolicy peer selects a pod of the policy's own namespace with these labels."""
    return (
        "namespaceSelector" not in peer
        and "ipBlock" not in peer
        and matches(peer.get("podSelector", {}), labels)
    )


def allows(policy: dict[str, Any], direction: str, labels: dict[str, str], port: int) -> bool:
    """The policy lets its pods talk (egress) to, or be reached (ingress) by, a pod of their
    namespace with ``labels`` on ``port``."""
    key = "to" if direction == "egress" else "from"
    for rule in policy["spec"].get(direction, []):
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        peers = rule.get(key)
        if not peers or any(_peer_in_namespace(peer, labels) for peer in peers):
            return True
    return False


def policies_for(overlay: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        p
        for p in objects(overlay, "NetworkPolicy")
        if matches(p["spec"]["podSelector"], pod_labels(obj))
    ]


# ---- rendering and schemas -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", *(f"overlays/{v}" for v in VARIANTS)])
def test_renders(target: str) -> None:
    kinds = {o["kind"] for o in render(target)}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "CronJob",
        "Job",
        "ServiceAccount",
    } <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_objects_match_kubernetes_schemas(variant: str, version: str) -> None:
    errors = []
    for obj in render(variant):
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(
                f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at "
                f"{'.'.join(str(p) for p in exc.caught.absolute_path)}"
            )
    assert errors == []


def test_secret_example_matches_schema() -> None:
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    kubernetes_validate.validate(example, K8S_VERSIONS[-1], strict=True)
    assert set(example["stringData"]) == SECRET_VARS
    # the image has psycopg 3; a plain postgresql:// URL asks SQLAlchemy for psycopg2
    text = (K8S / "secret.example.yaml").read_text() + "".join(_deploy_docs().values())
    assert "postgresql://" not in text
    assert example["stringData"]["LOOPML_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_crd_objects_are_well_formed() -> None:
    for variant in VARIANTS:
        for obj in render(variant):
            if obj["kind"] in CRD_KINDS:
                assert obj["apiVersion"] == "monitoring.coreos.com/v1"
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
                assert obj["metadata"]["namespace"]
                assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}


def test_prometheus_operator_objects_are_an_optional_component() -> None:
    """Seam 9: `kubectl apply -k overlays/dev` works on a cluster without the Prometheus
    Operator's CRDs; prod opts in to them (and to the Ingress) as components."""
    for variant in ("dev", "prod-without-components"):
        assert not {o["kind"] for o in render(variant)} & (CRD_KINDS | {"Ingress"}), variant
    for variant in ("prod", "dev-with-components"):
        assert CRD_KINDS | {"Ingress"} <= {o["kind"] for o in render(variant)}, variant
    assert not (K8S / "base" / "monitoring").exists()
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert not [r for r in base["resources"] if "monitoring" in r or "ingress" in r]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_hold_only_namespaced_objects_and_the_namespace_is_applied_once(
    overlay: str,
) -> None:
    """CD's identity may edit objects in the namespace, not create (or patch) the Namespace: an
    overlay with a Namespace (or any cluster-scoped object) fails `kubectl apply` for it."""
    namespace = yaml.safe_load((K8S / "overlays" / overlay / "namespace.yaml").read_text())
    kubernetes_validate.validate(namespace, K8S_VERSIONS[-1], strict=True)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for variant, (base, _) in VARIANTS.items():
        if base != overlay:
            continue
        for obj in render(variant):
            where = f"{variant}: {obj['kind']}/{obj['metadata']['name']}"
            assert obj["metadata"].get("namespace") == namespace["metadata"]["name"], where


# ---- policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_locked_down(variant: str) -> None:
    for obj in workloads(variant):
        spec = pod_spec(obj)
        where = f"{variant} {obj['kind']}/{obj['metadata']['name']}"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec.get("serviceAccountName", "default") != "default", where
        assert spec["enableServiceLinks"] is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            writable = (
                {"/tmp"}
                if obj["metadata"]["name"] in {MLFLOW, MLFLOW_MIGRATE}
                else {"/tmp", "/var/lib/loopml"}
            )
            assert writable <= mounts, f"{where}: writable paths"
            for mount in c["volumeMounts"]:
                volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
                assert "emptyDir" in volume, f"{where}: {mount['mountPath']}"


def test_server_probes_hit_real_routes(tmp_path: Path) -> None:
    from loopml.config import load_settings
    from loopml.serving.app import create_app

    paths = set(create_app(load_settings(home=tmp_path)).openapi()["paths"])
    for overlay in OVERLAYS:
        for c in pod_spec(one(overlay, "Deployment", SERVER))["containers"]:
            probes = {k: c.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")}
            assert all(probes.values()), f"{overlay} {c['name']}: {probes}"
            assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
            for probe in probes.values():
                assert probe["httpGet"]["path"] in paths
                assert probe["httpGet"]["port"] in {p["name"] for p in c["ports"]}


def test_grace_period_covers_prestop_requests_and_journal_drain() -> None:
    from loopml.serving.runtime import _DRAIN_TIMEOUT_S
    from loopml.serving.server import _GRACEFUL_S

    for overlay in OVERLAYS:
        spec = pod_spec(one(overlay, "Deployment", SERVER))
        (server,) = spec["containers"]
        pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop >= 5, "endpoints need a few seconds to drop the pod"
        # the image's documented worst case is 75 s (deploy/docker)
        assert spec["terminationGracePeriodSeconds"] >= max(
            75, pre_stop + _GRACEFUL_S + _DRAIN_TIMEOUT_S
        )


def test_comments_state_the_real_grace_periods() -> None:
    """A comment naming "N s grace period" names the grace period of an object in its file."""
    for path in sorted(K8S.rglob("*.yaml")):
        text = path.read_text()
        stated = {int(n) for n in re.findall(r"(\d+) s grace period", text)}
        actual = {int(n) for n in re.findall(r"terminationGracePeriodSeconds: (\d+)", text)}
        assert stated <= actual, f"{path.relative_to(ROOT)}: comments say {stated}, is {actual}"


def test_server_command_and_storage() -> None:
    for overlay in OVERLAYS:
        deployment = one(overlay, "Deployment", SERVER)
        spec = pod_spec(deployment)
        (server,) = spec["containers"]
        args = server["args"]
        check_loopml_args(args)
        assert args[0] == "serve" and args[args.index("--host") + 1] == "0.0.0.0"
        assert int(args[args.index("--port") + 1]) == server["ports"][0]["containerPort"] == 8000
        home = next(m for m in server["volumeMounts"] if m["mountPath"] == "/var/lib/loopml")
        volume = next(v for v in spec["volumes"] if v["name"] == home["name"])
        assert "emptyDir" in volume, "serving replicas are stateless: LOOPML_HOME is an emptyDir"
        assert {c["whenUnsatisfiable"] for c in spec["topologySpreadConstraints"]}
        for tsc in spec["topologySpreadConstraints"]:
            assert matches(tsc["labelSelector"], pod_labels(deployment))


def test_controller_is_a_single_writer_and_training_never_overlaps() -> None:
    """Two controller replicas: the lease in the loopml database lets one act at a time (a
    RollingUpdate's overlap included), the other stands by on another node if it can."""
    for overlay in OVERLAYS:
        controller = one(overlay, "Deployment", "loopml-controller")
        assert controller["spec"]["replicas"] == 2
        strategy = controller["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0  # the standby stays up
        for tsc in pod_spec(controller)["topologySpreadConstraints"]:
            assert matches(tsc["labelSelector"], pod_labels(controller))
        # it finishes or abandons its step on SIGTERM within the image's 75 s
        assert pod_spec(controller)["terminationGracePeriodSeconds"] >= 75
        args = pod_spec(controller)["containers"][0]["args"]
        check_loopml_args(args)
        assert args[0] == "controller"
        train = one(overlay, "CronJob", "loopml-train")
        assert train["spec"]["concurrencyPolicy"] == "Forbid"
        args = pod_spec(train)["containers"][0]["args"]
        check_loopml_args(args)
        assert args[0] == "train"


def test_no_replica_count_where_an_autoscaler_owns_it() -> None:
    """Seam 7: an applied `replicas` resets a Deployment the HPA scaled out."""
    for target in ("base", *VARIANTS):
        rendered = render(target)
        for hpa in (o for o in rendered if o["kind"] == "HorizontalPodAutoscaler"):
            name = hpa["spec"]["scaleTargetRef"]["name"]
            (deployment,) = [
                o for o in rendered if o["kind"] == "Deployment" and o["metadata"]["name"] == name
            ]
            assert "replicas" not in deployment["spec"], f"{target}: {name}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_come_from_real_keys_and_secrets_from_a_secret(overlay: str) -> None:
    rendered = render(overlay)
    assert not [o for o in rendered if o["kind"] == "Secret"], "no secret values in overlays"
    configmaps = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "ConfigMap"}
    for obj in loopml_workloads(overlay):
        for c in pod_spec(obj)["containers"]:
            refs = [e["configMapRef"]["name"] for e in c["envFrom"] if "configMapRef" in e]
            assert refs, "settings come from the ConfigMap"
            for name in refs:
                keys = set(configmaps[name]["data"])
                assert keys <= SETTING_VARS, f"not loopml settings: {keys - SETTING_VARS}"
                assert not keys & SECRET_VARS, "secrets belong in the Secret"
                # Kubernetes migrates in the loopml-migrate Job, never at a pod's start.
                assert configmaps[name]["data"]["LOOPML_DB_AUTO_MIGRATE"] == "false"
            assert any(e.get("secretRef", {}).get("name") == "loopml-secrets" for e in c["envFrom"])
            for env in c.get("env", []):
                assert env["name"] not in SECRET_VARS or "valueFrom" in env, env["name"]
                if env["name"].startswith("LOOPML_"):
                    assert env["name"] in SETTING_VARS, env["name"]


def test_service_pdb_and_networkpolicy_select_the_server_pods() -> None:
    for overlay in OVERLAYS:
        deployment = one(overlay, "Deployment", SERVER)
        labels = pod_labels(deployment)
        service = one(overlay, "Service", SERVER)
        assert service["spec"]["selector"] and matches(
            {"matchLabels": service["spec"]["selector"]}, labels
        )
        container_ports = {
            p["name"]: p["containerPort"] for p in pod_spec(deployment)["containers"][0]["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports
        assert matches(one(overlay, "PodDisruptionBudget", SERVER)["spec"]["selector"], labels)
        (policy,) = policies_for(overlay, deployment)
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ingress_ports == {8000}
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert {53, 5432, 5000} <= egress_ports, "DNS, PostgreSQL, MLflow"


def test_every_workload_has_a_network_policy() -> None:
    for overlay in OVERLAYS:
        for obj in workloads(overlay):
            assert policies_for(overlay, obj), obj["metadata"]["name"]


def test_hpa_scales_the_server_on_cpu_and_requests_per_second() -> None:
    hpa = one("prod", "HorizontalPodAutoscaler", SERVER)
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", SERVER)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "loopml_requests_per_second"
    assert pod_spec(one("prod", "Deployment", SERVER))["containers"][0]["resources"]["requests"][
        "cpu"
    ], "CPU utilization needs a CPU request"


def test_prometheus_adapter_maps_a_real_loopml_counter() -> None:
    from loopml.serving.metrics import Metrics

    registry = Metrics().registry
    assert registry is not None
    counters = {f"{f.name}_total" for f in registry.collect() if f.type == "counter"}
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    hpa_metrics = {
        m["pods"]["metric"]["name"]
        for m in one("prod", "HorizontalPodAutoscaler", SERVER)["spec"]["metrics"]
        if m["type"] == "Pods"
    }
    served = set()
    for rule in values["rules"]["custom"]:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"])
        assert series and series.group(0) in counters, rule["seriesQuery"]
        assert "rate(<<.Series>>" in rule["metricsQuery"], "a counter must be rated"
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        served.add(rule["name"]["as"])
    assert hpa_metrics <= served


# ---- MLflow (seam 3) ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_runs_beside_loopml_from_the_image(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.cli

    deployment = one(overlay, "Deployment", MLFLOW)
    spec = pod_spec(deployment)
    assert spec["serviceAccountName"] == "loopml-mlflow"
    assert one(overlay, "ServiceAccount", "loopml-mlflow")
    (c,) = spec["containers"]
    assert c["command"] == ["/usr/bin/tini", "--", "mlflow", "server"], "tini is PID 1"
    args = c["args"]
    env = {e["name"]: e for e in c["env"]}
    # MLflow's own CLI parses them in the container's environment (none of this machine's
    # MLFLOW_*; sentinels for the two stores): an option it does not have fails here, and the
    # database URL and the artifact destination come from the env, not from the arguments.
    stores = {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"}
    for name in [n for n in os.environ if n.startswith("MLFLOW_")]:
        monkeypatch.delenv(name)
    for name, e in env.items():
        monkeypatch.setenv(name, f"sentinel-{name}" if name in stores else e["value"])
    with mlflow.cli.cli.commands["server"].make_context("server", list(args)) as ctx:
        params = ctx.params
    assert params["backend_store_uri"] == "sentinel-MLFLOW_BACKEND_STORE_URI"
    assert params["artifacts_destination"] == "sentinel-MLFLOW_ARTIFACTS_DESTINATION"
    assert not any("$(" in arg for arg in args), "the database password stays off argv"
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-secrets",
        "key": "MLFLOW_BACKEND_STORE_URI",
    }
    # MLflow 3's job-execution workers took 1.96 GiB of the 2Gi limit; loopml runs no MLflow jobs.
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert params["serve_artifacts"] is True, "loopml pods hold no bucket credentials"
    assert params["host"] == "0.0.0.0"
    (port,) = c["ports"]
    assert int(params["port"]) == port["containerPort"] == 5000
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": port["name"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_loopml_tracking_uri_is_the_mlflow_service_of_its_namespace(overlay: str) -> None:
    from mlflow.server.security_utils import is_allowed_host_header, is_health_endpoint

    (config,) = [c for c in objects(overlay, "ConfigMap") if "LOOPML_ENV" in c.get("data", {})]
    uri = urlsplit(config["data"]["LOOPML_TRACKING_URI"])
    assert uri.scheme == "http" and uri.hostname and uri.port
    service = one(overlay, "Service", uri.hostname)  # a bare name: this namespace's Service
    deployment = one(overlay, "Deployment", MLFLOW)
    assert matches({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == uri.port
    (c,) = pod_spec(deployment)["containers"]
    assert service_port["targetPort"] in {p["name"] for p in c["ports"]}
    # MLflow's Host-header check (DNS-rebinding protection) admits what loopml sends
    allowed = c["args"][c["args"].index("--allowed-hosts") + 1].split(",")
    for host in (uri.netloc, uri.hostname, "localhost:5000"):
        assert is_allowed_host_header(allowed, host), host
    for host in ("evil.example.com", f"{uri.hostname}.evil.example:{uri.port}"):
        assert not is_allowed_host_header(allowed, host), host
    assert is_health_endpoint("/health"), "probes come with the pod IP as Host"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_connect_loopml_and_mlflow_and_nothing_else(overlay: str) -> None:
    mlflow = one(overlay, "Deployment", MLFLOW)
    mlflow_labels = pod_labels(mlflow)
    (mlflow_policy,) = policies_for(overlay, mlflow)
    assert set(mlflow_policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for obj in loopml_workloads(overlay):
        if obj["metadata"]["name"] == "loopml-migrate":
            continue  # the database only
        name = obj["metadata"]["name"]
        assert any(allows(p, "egress", mlflow_labels, 5000) for p in policies_for(overlay, obj))
        assert allows(mlflow_policy, "ingress", pod_labels(obj), 5000), name
    # nothing from other namespaces, nor from other pods of this one
    for rule in mlflow_policy["spec"]["ingress"]:
        assert rule.get("from"), "an ingress rule without peers admits everyone"
        assert all("namespaceSelector" not in peer for peer in rule["from"])
    assert not allows(mlflow_policy, "ingress", {"app.kubernetes.io/name": "other"}, 5000)
    egress_ports = {p["port"] for rule in mlflow_policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 5432, 443}, "DNS, its database, the object store"
    # no policy still points at an `mlflow` namespace
    for policy in objects(overlay, "NetworkPolicy"):
        assert "kubernetes.io/metadata.name: mlflow" not in yaml.safe_dump(policy)


# ---- Jobs: migration and bootstrap (seams 2 and 8) ----------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_job_upgrades_the_schema_before_the_workloads(overlay: str) -> None:
    job = one(overlay, "Job", "loopml-migrate")
    (c,) = pod_spec(job)["containers"]
    assert "command" not in c, "the image's entrypoint: tini, then loopml"
    check_loopml_args(c["args"])
    assert c["args"][:2] == ["db", "upgrade"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # The README's sequence applies everything not labelled after-migration first, waits for
    # this Job, then applies the rest: what runs loopml code on the database is in the second.
    key, value = AFTER_MIGRATION
    first = [o for o in render(overlay) if o["metadata"].get("labels", {}).get(key) != value]
    second = {
        (o["kind"], o["metadata"]["name"])
        for o in render(overlay)
        if o["metadata"].get("labels", {}).get(key) == value
    }
    assert second == {
        ("Deployment", MLFLOW),  # needs the schema mlflow-migrate makes
        ("Deployment", SERVER),
        ("Deployment", "loopml-controller"),
        ("CronJob", "loopml-train"),
        ("Job", "loopml-bootstrap"),
    }
    mlflow_job = one(overlay, "Job", MLFLOW_MIGRATE)
    assert job in first and mlflow_job in first
    names = {(o["kind"], o["metadata"]["name"]) for o in first}
    for migration in (job, mlflow_job):
        spec = pod_spec(migration)
        assert ("ServiceAccount", spec["serviceAccountName"]) in names
        for ref in spec["containers"][0].get("envFrom", []):
            if "configMapRef" in ref:
                assert ("ConfigMap", ref["configMapRef"]["name"]) in names
        assert policies_for(overlay, migration), "the Job reaches its database"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_schema_is_migrated_by_one_job_off_the_service(overlay: str) -> None:
    """MLflow replicas starting together on an empty database raced to create its tables: one
    Job runs `mlflow db upgrade` first, on the URL from the env (never on the command line), and
    its pod is no endpoint of the `mlflow` Service and reaches only DNS and PostgreSQL."""
    job = one(overlay, "Job", MLFLOW_MIGRATE)
    spec = pod_spec(job)
    (c,) = spec["containers"]
    assert c["command"] == ["/usr/bin/tini", "--", "/bin/sh", "-euc"], "tini is PID 1"
    (script,) = c["args"]
    assert script.strip() == 'exec mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"'
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-secrets",
        "key": "MLFLOW_BACKEND_STORE_URI",
    }
    assert env["HOME"]["value"] == "/tmp"
    assert spec["restartPolicy"] == "Never"
    mlflow = one(overlay, "Deployment", MLFLOW)
    assert pod_spec(mlflow)["containers"][0]["image"] == c["image"], "the same MLflow"
    service = one(overlay, "Service", MLFLOW)
    assert not matches({"matchLabels": service["spec"]["selector"]}, pod_labels(job))
    assert not matches(mlflow["spec"]["selector"], pod_labels(job))
    (policy,) = policies_for(overlay, job)
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not policy["spec"]["ingress"]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 5432}, "DNS and its database only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_bootstrap_job_trains_and_promotes_only_without_a_champion(overlay: str) -> None:
    job = one(overlay, "Job", "loopml-bootstrap")
    (c,) = pod_spec(job)["containers"]
    assert c["command"][:2] == ["/usr/bin/tini", "--"], "tini is PID 1"
    script = c["args"][0]
    assert re.search(r"exec loopml train --promote\b", script)
    for line in re.findall(r"loopml ([a-z][^\n|)]*)", script):
        check_loopml_args(line.split())
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"] == {
        "containerName": c["name"],
        "operator": "In",
        "values": [1, 2],
    }, "a failed gate or bad data fails at once; MLflow not up yet (exit 3) retries"
    # The first champion is timed on a node shared with other pods (129 ms p99 measured on a busy
    # one, against the 50 ms default): a failed gate here would leave the cluster with no champion.
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert float(env["LOOPML_GATE_MAX_P99_LATENCY_MS"]) >= 250
    # Exit 3 retries with the Job's backoff (10 s, doubling) until MLflow's first start is over.
    retries_s = sum(10 * 2**i for i in range(job["spec"]["backoffLimit"]))
    assert retries_s >= 120, "MLflow's first start took about 60 s"


def test_bootstrap_script_promotes_once_and_is_safe_to_rerun(tmp_path: Path) -> None:
    """The Job's own script, run twice with the real loopml (SQLite and a local MLflow store):
    the first run trains and makes the first champion, the second finds it and does nothing."""
    (c,) = pod_spec(one("prod", "Job", "loopml-bootstrap"))["containers"]
    command = c["command"][2:] + c["args"]  # without tini
    assert command[0] == "/bin/sh"
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(ROOT / "src"),
        "HOME": str(tmp_path),
        "LOOPML_HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
    }

    def bootstrap() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=600, check=False
        )

    first = bootstrap()
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout)["promoted"] is True
    second = bootstrap()
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.strip() == "loopml-bootstrap: a champion exists, nothing to do"
    models = subprocess.run(
        ["loopml", "models", "--json"], env=env, capture_output=True, text=True, check=True
    )
    (model,) = json.loads(models.stdout)
    assert model["aliases"] == ["champion"], "one version, trained once"


def _deploy_docs() -> dict[str, str]:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    section = docs[docs.index("<!-- K8S -->") : docs.index("<!-- /K8S -->")]
    return {"deploy/k8s/README.md": (K8S / "README.md").read_text(), "docs/deploy.md": section}


@pytest.mark.parametrize("doc", ["deploy/k8s/README.md", "docs/deploy.md"])
def test_documented_release_sequence_migrates_bootstraps_then_waits(doc: str) -> None:
    """Seams 2 and 8, as the docs tell it: delete the old Jobs, apply what the migration needs,
    wait for it, apply the rest, wait for the first champion, only then for ready pods. Every
    object and label the commands name is in the rendered overlay."""
    text = _deploy_docs()[doc]
    key, value = AFTER_MIGRATION
    steps = [
        "delete job loopml-migrate mlflow-migrate loopml-bootstrap --ignore-not-found",
        f"apply -f loopml.yaml -l '{key}!={value}'",
        "wait --for=condition=complete job/loopml-migrate job/mlflow-migrate",
        "kubectl apply -f loopml.yaml\n",
        "rollout status deployment/mlflow",
        "wait --for=condition=complete job/loopml-bootstrap",
        "rollout status deployment/loopml-server",
    ]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p == -1]
    assert positions == sorted(positions), "steps out of order"
    assert "create job --from=cronjob" not in text, "the bootstrap Job makes the first champion"
    assert 'kustomize edit set image "loopml=loopml:${VERSION}@${DIGEST}"' in text
    rendered = {(o["kind"], o["metadata"]["name"]) for o in render("prod")}
    kinds = {"job": "Job", "deployment": "Deployment", "cronjob": "CronJob"}
    for kind, name in re.findall(r"\b(job|deployment|cronjob)/([a-z0-9-]+)", text):
        assert (kinds[kind], name) in rendered, f"{kind}/{name}"
    deleted = re.findall(r"delete job ([a-z0-9 -]+?) --", text)[0].split()
    assert {("Job", n) for n in deleted} == {o for o in rendered if o[0] == "Job"}, "every Job"
    # the second apply waits for every migration Job the first one applied
    waited = re.findall(r"wait --for=condition=complete ((?:job/[a-z0-9-]+ ?)+)", text)[0]
    migrations = {f"job/{n}" for k, n in rendered if k == "Job" and n.endswith("-migrate")}
    assert set(waited.split()) == migrations == {"job/loopml-migrate", f"job/{MLFLOW_MIGRATE}"}
    assert "mlflow.mlflow.svc" not in text and "OWNER" not in text and "PROJECT_ID" not in text


# ---- overlays --------------------------------------------------------------------------------


def test_dev_overlay_is_small_and_local() -> None:
    server = one("dev", "Deployment", SERVER)
    assert server["spec"]["replicas"] == 1
    assert not objects("dev", "HorizontalPodAutoscaler")
    for obj in workloads("dev"):
        for c in pod_spec(obj)["containers"]:
            assert c["image"] == "loopml:dev" and c["imagePullPolicy"] == "IfNotPresent"
    (config,) = [c for c in objects("dev", "ConfigMap") if "LOOPML_ENV" in c.get("data", {})]
    assert config["data"]["LOOPML_ENV"] == "development"


def test_prod_overlay_is_pinned_and_autoscaled() -> None:
    for obj in workloads("prod"):
        for c in pod_spec(obj)["containers"]:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+/loopml:\d+\.\d+\.\d+(@sha256:\w+)?", c["image"])
    (config,) = [c for c in objects("prod", "ConfigMap") if "LOOPML_ENV" in c.get("data", {})]
    assert config["data"]["LOOPML_ENV"] == "production"
    assert one("prod", "HorizontalPodAutoscaler", SERVER)


def _route_paths() -> set[str]:
    """Every HTTP path the serving app answers (its routers' routes, hidden ones included)."""
    from fastapi.routing import APIRoute

    from loopml.serving import routes
    from loopml.serving.app import create_app

    paths: set[str] = set()
    for info in Path(routes.__file__).parent.glob("*.py"):
        module = importlib.import_module(f"loopml.serving.routes.{info.stem}")
        router = getattr(module, "router", None)
        if router is not None:
            paths |= {r.path for r in router.routes if isinstance(r, APIRoute)}
    with tempfile.TemporaryDirectory() as home:
        paths |= set(create_app(Settings(home=Path(home))).openapi()["paths"])
    return paths | {"/docs", "/docs/oauth2-redirect", "/openapi.json"}


def _routed(ingress_paths: list[dict[str, Any]], path: str) -> bool:
    for p in ingress_paths:
        if p["pathType"] == "Exact" and path == p["path"]:
            return True
        prefix = p["path"].rstrip("/")
        if p["pathType"] == "Prefix" and (path == p["path"] or path.startswith(prefix + "/")):
            return True
    return False


@pytest.mark.parametrize("variant", ["prod", "dev-with-components"])
def test_ingress_routes_the_public_api_and_keeps_admin_and_metrics_inside(variant: str) -> None:
    """Seam 11: every route of the app is public (the status page's /static included) except
    /v1/admin/* and /metrics; every Ingress path leads to a real route."""
    ingress = one(variant, "Ingress", SERVER)
    service = one(variant, "Service", SERVER)
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    paths = []
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == SERVER and backend["port"]["name"] in service_ports
            assert path["pathType"] in {"Exact", "Prefix"}
            paths.append(path)
    real = _route_paths()
    assert "/static/{name}" in real and "/v1/admin/promote" in real and "/metrics" in real
    internal = {p for p in real if p == "/metrics" or p.startswith("/v1/admin")}
    for p in sorted(real - internal):
        assert _routed(paths, p), f"{p} is not routed"
    for p in sorted(internal):
        assert not _routed(paths, p), f"{p} is public"
    for path in paths:  # no dead entries
        assert any(_routed([path], p) for p in real), path["path"]
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]


# ---- cluster.env: one place for the cluster's names (seam 4) -----------------------------------


def test_cluster_env_example_has_the_contract_keys_and_is_never_committed_for_real() -> None:
    example = cluster_env((PROD / "cluster.env.example").read_text())
    assert set(example) == set(CLUSTER_ENV_KEYS)
    kustomization = yaml.safe_load((PROD / "kustomization.yaml").read_text())
    # the committed overlay's cloud component is the example's CLOUD
    assert f"../../components/{example['CLOUD']}" in kustomization["components"]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(PROD / "cluster.env")], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "cluster.env is git-ignored"


def test_prod_overlay_fails_clearly_without_cluster_env() -> None:
    tree = copy_tree()
    (tree / "overlays" / "prod" / "cluster.env").unlink()
    result = kustomize(tree / "overlays" / "prod")
    assert result.returncode != 0 and "cluster.env" in result.stderr


@pytest.mark.parametrize("cloud", sorted(IDENTITY_ANNOTATION))
def test_cluster_env_fills_every_name_of_the_prod_overlay(cloud: str) -> None:
    env = {
        "CLOUD": cloud,
        "IMAGE": "registry.test:5000/team/loopml",
        "HOST": "api.loopml.test",
        "SERVER_IDENTITY": f"{cloud}-server-id",
        "CONTROLLER_IDENTITY": f"{cloud}-controller-id",
        "MLFLOW_IDENTITY": f"{cloud}-mlflow-id",
        "MLFLOW_ARTIFACTS_DESTINATION": f"{'gs' if cloud == 'gke' else 's3'}://bucket-test/mlflow",
    }
    digest = "sha256:" + "ab" * 32
    tree = copy_tree(
        overlay="prod",
        components=("ingress", "monitoring", cloud),
        env=env,
        # what CD's `kustomize edit set image loopml=loopml:1.2.0@sha256:...` writes
        image={"newName": "loopml:1.2.0", "digest": digest},
    )
    rendered = render_dir(tree / "overlays" / "prod")
    text = yaml.safe_dump_all(rendered)
    for placeholder in ("PROJECT_ID", "ACCOUNT_ID", "OWNER", "example", "set-from-cluster-env"):
        assert placeholder not in text, placeholder
    assert "cluster-env" not in text, "cluster.env is read by kustomize, never applied"
    accounts = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "ServiceAccount"}
    identity = {
        "loopml-server": env["SERVER_IDENTITY"],
        "loopml-controller": env["CONTROLLER_IDENTITY"],
        "loopml-mlflow": env["MLFLOW_IDENTITY"],
    }
    assert set(accounts) == set(identity)
    for name, account in accounts.items():
        annotations = account["metadata"]["annotations"]
        assert annotations == {IDENTITY_ANNOTATION[cloud]: identity[name]}, name
    for obj in rendered:
        if obj["kind"] in WORKLOAD_KINDS:
            for c in pod_spec(obj)["containers"]:
                assert c["image"] == f"{env['IMAGE']}:1.2.0@{digest}", obj["metadata"]["name"]
            assert obj["metadata"]["namespace"] == "loopml"
    (ingress,) = [o for o in rendered if o["kind"] == "Ingress"]
    assert [r["host"] for r in ingress["spec"]["rules"]] == [env["HOST"]]
    assert ingress["spec"]["tls"][0]["hosts"] == [env["HOST"]]
    (mlflow,) = [
        o for o in rendered if o["metadata"]["name"] == MLFLOW and o["kind"] == "Deployment"
    ]
    (c,) = pod_spec(mlflow)["containers"]
    (destination,) = [e for e in c["env"] if e["name"] == "MLFLOW_ARTIFACTS_DESTINATION"]
    assert destination["value"] == env["MLFLOW_ARTIFACTS_DESTINATION"]


@pytest.mark.parametrize("stack", sorted(IDENTITY_ANNOTATION))
def test_terraform_binds_the_names_this_overlay_uses(stack: str) -> None:
    """Seam 4 across the repository: Terraform's kustomize_env output is this overlay's
    cluster.env (same keys, its CLOUD), and its identities are bound to the namespace and the
    ServiceAccounts the prod overlay's pods run as."""
    text = "".join(
        p.read_text() for p in sorted((ROOT / "deploy" / "terraform" / stack).glob("*.tf"))
    )
    env = re.search(r"kustomize_env\s*=\s*<<-?EOT\n(.*?)\n\s*EOT", text, re.S)
    assert env, f"{stack}: no kustomize_env heredoc"
    written = cluster_env("\n".join(line.strip() for line in env.group(1).splitlines()))
    assert set(written) == set(CLUSTER_ENV_KEYS) and written["CLOUD"] == stack
    namespace = re.search(r'variable "k8s_namespace" \{[^}]*?default\s*=\s*"([^"]+)"', text, re.S)
    assert (
        namespace
        and namespace.group(1) == one("prod", "Deployment", SERVER)["metadata"]["namespace"]
    )
    accounts = re.search(
        r'variable "k8s_service_accounts" \{.*?default\s*=\s*\{(.*?)\}', text, re.S
    )
    assert accounts
    bound = set(re.findall(r'=\s*"([^"]+)"', accounts.group(1)))
    used = {pod_spec(o)["serviceAccountName"] for o in workloads("prod")}
    assert used == bound == {o["metadata"]["name"] for o in objects("prod", "ServiceAccount")}


# ---- monitoring: one source of truth -----------------------------------------------------------


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_up_to_date() -> None:
    generated = _generator().generate()
    assert generated
    for path, content in generated.items():
        assert path.parent == K8S / "components" / "monitoring"
        assert path.read_text(encoding="utf-8") == content, (
            f"{path.relative_to(ROOT)} is stale: run `make k8s-generate`"
        )


MONITORED = ("prod", "dev-with-components")


def test_prometheus_rule_equals_deploy_prometheus_rules() -> None:
    groups = []
    for path in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    for variant in MONITORED:
        (rule,) = objects(variant, "PrometheusRule")
        assert rule["spec"]["groups"] == groups


def test_grafana_dashboard_configmap_equals_the_dashboard() -> None:
    dashboard = ROOT / "deploy" / "grafana" / "dashboards" / "loopml.json"
    for variant in MONITORED:
        (cm,) = [
            c
            for c in objects(variant, "ConfigMap")
            if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        ]
        assert json.loads(cm["data"]["loopml.json"]) == json.loads(dashboard.read_text())


def test_servicemonitor_scrapes_metrics_on_a_service_port_as_job_loopml() -> None:
    for variant in MONITORED:
        (monitor,) = objects(variant, "ServiceMonitor")
        service = one(variant, "Service", SERVER)
        assert matches(monitor["spec"]["selector"], service["metadata"]["labels"])
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["path"] == "/metrics"
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        # The alerts select up{job="loopml"}: the job name comes from the Service's label.
        job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        rule_text = json.dumps(objects(variant, "PrometheusRule")[0]["spec"])
        assert f'job=\\"{job}\\"' in rule_text


# ---- checkov -------------------------------------------------------------------------------------


def test_checkov_passes_on_rendered_overlays(tmp_path: Path) -> None:
    """Every variant as rendered (never the patches alone): zero failed checks."""
    for variant in VARIANTS:
        (tmp_path / f"{variant}.yaml").write_text(yaml.safe_dump_all(render(variant)))
    assert checkov_kubernetes_failures(tmp_path) == []


def test_every_checkov_skip_has_a_reason() -> None:
    for variant in VARIANTS:
        for obj in render(variant):
            for key, value in obj["metadata"].get("annotations", {}).items():
                if key.startswith("checkov.io/skip"):
                    assert re.fullmatch(r"CKV2?_K8S_\d+=\S.{15,}", value), value


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

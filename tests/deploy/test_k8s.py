"""deploy/k8s: the overlays render, validate offline against the Kubernetes schemas, follow the
security and operations policy, agree with the app (probe paths, settings, shutdown timeouts) and
with deploy/prometheus and deploy/grafana (generated objects), and pass checkov."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from loopml.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
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


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl (with kustomize) is not installed: it is on the dev and CI machines")
    return path


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize deploy/k8s/<target>`` as a tuple of objects."""
    result = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(f"overlays/{overlay}") if o["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return obj["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def workloads(overlay: str) -> Iterator[dict[str, Any]]:
    return (o for o in render(f"overlays/{overlay}") if o["kind"] in {"Deployment", "CronJob"})


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    template = (
        obj["spec"]["jobTemplate"]["spec"]["template"]
        if obj["kind"] == "CronJob"
        else obj["spec"]["template"]
    )
    return template["metadata"]["labels"]  # type: ignore[no-any-return]


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


# ---- rendering and schemas -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_renders(target: str) -> None:
    kinds = {o["kind"] for o in render(target)}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "CronJob",
        "ServiceAccount",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_match_kubernetes_schemas(overlay: str, version: str) -> None:
    errors = []
    for obj in render(f"overlays/{overlay}"):
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


def test_crd_objects_are_well_formed() -> None:
    for overlay in OVERLAYS:
        for obj in render(f"overlays/{overlay}"):
            if obj["kind"] in CRD_KINDS:
                assert obj["apiVersion"] == "monitoring.coreos.com/v1"
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
                assert obj["metadata"]["namespace"]
                assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}


# ---- policy ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(overlay: str) -> None:
    for obj in workloads(overlay):
        spec = pod_spec(obj)
        where = f"{overlay} {obj['kind']}/{obj['metadata']['name']}"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec.get("serviceAccountName", "default") != "default", where
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
            assert {"/tmp", "/var/lib/loopml"} <= mounts, f"{where}: writable paths"


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
        assert spec["terminationGracePeriodSeconds"] >= pre_stop + _GRACEFUL_S + _DRAIN_TIMEOUT_S


def test_server_command_and_storage() -> None:
    for overlay in OVERLAYS:
        deployment = one(overlay, "Deployment", SERVER)
        spec = pod_spec(deployment)
        (server,) = spec["containers"]
        args = server["args"]
        assert args[0] == "serve" and args[args.index("--host") + 1] == "0.0.0.0"
        assert int(args[args.index("--port") + 1]) == server["ports"][0]["containerPort"] == 8000
        home = next(m for m in server["volumeMounts"] if m["mountPath"] == "/var/lib/loopml")
        volume = next(v for v in spec["volumes"] if v["name"] == home["name"])
        assert "emptyDir" in volume, "serving replicas are stateless: LOOPML_HOME is an emptyDir"
        assert {c["whenUnsatisfiable"] for c in spec["topologySpreadConstraints"]}
        for tsc in spec["topologySpreadConstraints"]:
            assert matches(tsc["labelSelector"], pod_labels(deployment))


def test_controller_is_a_single_writer_and_training_never_overlaps() -> None:
    for overlay in OVERLAYS:
        controller = one(overlay, "Deployment", "loopml-controller")
        assert controller["spec"]["replicas"] == 1
        assert controller["spec"]["strategy"]["type"] == "Recreate"
        assert pod_spec(controller)["containers"][0]["args"][0] == "controller"
        train = one(overlay, "CronJob", "loopml-train")
        assert train["spec"]["concurrencyPolicy"] == "Forbid"
        assert pod_spec(train)["containers"][0]["args"][0] == "train"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_come_from_real_keys_and_secrets_from_a_secret(overlay: str) -> None:
    rendered = render(f"overlays/{overlay}")
    assert not [o for o in rendered if o["kind"] == "Secret"], "no secret values in overlays"
    configmaps = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "ConfigMap"}
    for obj in workloads(overlay):
        for c in pod_spec(obj)["containers"]:
            refs = [e["configMapRef"]["name"] for e in c["envFrom"] if "configMapRef" in e]
            assert refs, "settings come from the ConfigMap"
            for name in refs:
                keys = set(configmaps[name]["data"])
                assert keys <= SETTING_VARS, f"not loopml settings: {keys - SETTING_VARS}"
                assert not keys & SECRET_VARS, "secrets belong in the Secret"
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
        policies = [
            p
            for p in objects(overlay, "NetworkPolicy")
            if matches(p["spec"]["podSelector"], labels)
        ]
        assert len(policies) == 1
        (policy,) = policies
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ingress_ports == {8000}
        egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert {53, 5432, 5000} <= egress_ports, "DNS, PostgreSQL, MLflow"


def test_every_workload_has_a_network_policy() -> None:
    for overlay in OVERLAYS:
        for obj in workloads(overlay):
            assert any(
                matches(p["spec"]["podSelector"], pod_labels(obj))
                for p in objects(overlay, "NetworkPolicy")
            ), obj["metadata"]["name"]


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


def test_prod_overlay_is_pinned_replicated_and_exposed() -> None:
    assert one("prod", "Deployment", SERVER)["spec"]["replicas"] == 3
    for obj in workloads("prod"):
        for c in pod_spec(obj)["containers"]:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+/loopml:\d+\.\d+\.\d+(@sha256:\w+)?", c["image"])
    (config,) = [c for c in objects("prod", "ConfigMap") if "LOOPML_ENV" in c.get("data", {})]
    assert config["data"]["LOOPML_ENV"] == "production"
    ingress = one("prod", "Ingress", SERVER)
    service = one("prod", "Service", SERVER)
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    paths = []
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == SERVER and backend["port"]["name"] in service_ports
            paths.append(path["path"])
    assert "/v1" in paths and "/metrics" not in paths
    for sa in objects("prod", "ServiceAccount"):
        assert {"iam.gke.io/gcp-service-account", "eks.amazonaws.com/role-arn"} <= set(
            sa["metadata"]["annotations"]
        )


# ---- monitoring: one source of truth -----------------------------------------------------------


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_up_to_date() -> None:
    for path, content in _generator().generate().items():
        assert path.read_text(encoding="utf-8") == content, (
            f"{path.relative_to(ROOT)} is stale: run `make k8s-generate`"
        )


def test_prometheus_rule_equals_deploy_prometheus_rules() -> None:
    groups = []
    for path in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    for overlay in OVERLAYS:
        (rule,) = objects(overlay, "PrometheusRule")
        assert rule["spec"]["groups"] == groups


def test_grafana_dashboard_configmap_equals_the_dashboard() -> None:
    dashboard = ROOT / "deploy" / "grafana" / "dashboards" / "loopml.json"
    for overlay in OVERLAYS:
        (cm,) = [
            c
            for c in objects(overlay, "ConfigMap")
            if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        ]
        assert json.loads(cm["data"]["loopml.json"]) == json.loads(dashboard.read_text())


def test_servicemonitor_scrapes_metrics_on_a_service_port_as_job_loopml() -> None:
    for overlay in OVERLAYS:
        (monitor,) = objects(overlay, "ServiceMonitor")
        service = one(overlay, "Service", SERVER)
        assert matches(monitor["spec"]["selector"], service["metadata"]["labels"])
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["path"] == "/metrics"
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        # The alerts select up{job="loopml"}: the job name comes from the Service's label.
        job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        rule_text = json.dumps(objects(overlay, "PrometheusRule")[0]["spec"])
        assert f'job=\\"{job}\\"' in rule_text


# ---- checkov -------------------------------------------------------------------------------------


def _checkov() -> str:
    """checkov from the Makefile's tools venv (it conflicts with loopml's dependencies)."""
    candidates = [
        os.environ.get("LOOPML_CHECKOV"),
        str(ROOT / ".venv-tools" / "bin" / "checkov"),
        shutil.which("checkov"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("checkov is missing: `make tools` installs it into .venv-tools")


def test_checkov_passes_on_rendered_overlays(tmp_path: Path) -> None:
    for overlay in OVERLAYS:
        docs = render(f"overlays/{overlay}")
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(docs))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_"))}
    result = subprocess.run(
        [
            _checkov(),
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "--compact",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    report = json.loads(result.stdout)
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert failed == []
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_checkov_skip_has_a_reason() -> None:
    for overlay in OVERLAYS:
        for obj in render(f"overlays/{overlay}"):
            for key, value in obj["metadata"].get("annotations", {}).items():
                if key.startswith("checkov.io/skip"):
                    assert re.fullmatch(r"CKV2?_K8S_\d+=\S.{15,}", value), value


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

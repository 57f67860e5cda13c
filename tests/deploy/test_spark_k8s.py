"""Where the Spark engine runs: the Dockerfile's spark target and the optional Kubernetes component
components/batch-spark (rendered on the dev overlay, validated offline, checkov clean)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_helpers import checkov_kubernetes_failures

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The dev overlay with the batch-spark component, as kubectl kustomize renders it."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with kustomize) is not installed: it is on the dev and CI machines")
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("cluster.env", "__pycache__"))
    path = tree / "overlays" / "dev" / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    kustomization["components"] = ["../../components/batch-spark"]
    path.write_text(yaml.safe_dump(kustomization))
    proc = subprocess.run(
        [kubectl, "kustomize", str(path.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _named(rendered: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in rendered if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]  # type: ignore[no-any-return]
    return obj["spec"]["template"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_batch_component_matches_kubernetes_schemas(
    rendered: list[dict[str, Any]], version: str
) -> None:
    for obj in rendered:
        if obj["metadata"]["labels"].get("app.kubernetes.io/component", "").startswith("batch"):
            kubernetes_validate.validate(obj, version, strict=True)


def test_batch_jobs_run_the_spark_image_locked_down_with_a_network_policy(
    rendered: list[dict[str, Any]],
) -> None:
    policies = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    for kind, name in (("Job", "loopml-batch-spark"), ("CronJob", "loopml-batch-nightly")):
        template = _pod(_named(rendered, kind, name))
        spec, labels = template["spec"], template["metadata"]["labels"]
        assert spec["serviceAccountName"] == "loopml-batch"
        assert spec["securityContext"]["runAsUser"] == 10001
        (container,) = spec["containers"]
        assert container["image"] == "loopml-spark:dev"
        assert container["args"][:2] == ["batch", "score"] and "--engine=spark" in container["args"]
        assert any(a.startswith("--spark-master=k8s://") for a in container["args"])
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        env = {e["name"]: e.get("value", "") for e in container["env"]}
        assert (
            "spark.kubernetes.container.image=$(SPARK_EXECUTOR_IMAGE)" in env["PYSPARK_SUBMIT_ARGS"]
        )
        assert env["SPARK_EXECUTOR_IMAGE"] == container["image"]
        selected = [
            p
            for p in policies
            if "matchLabels" in p["spec"]["podSelector"]
            if all(labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
        ]
        assert [p["metadata"]["name"] for p in selected] == ["loopml-batch-driver"]
    executors = _named(rendered, "NetworkPolicy", "loopml-batch-executors")
    assert executors["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "batch-executor"
    )
    mlflow_from = _named(rendered, "NetworkPolicy", "mlflow")["spec"]["ingress"][0]["from"]
    assert {"app.kubernetes.io/name": "loopml", "app.kubernetes.io/component": "batch"} in [
        f["podSelector"].get("matchLabels") for f in mlflow_from
    ]
    role = _named(rendered, "Role", "loopml-batch-spark-driver")
    assert "pods" in role["rules"][0]["resources"] and "create" in role["rules"][0]["verbs"]


def test_checkov_passes_on_the_batch_component(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    (tmp_path / "dev-batch.yaml").write_text(yaml.safe_dump_all(rendered))
    assert checkov_kubernetes_failures(tmp_path) == []
    for obj in rendered:
        for key, value in obj["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                assert re.fullmatch(r"CKV2?_K8S_\d+=\S.{15,}", value), value


def test_spark_image_target_is_built_on_the_runtime_with_the_extra_pin() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stage = dockerfile.split("FROM runtime AS spark", 1)[1]
    assert re.findall(r"^USER (\S+)$", stage, re.M)[-1] == "10001:10001"
    pin = re.search(r"^ARG PYSPARK_VERSION=(\S+)$", stage, re.M)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pin and extras["optional-dependencies"]["spark"] == [f"pyspark=={pin.group(1)}"]
    assert "openjdk-17-jre-headless" in stage
    # The spark stage is the Dockerfile's last: every other build names the runtime target.
    makefile = (ROOT / "Makefile").read_text()
    assert "--target runtime -t $(IMAGE):$(VERSION) ." in makefile
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    builds = [s["build"] for s in compose["services"].values() if "build" in s]
    assert builds and all(b.get("target") == "runtime" for b in builds)
    for workflow in ("ci.yml", "release.yml"):
        text = (ROOT / ".github" / "workflows" / workflow).read_text()
        assert text.count("docker/build-push-action") == text.count("target: runtime"), workflow

"""Offline checks of the Terraform under deploy/terraform (no provider download is possible here).

Format (`terraform fmt`), parsing (python-hcl2), variables (typed, described, validated, used,
declared), module calls, provider pins, example files, no literal secrets, sensitive outputs,
database URLs that name the psycopg driver, the contract with deploy/k8s (cluster.env from the
kustomize_env output; identities, namespace, ServiceAccounts and NetworkPolicies cross-checked
against the rendered prod overlay), the add-ons NetworkPolicies and the HPA need, the deploy
identity deploy.yml uses, and checkov with every skip justified and needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from deploy_helpers import CLUSTER_ENV_KEYS, SAMPLE_CLUSTER_ENV

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "deploy" / "terraform"
ROOTS = ("gke", "eks")
STACKS = sorted(
    str(d.relative_to(TF_DIR)) for d in TF_DIR.rglob("*") if d.is_dir() and any(d.glob("*.tf"))
)
VAR_REF = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")
MODULE_META_ARGS = {"source", "version", "providers", "depends_on", "count", "for_each"}

if not hasattr(hcl2, "SerializationOptions"):  # pragma: no cover - environment problem
    pytest.fail(
        "`import hcl2` is not python-hcl2 >= 7 but checkov's fork bc-python-hcl2 (both install a "
        "package named hcl2): keep checkov in .venv-tools (`make tools`), not in .venv",
        pytrace=False,
    )


def _unquote(value: Any) -> Any:
    """python-hcl2 8 keeps HCL quotes on strings and block labels: drop them, and its markers."""
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@cache
def _parse(path: Path) -> dict[str, Any]:
    options = hcl2.SerializationOptions(with_comments=False)
    with path.open() as f:
        parsed: dict[str, Any] = _unquote(hcl2.load(f, serialization_options=options))
    return parsed


def _blocks(stack: str, kind: str) -> dict[str, Any]:
    """Labelled blocks of one kind (variable, output, module...) across a stack's .tf files."""
    found: dict[str, Any] = {}
    for path in sorted((TF_DIR / stack).glob("*.tf")):
        for block in _parse(path).get(kind, []):
            found.update(block)
    return found


def _typed_blocks(stack: str, kind: str) -> dict[str, Any]:
    """Resources or data sources as {"type.name": body}."""
    # Not via _blocks: two resources of one type are two entries with the same type key.
    return {
        f"{rtype}.{name}": body
        for path in sorted((TF_DIR / stack).glob("*.tf"))
        for block in _parse(path).get(kind, [])
        for rtype, named in block.items()
        for name, body in named.items()
    }


def _terraform_blocks(stack: str) -> list[dict[str, Any]]:
    return [
        block
        for path in sorted((TF_DIR / stack).glob("*.tf"))
        for block in _parse(path).get("terraform", [])
    ]


def _required_providers(stack: str) -> dict[str, Any]:
    providers: dict[str, Any] = {}
    for block in _terraform_blocks(stack):
        for entry in block.get("required_providers", []):
            providers.update(entry)
    return providers


def _text(obj: Any) -> str:
    return json.dumps(obj)


# --- format and parsing ------------------------------------------------------------------------


def test_layout() -> None:
    assert set(ROOTS) <= set(STACKS), STACKS
    assert any(s.startswith("modules/") for s in STACKS), STACKS
    assert (TF_DIR / "README.md").is_file()


def test_terraform_fmt() -> None:
    terraform = shutil.which("terraform")
    assert terraform, "the terraform binary is needed (it is on the dev and CI machines)"
    proc = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TF_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"terraform fmt -recursive deploy/terraform:\n{proc.stdout}"


HCL_FILES = sorted(
    p
    for pattern in ("*.tf", "*.tf.example", "*.tfvars.example", "*.hcl.example")
    for p in TF_DIR.rglob(pattern)
)


@pytest.mark.parametrize("path", HCL_FILES, ids=lambda p: str(p.relative_to(TF_DIR)))
def test_hcl_parses(path: Path) -> None:
    assert _parse(path), f"{path} parsed to nothing"


# --- variables and modules ---------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_variables_are_typed_and_described(stack: str) -> None:
    variables = _blocks(stack, "variable")
    assert variables or stack.startswith("modules/"), f"{stack} declares no variable"
    for name, body in variables.items():
        assert body.get("type"), f"{stack}: variable {name} has no type"
        assert str(body.get("description", "")).strip(), f"{stack}: variable {name}: description"


@pytest.mark.parametrize("stack", STACKS)
def test_variables_are_used_and_declared(stack: str) -> None:
    declared = set(_blocks(stack, "variable"))
    everything: list[Any] = []
    validations: list[Any] = []
    for path in sorted((TF_DIR / stack).glob("*.tf")):
        for kind, blocks in _parse(path).items():
            (validations if kind == "variable" else everything).append(blocks)
    used = set(VAR_REF.findall(_text(everything)))
    referenced = used | set(VAR_REF.findall(_text(validations)))
    assert not referenced - declared, f"{stack}: undeclared variables {referenced - declared}"
    assert not declared - used, f"{stack}: variables never used {declared - used}"


# Variables whose values are easy to get wrong get a validation block (formats, ranges, lists).
VALIDATED = {
    "gke": {
        "project_id",
        "region",
        "environment",
        "name",
        "node_machine_type",
        "node_min_count",
        "node_max_count",
        "db_tier",
        "db_version",
        "db_ssl_mode",
        "release_channel",
        "k8s_namespace",
        "k8s_service_accounts",
        "master_authorized_networks",
        "host",
        "github_repository",
        "github_deploy_environment",
    },
    "eks": {
        "region",
        "environment",
        "name",
        "vpc_cidr",
        "az_count",
        "kubernetes_version",
        "node_instance_types",
        "node_min_size",
        "node_desired_size",
        "node_max_size",
        "db_instance_class",
        "db_engine_version",
        "db_backup_retention_days",
        "log_retention_days",
        "k8s_namespace",
        "k8s_service_accounts",
        "endpoint_public_access_cidrs",
        "host",
        "github_repository",
        "github_deploy_environment",
        "github_oidc_provider_arn",
        "deploy_runner_cidrs",
    },
}


@pytest.mark.parametrize("stack", ROOTS)
def test_variables_are_validated(stack: str) -> None:
    variables = _blocks(stack, "variable")
    missing = {n for n in VALIDATED[stack] if not variables.get(n, {}).get("validation")}
    assert not missing, f"{stack}: no validation block on {sorted(missing)}"


def _module_calls() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (stack, name, body) for stack in STACKS for name, body in _blocks(stack, "module").items()
    ]


def test_module_calls_exist() -> None:
    assert {stack for stack, _, _ in _module_calls()} >= set(ROOTS)


@pytest.mark.parametrize(
    ("stack", "name", "body"), _module_calls(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_module_call_passes_declared_variables(stack: str, name: str, body: dict[str, Any]) -> None:
    source = str(body["source"])
    assert source.startswith("../"), f"{stack}: module {name}: only local modules ({source})"
    target = (TF_DIR / stack / source).resolve().relative_to(TF_DIR)
    variables = _blocks(str(target), "variable")
    passed = set(body) - MODULE_META_ARGS
    required = {n for n, v in variables.items() if "default" not in v}
    assert not passed - set(variables), f"{stack}: module {name}: unknown {passed - set(variables)}"
    assert not required - passed, f"{stack}: module {name}: missing {required - passed}"


# --- versions, providers, examples -------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_versions_are_pinned(stack: str) -> None:
    blocks = _terraform_blocks(stack)
    assert any(b.get("required_version") for b in blocks), f"{stack}: no required_version"
    providers = _required_providers(stack)
    assert providers, f"{stack}: no required_providers"
    for name, spec in providers.items():
        assert str(spec.get("source", "")).startswith("hashicorp/"), f"{stack}: {name} source"
        assert "~>" in str(spec.get("version", "")), f"{stack}: {name} not pinned with ~>"
    used = {
        key.split(".")[0].split("_")[0]
        for kind in ("resource", "data")
        for key in _typed_blocks(stack, kind)
    }
    assert not used - set(providers), f"{stack}: providers used but not required: {used}"


def test_roots_pin_the_same_shared_providers() -> None:
    gke, eks = _required_providers("gke"), _required_providers("eks")
    for name in set(gke) & set(eks):
        assert gke[name]["version"] == eks[name]["version"], name


@pytest.mark.parametrize("stack", ROOTS)
def test_root_examples(stack: str) -> None:
    folder = TF_DIR / stack
    for name in ("terraform.tfvars.example", "backend.tf.example", "backend.hcl.example"):
        assert (folder / name).is_file(), f"{stack}/{name} is missing"
    backend = _parse(folder / "backend.tf.example")["terraform"][0]["backend"]
    assert backend, f"{stack}: backend.tf.example has no backend block"
    variables = _blocks(stack, "variable")
    example = _parse(folder / "terraform.tfvars.example")
    assert not set(example) - set(variables), f"{stack}: unknown {set(example) - set(variables)}"
    required = {n for n, v in variables.items() if "default" not in v}
    assert not required - set(example), f"{stack}: example lacks {required - set(example)}"


# --- secrets ------------------------------------------------------------------------------------

SECRET_PATTERNS = {
    "literal credential": re.compile(
        r"""(?im)^\s*"?[\w-]*(password|passwd|secret|token|access_key|secret_key|api_key)"""
        r""""?\s*[=:]\s*"(?!\$\{)[^"]+"""
    ),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GCP service-account key": re.compile(r"\"private_key_id\"|\"type\":\s*\"service_account\""),
}


def test_no_hard_coded_credentials() -> None:
    files = [p for p in TF_DIR.rglob("*") if p.is_file() and ".terraform" not in p.parts]
    assert files
    problems = [
        f"{path.relative_to(ROOT)}: {what}: {m.group(0).strip()}"
        for path in files
        for what, pattern in SECRET_PATTERNS.items()
        for m in pattern.finditer(path.read_text())
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stack", STACKS)
def test_providers_take_no_credentials(stack: str) -> None:
    for path in sorted((TF_DIR / stack).glob("*.tf")):
        for provider in _parse(path).get("provider", []):
            for name, body in provider.items():
                bad = set(body) & {
                    "access_key",
                    "secret_key",
                    "token",
                    "credentials",
                    "access_token",
                    "profile",
                }
                assert not bad, f"{stack}: provider {name} sets {bad}"


@pytest.mark.parametrize("stack", STACKS)
def test_secret_outputs_are_sensitive(stack: str) -> None:
    secret_sources = re.compile(
        r"random_password|database_urls|secret_data|secret_string|\.password"
    )
    for name, body in _blocks(stack, "output").items():
        if secret_sources.search(_text(body.get("value"))):
            assert body.get("sensitive") is True, f"{stack}: output {name} must be sensitive"


@pytest.mark.parametrize("stack", ROOTS)
def test_passwords_are_generated_and_stored_in_a_secret_manager(stack: str) -> None:
    resources = _typed_blocks(stack, "resource")
    assert any(k.startswith("random_password.") for k in resources), stack
    store = {
        "gke": "google_secret_manager_secret_version.",
        "eks": "aws_secretsmanager_secret_version.",
    }
    versions = [v for k, v in resources.items() if k.startswith(store[stack])]
    assert versions and "random_password" in _text(versions) + _text(_blocks(stack, "locals"))


# --- the contract with deploy/k8s --------------------------------------------------------------


@pytest.mark.parametrize("stack", ROOTS)
def test_kubernetes_names_and_outputs(stack: str) -> None:
    variables = _blocks(stack, "variable")
    assert variables["k8s_namespace"]["default"] == "loopml"
    accounts = variables["k8s_service_accounts"]["default"]
    assert accounts["server"] == "loopml-server"
    assert accounts["controller"] == "loopml-controller"
    outputs = _blocks(stack, "output")
    for name in (
        "registry_url",
        "image_repository",
        "artifacts_bucket",
        "service_account_annotations",
        "mlflow_artifacts_destination",
        "database_urls",
    ):
        assert name in outputs, f"{stack}: output {name}"
    annotation = {"gke": "iam.gke.io/gcp-service-account", "eks": "eks.amazonaws.com/role-arn"}
    module_dir = {"gke": "modules/gke-workload-identity", "eks": "modules/eks-irsa-role"}
    assert annotation[stack] in _text(_blocks(module_dir[stack], "output"))


# --- database URLs (seam 3) ---------------------------------------------------------------------

POSTGRES_URL = re.compile(r"postgres(?:ql)?(?:\+\w+)?://")


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in _strings(k) + _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return [obj] if isinstance(obj, str) else []


@pytest.mark.parametrize("stack", ROOTS)
def test_database_urls_name_the_psycopg_driver(stack: str) -> None:
    """The image has psycopg 3 only: a bare postgresql:// URL makes SQLAlchemy load psycopg2."""
    values = [s for path in sorted((TF_DIR / stack).glob("*.tf")) for s in _strings(_parse(path))]
    schemes = [m.group(0) for s in values for m in POSTGRES_URL.finditer(s)]
    assert schemes, f"{stack}: no database URL found"
    assert set(schemes) == {"postgresql+psycopg://"}, f"{stack}: {sorted(set(schemes))}"
    # Every place a URL leaves Terraform (output, secret) takes it from that one local.
    assert _blocks(stack, "output")["database_urls"]["value"] == "${local.database_urls}"
    secret = {
        "gke": ("google_secret_manager_secret_version.database_url", "secret_data"),
        "eks": ("aws_secretsmanager_secret_version.database", "secret_string"),
    }[stack]
    assert "local.database_urls[each.key]" in str(
        _typed_blocks(stack, "resource")[secret[0]][secret[1]]
    )


# --- cluster.env and the cross-check with deploy/k8s (seam 4) ------------------------------------

K8S_DIR = ROOT / "deploy" / "k8s"
PROD = K8S_DIR / "overlays" / "prod"
WORKLOADS = {"server": "loopml-server", "controller": "loopml-controller", "mlflow": "mlflow"}
IDENTITY_KEYS = {"server": "SERVER_IDENTITY", "controller": "CONTROLLER_IDENTITY"} | {
    "mlflow": "MLFLOW_IDENTITY"
}
ANNOTATION = {"gke": "iam.gke.io/gcp-service-account", "eks": "eks.amazonaws.com/role-arn"}


def _kustomize_env(stack: str) -> list[tuple[str, str]]:
    """(key, HCL value) lines of the kustomize_env output's heredoc."""
    assert _blocks(stack, "output")["kustomize_env"]["value"] == "${local.kustomize_env}"
    heredoc = str(_blocks(stack, "locals")["kustomize_env"])
    first, _, rest = heredoc.partition("\n")
    assert first == "<<-EOT", f"{stack}: kustomize_env is not a <<-EOT heredoc"
    body = textwrap.dedent(rest.rsplit("\n", 1)[0])
    return [tuple(line.split("=", 1)) for line in body.splitlines()]  # type: ignore[misc]


def _variable_default(stack: str, reference: str) -> Any:
    """The default of `${var.a}` or `${var.a.b}`."""
    match = re.fullmatch(r"\$\{var\.(\w+)(?:\.(\w+))?\}", reference)
    assert match, reference
    default = _blocks(stack, "variable")[match.group(1)]["default"]
    return default[match.group(2)] if match.group(2) else default


def _bound_identities(stack: str) -> tuple[str, dict[str, str]]:
    """Namespace and KSA per workload as the workload-identity / IRSA module calls bind them."""
    module = {"gke": "workload_identity", "eks": "irsa"}[stack]
    sa_field = {"gke": ("namespace", "ksa"), "eks": ("namespace", "service_account")}[stack]
    call = _blocks(stack, "module")[module]
    assert call["for_each"] == "${local.workloads}"
    workloads = _blocks(stack, "locals")["workloads"]
    namespace = _variable_default(stack, call[sa_field[0]])
    ksa = {name: _variable_default(stack, w[sa_field[1]]) for name, w in workloads.items()}
    return namespace, ksa


@pytest.mark.parametrize("stack", ROOTS)
def test_kustomize_env_is_the_cluster_env_contract(stack: str) -> None:
    lines = dict(_kustomize_env(stack))
    assert list(lines) == list(CLUSTER_ENV_KEYS), f"{stack}: keys and order of cluster.env"
    assert lines["CLOUD"] == stack
    module = {"gke": 'module.workload_identity["{}"].email', "eks": 'module.irsa["{}"].role_arn'}
    for workload, key in IDENTITY_KEYS.items():
        assert lines[key] == "${" + module[stack].format(workload) + "}", (stack, key)
    assert lines["HOST"] == "${var.host}"
    image = {"gke": "docker.pkg.dev", "eks": "aws_ecr_repository.loopml.repository_url"}
    assert image[stack] in lines["IMAGE"] and lines["IMAGE"].endswith(("/loopml", "url}"))
    scheme = {"gke": "gs://", "eks": "s3://"}[stack]
    outputs = _blocks(stack, "output")
    assert lines["MLFLOW_ARTIFACTS_DESTINATION"] == outputs["mlflow_artifacts_destination"]["value"]
    assert lines["MLFLOW_ARTIFACTS_DESTINATION"].startswith(scheme)
    assert not re.search(r"password|database_url|secret", _text(lines), re.I), "no secret in it"


def test_kustomize_env_keys_are_those_of_cluster_env_example() -> None:
    example = PROD / "cluster.env.example"
    assert example.is_file(), f"{example.relative_to(ROOT)} is missing (deploy/k8s's contract)"
    keys = [
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for stack in ROOTS:
        assert [k for k, _ in _kustomize_env(stack)] == keys, stack


def _render_prod(tmp_path: Path, cluster_env: str) -> list[dict[str, Any]]:
    """kubectl kustomize of the prod overlay with this cluster.env (in a copy of deploy/k8s)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize built in) is needed: it is on the dev and CI machines"
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, k8s, ignore=shutil.ignore_patterns("cluster.env"))
    (k8s / "overlays" / "prod" / "cluster.env").write_text(cluster_env)
    cloud = re.search(r"^CLOUD=(\w+)$", cluster_env, re.M)
    assert cloud, cluster_env
    # As docs/deploy.md says (and deploy.yml checks): the overlay lists CLOUD's component.
    kustomization = k8s / "overlays" / "prod" / "kustomization.yaml"
    text = kustomization.read_text()
    assert re.search(r"^  - \.\./\.\./components/(gke|eks)$", text, re.M), "no cloud component"
    kustomization.write_text(
        re.sub(r"^(  - \.\./\.\./components/)(gke|eks)$", rf"\g<1>{cloud[1]}", text, flags=re.M)
    )
    proc = subprocess.run(
        [kubectl, "kustomize", str(k8s / "overlays" / "prod")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_admits(
    peer: dict[str, Any],
    policy_ns: str,
    pod: dict[str, str],
    pod_ns: str,
    ns_labels: dict[str, str],
) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif pod_ns != policy_ns:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], pod)


def _allows(
    policies: list[dict[str, Any]],
    src: tuple[dict[str, str], str],
    dst: tuple[dict[str, str], str],
    port: int,
) -> bool:
    """Would the NetworkPolicies let src's pod open a connection to dst's pod on this port?"""

    def direction(
        pod: tuple[dict[str, str], str], other: tuple[dict[str, str], str], kind: str
    ) -> bool:
        rules_key, peers_key = {"Ingress": ("ingress", "from"), "Egress": ("egress", "to")}[kind]
        selecting = [
            p
            for p in policies
            if p["metadata"]["namespace"] == pod[1]
            and _selects(p["spec"].get("podSelector"), pod[0])
            and kind in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not selecting:
            return True  # not isolated in this direction
        ns_labels = {"kubernetes.io/metadata.name": other[1]}
        for p in selecting:
            for rule in p["spec"].get(rules_key) or []:
                ports = rule.get("ports")
                if ports and not any(pt.get("port") in (port, None) for pt in ports):
                    continue
                peers = rule.get(peers_key)
                if not peers or any(
                    _peer_admits(peer, pod[1], other[0], other[1], ns_labels) for peer in peers
                ):
                    return True
        return False

    return direction(dst, src, "Ingress") and direction(src, dst, "Egress")


@pytest.mark.parametrize("stack", ROOTS)
def test_terraform_identities_match_the_rendered_prod_overlay(stack: str, tmp_path: Path) -> None:
    """Seam 4: what Terraform binds is what the overlay runs, and the policies let it talk."""
    namespace, ksa = _bound_identities(stack)
    assert namespace == "loopml"
    assert ksa == {n: f"loopml-{n}" for n in ("server", "controller", "mlflow")}
    values = SAMPLE_CLUSTER_ENV[stack]
    docs = _render_prod(tmp_path, "".join(f"{k}={values[k]}\n" for k, _ in _kustomize_env(stack)))
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    for workload, sa_name in ksa.items():
        sa = by_kind.get("ServiceAccount", {}).get(sa_name)
        assert sa, f"ServiceAccount {sa_name} is not in the prod overlay"
        assert sa["metadata"]["namespace"] == namespace, sa_name
        identity = values[IDENTITY_KEYS[workload]]
        annotations = sa["metadata"].get("annotations") or {}
        assert annotations.get(ANNOTATION[stack]) == identity, (sa_name, annotations)
        deployment = by_kind["Deployment"][WORKLOADS[workload]]
        assert deployment["metadata"]["namespace"] == namespace
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa_name
    pods = {
        w: (by_kind["Deployment"][d]["spec"]["template"]["metadata"]["labels"], namespace)
        for w, d in WORKLOADS.items()
    }
    policies = list(by_kind.get("NetworkPolicy", {}).values())
    assert policies, "the prod overlay has no NetworkPolicy"
    for client in ("server", "controller"):
        assert _allows(policies, pods[client], pods["mlflow"], 5000), f"{client} -> mlflow:5000"
    # No peer looks for one of these pods in another namespace (MLflow once lived in `mlflow`).
    for policy in policies:
        assert policy["metadata"]["namespace"] == namespace, policy["metadata"]["name"]
        for rule in (policy["spec"].get("ingress") or []) + (policy["spec"].get("egress") or []):
            for peer in rule.get("from", []) + rule.get("to", []):
                named = (peer.get("namespaceSelector") or {}).get("matchLabels", {})
                other = named.get("kubernetes.io/metadata.name", namespace)
                if other != namespace and "podSelector" in peer:
                    assert not any(_selects(peer["podSelector"], lb) for lb, _ in pods.values()), (
                        f"{policy['metadata']['name']} looks for loopml's pods in namespace {other}"
                    )
    assert "Namespace" not in by_kind, "the deploy identity cannot create the Namespace (seam 5)"


# --- add-ons the manifests need (seam 9) ---------------------------------------------------------


def test_eks_addons_enforce_network_policies_and_serve_metrics() -> None:
    resources = _typed_blocks("eks", "resource")
    addons = _blocks("eks", "locals")
    networking = addons["networking_addons"]
    workloads = addons["workload_addons"]
    assert resources["aws_eks_addon.networking"]["for_each"] == "${local.networking_addons}"
    assert resources["aws_eks_addon.workloads"]["for_each"] == "${local.workload_addons}"
    assert set(networking) == {"vpc-cni", "kube-proxy"}
    assert re.fullmatch(
        r'\$\{jsonencode\(\{\s*"?enableNetworkPolicy"?\s*[=:]\s*"true"\s*\}\)\}',
        networking["vpc-cni"],
    ), networking["vpc-cni"]
    assert set(re.findall(r'"([\w-]+)"', workloads)) == {"coredns", "metrics-server"}
    # Pods need the CNI before the nodes take them; CoreDNS and metrics-server need nodes.
    assert "aws_eks_addon.networking" in _text(
        resources["aws_eks_node_group.default"]["depends_on"]
    )
    assert "aws_eks_node_group.default" in _text(resources["aws_eks_addon.workloads"]["depends_on"])


def test_gke_enforces_network_policies_and_leaves_prometheus_to_the_operator() -> None:
    cluster = _typed_blocks("gke", "resource")["google_container_cluster.this"]
    assert cluster["datapath_provider"] == "ADVANCED_DATAPATH"  # Dataplane V2 enforces them
    (monitoring,) = cluster["monitoring_config"]
    assert monitoring["managed_prometheus"] == [{"enabled": False}]
    readme = (TF_DIR / "README.md").read_text()
    assert "Prometheus Operator" in readme and "Managed Prometheus" in readme


# --- the deploy identity of deploy.yml (seam 5) ---------------------------------------------------

WORKFLOWS = ROOT / ".github" / "workflows"


def _deploy_workflow() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text())
    return doc


@pytest.mark.parametrize("stack", ROOTS)
def test_deploy_identity_trusts_only_the_production_deploy_job(stack: str) -> None:
    variables = _blocks(stack, "variable")
    production = _deploy_workflow()["jobs"]["production"]["environment"]["name"]
    assert variables["github_deploy_environment"]["default"] == production
    subject = "repo:${var.github_repository}:environment:${var.github_deploy_environment}"
    resources = _typed_blocks(stack, "resource")
    if stack == "eks":
        (trust,) = _typed_blocks("eks", "data")["aws_iam_policy_document.deploy_trust"]["statement"]
        conditions = {c["variable"]: c["values"] for c in trust["condition"]}
        assert conditions == {
            "token.actions.githubusercontent.com:aud": ["sts.amazonaws.com"],
            "token.actions.githubusercontent.com:sub": [subject],
        }
        assert trust["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    else:
        provider = resources["google_iam_workload_identity_pool_provider.github"]
        assert provider["oidc"][0]["issuer_uri"] == "https://token.actions.githubusercontent.com"
        assert provider["attribute_condition"] == f"assertion.sub == '{subject}'"
        binding = resources["google_service_account_iam_member.deploy_github"]
        assert binding["role"] == "roles/iam.workloadIdentityUser"
        assert binding["member"].endswith(f"/subject/{subject}")


@pytest.mark.parametrize("stack", ROOTS)
def test_deploy_identity_can_do_what_deploy_yml_does(stack: str) -> None:
    """Get credentials, copy the release into the registry, edit the one namespace; nothing more."""
    resources = _typed_blocks(stack, "resource")
    if stack == "eks":
        statements = _typed_blocks("eks", "data")["aws_iam_policy_document.deploy"]["statement"]
        actions = {a for s in statements for a in s["actions"]}
        assert {"eks:DescribeCluster", "ecr:GetAuthorizationToken", "ecr:PutImage"} <= actions
        assert not {a for a in actions if a.endswith("*")}
        association = resources["aws_eks_access_policy_association.deploy"]
        assert association["policy_arn"].endswith(":cluster-access-policy/AmazonEKSEditPolicy")
        assert association["access_scope"] == [
            {"type": "namespace", "namespaces": ["${var.k8s_namespace}"]}
        ]
        assert resources["aws_eks_access_entry.deploy"]["type"] == "STANDARD"
    else:
        roles = {
            resources["google_project_iam_member.deploy_cluster_viewer"]["role"],
            resources["google_artifact_registry_repository_iam_member.deploy_push"]["role"],
        }
        assert roles == {"roles/container.clusterViewer", "roles/artifactregistry.writer"}
        readme = (ROOT / "docs" / "deploy.md").read_text()
        assert "create rolebinding" in readme and "--clusterrole=edit" in readme
    # Terraform creates nothing inside the cluster (an admin creates the Namespace once).
    assert not {p for p in _required_providers(stack) if p in ("kubernetes", "helm", "kubectl")}


@pytest.mark.parametrize("stack", ROOTS)
def test_github_environment_variables_are_what_deploy_yml_reads(stack: str) -> None:
    text = (WORKFLOWS / "deploy.yml").read_text()
    read = set(re.findall(r"\bvars\.(\w+)", text))
    optional = {"LOOPML_DEPLOY_RUNS_ON", "LOOPML_NAMESPACE"}  # defaults in deploy.yml
    outputs = {s: set(_blocks(s, "output")["github_environment_variables"]["value"]) for s in ROOTS}
    assert read - optional == outputs["gke"] | outputs["eks"], "deploy.yml vs Terraform"
    value = _blocks(stack, "output")["github_environment_variables"]["value"]
    assert value["LOOPML_CLUSTER_ENV"] == "${local.kustomize_env}"
    assert value["LOOPML_CLOUD"] == stack


# --- checkov ------------------------------------------------------------------------------------


def _checkov() -> str:
    candidates = [os.environ.get("LOOPML_CHECKOV"), str(ROOT / ".venv-tools" / "bin" / "checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("checkov is missing: `make tools` installs it into .venv-tools", pytrace=False)


def _start_checkov(directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            _checkov(),
            "-d",
            str(directory),
            "--framework",
            "terraform",
            "--output",
            "json",
            "--skip-download",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # The tools venv is self-contained: nothing of the test run's Python path leaks into it.
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        | {"LOG_LEVEL": "WARNING"},
    )


def _report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = proc.communicate(timeout=300)
    assert stdout.strip(), f"checkov printed nothing:\n{stderr[-2000:]}"
    report = json.loads(stdout)
    if isinstance(report, list):  # one entry per framework
        (report,) = [r for r in report if r.get("check_type") == "terraform"]
    return report


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], ...]:
    """checkov on deploy/terraform, and on a copy without its skip comments (run in parallel)."""
    bare = tmp_path_factory.mktemp("terraform-without-skips") / "terraform"
    shutil.copytree(TF_DIR, bare, ignore=shutil.ignore_patterns(".terraform"))
    for path in bare.rglob("*.tf"):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if not SKIP_COMMENT.search(line)))
    real, without_skips = _start_checkov(TF_DIR), _start_checkov(bare)
    return _report(real), _report(without_skips)


def _ids(checks: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(c["check_id"], c["resource"], c["file_path"]) for c in checks}


def test_checkov_has_no_failed_check(checkov_reports: tuple[dict[str, Any], ...]) -> None:
    report, _ = checkov_reports
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert report["summary"].get("parsing_errors", 0) == 0
    assert report["summary"].get("passed", 0) > 100


def test_every_checkov_skip_has_a_reason() -> None:
    skips = [
        (path, m) for path in TF_DIR.rglob("*.tf") for m in SKIP_COMMENT.finditer(path.read_text())
    ]
    assert skips
    for path, m in skips:
        where = f"{path.relative_to(TF_DIR)}: {m.group(0)}"
        assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", m.group(1)), where
        assert len((m.group(2) or "").strip()) >= 30, f"{where}: write down why it is skipped"


def test_every_checkov_skip_is_needed(checkov_reports: tuple[dict[str, Any], ...]) -> None:
    report, without_skips = checkov_reports
    skipped = _ids(report["results"]["skipped_checks"])
    would_fail = _ids(without_skips["results"]["failed_checks"])
    reasons = [
        c["check_result"].get("suppress_comment") for c in report["results"]["skipped_checks"]
    ]
    assert all(reasons), "checkov saw a skip without a reason"
    assert skipped == would_fail, (
        f"skips no check needs: {sorted(skipped - would_fail)}; "
        f"failures without a skip: {sorted(would_fail - skipped)}"
    )

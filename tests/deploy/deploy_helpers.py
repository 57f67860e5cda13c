"""Shared helpers of the deployment tests (compose stack, workflows)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The keys of deploy/k8s/overlays/prod/cluster.env, in order: the contract between Terraform's
# `kustomize_env` output and the prod overlay's replacements.
CLUSTER_ENV_KEYS = (
    "CLOUD",
    "IMAGE",
    "HOST",
    "SERVER_IDENTITY",
    "CONTROLLER_IDENTITY",
    "MLFLOW_IDENTITY",
    "MLFLOW_ARTIFACTS_DESTINATION",
)
# A cluster.env per cloud as Terraform's kustomize_env would write it after an apply (made-up,
# well-formed values).
SAMPLE_CLUSTER_ENV = {
    "gke": {
        "CLOUD": "gke",
        "IMAGE": "europe-west1-docker.pkg.dev/my-project/loopml-prod/loopml",
        "HOST": "loopml.example.com",
        "SERVER_IDENTITY": "loopml-prod-server@my-project.iam.gserviceaccount.com",
        "CONTROLLER_IDENTITY": "loopml-prod-controller@my-project.iam.gserviceaccount.com",
        "MLFLOW_IDENTITY": "loopml-prod-mlflow@my-project.iam.gserviceaccount.com",
        "MLFLOW_ARTIFACTS_DESTINATION": "gs://loopml-prod-artifacts/mlflow",
    },
    "eks": {
        "CLOUD": "eks",
        "IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/loopml-prod/loopml",
        "HOST": "loopml.example.com",
        "SERVER_IDENTITY": "arn:aws:iam::123456789012:role/loopml-prod-server",
        "CONTROLLER_IDENTITY": "arn:aws:iam::123456789012:role/loopml-prod-controller",
        "MLFLOW_IDENTITY": "arn:aws:iam::123456789012:role/loopml-prod-mlflow",
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://loopml-prod-artifacts/mlflow",
    },
}


def need_binary(name: str, package: str) -> str:
    """The path of ``name`` (also looked up beside the running Python, for venv-installed tools);
    fail, never skip, when it is missing: ``make system-deps`` / ``make install`` install it."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is not installed: it comes with {package} (make system-deps)")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment for tools under test: no ``LOOPML_*`` or secret of the caller."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **extra}


def run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@cache
def cli_group() -> object:
    """loopml's Typer app as a click group (for parsing command lines without running them)."""
    import typer

    from loopml.cli import app

    return typer.main.get_command(app)


def check_loopml_args(args: list[str]) -> None:
    """Parse ``loopml ARGS`` with the real CLI, without running it: unknown commands or options
    raise a (click) ``UsageError``."""
    command: Any = cli_group()
    rest = list(args)
    while hasattr(command, "commands"):  # descend through groups (`loopml rollout start ...`)
        assert rest, f"no loopml command in {args}"
        name = rest.pop(0)
        assert name in command.commands, f"unknown loopml command {name!r} in {args}"
        command = command.commands[name]
    with command.make_context(name, rest):
        pass


@cache
def app_paths() -> frozenset[str]:
    """Every HTTP path of the serving app (from its OpenAPI schema; nothing is started)."""
    import tempfile

    from loopml.config import Settings
    from loopml.serving.app import create_app

    with tempfile.TemporaryDirectory() as home:
        app = create_app(Settings(home=Path(home)))
        paths = set(app.openapi()["paths"])
    paths |= {getattr(r, "path", "") for r in app.routes} - {""}
    return frozenset(paths)


def checkov_kubernetes_failures(folder: Path) -> list[str]:
    """checkov (from the Makefile's tools venv: it conflicts with loopml's dependencies) on the
    Kubernetes manifests in ``folder``: its failed checks as ``CHECK_ID resource``."""
    found = [
        os.environ.get("LOOPML_CHECKOV"),
        str(ROOT / ".venv-tools" / "bin" / "checkov"),
        shutil.which("checkov"),
    ]
    checkov = next((c for c in found if c and Path(c).exists()), None)
    if checkov is None:
        pytest.fail("checkov is missing: `make tools` installs it into .venv-tools")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BC_", "PRISMA_")) and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    args = ["--framework", "kubernetes", "--skip-download", "--quiet", "--compact", "-o", "json"]
    result = subprocess.run(
        [checkov, "-d", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no report: {result.stderr[-3000:]}")
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    if not failed and result.returncode != 0:
        pytest.fail(f"checkov exited {result.returncode}: {result.stderr[-3000:]}")
    return failed

"""Pinned dependencies (ML Test Score, Infrastructure 1) and notice of their changes (Monitoring
1): the lock covers every runtime dependency within pyproject's ranges, the image, CI and the dev
environment install from it, and a weekly workflow plus Dependabot watch it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import yaml
from deploy_helpers import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = ROOT / "requirements.lock.txt"


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r)
        for r in project["dependencies"]
        + project["optional-dependencies"]["s3"]
        + project["optional-dependencies"]["gcs"]
    ]


def pins() -> dict[str, Version]:
    out = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==(\S+)", line)
        if match:
            out[canonicalize_name(match.group(1))] = Version(match.group(3))
    return out


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    locked = pins()
    assert len(locked) > 100  # the whole tree, not only the direct dependencies
    lines = LOCK.read_text().splitlines()
    assert all("==" in line for line in lines if line and not line.startswith((" ", "#")))
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in {LOCK.name}: run make lock"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"{LOCK.name} pins {req.name}=={locked[name]}, pyproject.toml wants {req.specifier}"
        )
    # Extras of dependencies are resolved too (uvicorn[standard] brings uvloop, psycopg[binary]).
    assert {"uvloop", "httptools", "psycopg-binary", "boto3", "google-cloud-storage"} <= set(locked)
    # Only runtime + s3 + gcs: the dev tools and optional heavy extras stay out of the image.
    assert not {"pytest", "mypy", "ruff", "torch", "transformers"} & set(locked)


def test_the_tests_run_on_the_locked_versions() -> None:
    locked = pins()
    for req in runtime_requirements():
        try:
            installed = Version(metadata.version(req.name))
        except metadata.PackageNotFoundError:
            continue  # the s3 and gcs extras are not in the dev environment
        pinned = locked[canonicalize_name(req.name)]
        assert installed == pinned, f"{req.name} {installed} installed, {LOCK.name} pins {pinned}"


def test_image_ci_and_dev_environment_install_from_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock.txt /tmp/requirements.lock.txt" in dockerfile
    assert "pip install --requirement /tmp/requirements.lock.txt" in dockerfile
    assert "--constraint /tmp/requirements.lock.txt" in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^LOCK := requirements\.lock\.txt$", makefile, re.M)
    assert re.search(r"^\$\(STAMP\): pyproject\.toml \$\(LOCK\)$", makefile, re.M)
    assert "pip install -q --constraint $(LOCK) -e '.[dev]'" in makefile
    assert re.search(r"^lock:", makefile, re.M) and "uv pip compile pyproject.toml" in makefile
    assert LOCK.read_text().splitlines()[1] == "#    make lock"
    for workflow in ("ci.yml", "retrain.yml"):
        text = (ROOT / ".github" / "workflows" / workflow).read_text()
        assert "pip install --constraint requirements.lock.txt" in text, workflow


def test_weekly_workflow_relocks_tests_and_proposes() -> None:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "deps.yml").read_text())
    on = wf.pop(True)  # YAML 1.1 reads the key `on` as true
    _minute, _hour, day, month, weekday = on["schedule"][0]["cron"].split()
    assert (day, month) == ("*", "*") and weekday.isdigit(), "once a week"
    assert "workflow_dispatch" in on
    job = wf["jobs"]["relock"]
    assert job["permissions"] == {"contents": "write", "pull-requests": "write", "issues": "write"}
    steps = job["steps"]
    scripts = "\n".join(s.get("run", "") for s in steps)
    assert "make lock LOCK_FLAGS=--upgrade" in scripts
    assert "git diff --quiet -- requirements.lock.txt" in scripts
    assert "make test" in scripts
    uses = {s.get("uses", "").split("@")[0]: s for s in steps}
    pr = uses["peter-evans/create-pull-request"]
    assert pr["with"]["add-paths"] == "requirements.lock.txt"
    assert pr["if"] == "steps.lock.outputs.changed == 'true'"
    issue = uses["actions/github-script"]
    assert "steps.tests.outcome == 'failure'" in issue["if"]
    assert "issues.create" in issue["with"]["script"]


def test_dependabot_watches_the_lock_and_the_actions() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert config["version"] == 2
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) == {"pip", "github-actions"}
    for update in updates.values():
        assert update["directory"] == "/" and update["schedule"]["interval"] == "weekly"
    # Dependabot's pip support reads *.txt requirement files in the directory: the lock is one.
    assert (ROOT / updates["pip"]["directory"].lstrip("/") / LOCK.name).is_file()
    assert LOCK.suffix == ".txt"

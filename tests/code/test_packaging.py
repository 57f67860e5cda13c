"""The wheel holds every file of the package: modules, templates, static files, migrations,
py.typed (what ``[tool.setuptools.package-data]`` must list)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "loopml"
# Files the package reads at run time; each must exist (the check below is not vacuous).
DATA = [
    "py.typed",
    "serving/templates/status.html",
    "serving/static/status.css",
    "serving/static/status.js",
    "serving/templates/docs.html",
    "serving/static/docs.js",
    "serving/static/swagger-ui-bundle.js",
    "serving/static/swagger-ui.css",
    "serving/static/swagger-ui-LICENSE.txt",
    "monitoring/templates/report.html",
    "store/migrations/env.py",
    "store/migrations/script.py.mako",
    "store/migrations/versions/0001_initial.py",
]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")


def _setuptools_builds_offline() -> bool:
    """Whether the installed setuptools meets the build requirement (>=77), so the wheel builds
    without build isolation, that is without the package index."""
    try:
        major = int(version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return False
    return major >= 77


def _package_files() -> set[str]:
    return {
        p.relative_to(PACKAGE.parent).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.mark.slow
def test_wheel_holds_every_package_file(tmp_path: Path) -> None:
    for name in DATA:
        assert (PACKAGE / name).is_file(), name
    # Build from a copy: a build in the worktree would leave build/ and *.egg-info behind.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=_IGNORE)
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q"]
    command += ["--disable-pip-version-check", "-w", str(tmp_path / "dist")]
    if _setuptools_builds_offline():
        command.append("--no-build-isolation")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = list((tmp_path / "dist").glob("loopml-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    missing = sorted(_package_files() - names)
    assert not missing, f"not in the wheel (add them to package-data): {missing}"
    assert {f"loopml/{name}" for name in DATA} <= names


def _runtime_closure() -> set[str]:
    """The distributions that ``pip install loopml`` brings (no extra), by normalised name."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = ["loopml"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        for line in reqs:
            req = Requirement(line)
            # Only what applies without extras on this interpreter.
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name.lower().replace("_", "-"))
    return seen


def test_the_demo_runs_on_runtime_dependencies_only() -> None:
    """`make demo` installs the package without the dev extra: nothing the demo imports may come
    from a distribution only the dev extra brings (such imports fail in a child process)."""
    from importlib.metadata import packages_distributions, requires

    from packaging.requirements import Requirement

    runtime = _runtime_closure()
    dev_only = {
        Requirement(r).name.lower().replace("_", "-")
        for r in requires("loopml") or []
        if 'extra == "dev"' in r
    } - runtime
    modules = sorted(
        module
        for module, dists in packages_distributions().items()
        if dists
        and all(d.lower().replace("_", "-") in dev_only for d in dists)
        and module.isidentifier()
    )
    assert {"pytest", "schemathesis", "tritonclient", "playwright", "hcl2"} <= set(modules), modules
    makefile = (ROOT / "Makefile").read_text()
    assert "demo: $(RUNTIME_STAMP)" in makefile
    assert "--constraint $(LOCK) -e .\n" in makefile
    child = f"""
import importlib.abc, sys
BLOCKED = set({modules!r})
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} comes only with the dev extra")
        return None
sys.meta_path.insert(0, Block())
import loopml.demo, loopml.cli, loopml.serving.app, loopml.control.controller
from typer.testing import CliRunner
result = CliRunner().invoke(loopml.cli.app, ["demo", "--help"])
assert result.exit_code == 0, result.output
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]

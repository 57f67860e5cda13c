"""Which code trained a model: loopml's version and git commit (ML Test Score, Model 1).

Every training run carries these as MLflow tags (:func:`code_tags`), and the model's pip
requirements pin ``loopml`` to the version that trained it. The commit comes from the git
checkout loopml is imported from (with a dirty flag: uncommitted changes to tracked files), else
from ``LOOPML_GIT_COMMIT`` (the container image sets it from its ``REVISION`` build argument),
else it is ``unknown``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = [
    "COMMIT_TAG",
    "DIRTY_TAG",
    "VERSION_TAG",
    "CodeVersion",
    "code_tags",
    "code_version",
    "loopml_version",
]

VERSION_TAG = "loopml.code_version"
COMMIT_TAG = "loopml.git_commit"
DIRTY_TAG = "loopml.git_dirty"

_PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class CodeVersion:
    """loopml's version, its commit (or ``unknown``), whether the checkout had uncommitted
    changes (None when not known) and where the commit came from (git, env, unknown)."""

    version: str
    commit: str
    dirty: bool | None
    source: str


def loopml_version() -> str:
    """The installed distribution's version (``0+unknown`` when loopml is not installed)."""
    try:
        return version("loopml")
    except PackageNotFoundError:
        return "0+unknown"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(_PACKAGE_DIR), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _from_git() -> tuple[str, bool] | None:
    """(commit, dirty) when loopml is imported from its own checkout (``<top>/src/loopml``);
    None otherwise, e.g. installed in a virtualenv that happens to sit inside another repo."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() / "src" / "loopml" != _PACKAGE_DIR:
        return None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    if not commit or status is None:
        return None
    return commit, bool(status)


@cache
def code_version() -> CodeVersion:
    """The code running now (cached: one git call per process)."""
    found = _from_git()
    if found is not None:
        return CodeVersion(loopml_version(), found[0], found[1], "git")
    commit = os.environ.get("LOOPML_GIT_COMMIT", "").strip()
    if commit and commit != "unknown":
        return CodeVersion(loopml_version(), commit, None, "env")
    return CodeVersion(loopml_version(), "unknown", None, "unknown")


def code_tags() -> dict[str, str]:
    """MLflow tags naming the code of this process: version, commit, dirty flag."""
    code = code_version()
    dirty = "unknown" if code.dirty is None else str(code.dirty).lower()
    return {VERSION_TAG: code.version, COMMIT_TAG: code.commit, DIRTY_TAG: dirty}

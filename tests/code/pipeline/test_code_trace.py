"""Model 1 of the ML Test Score: every model traces to the code that trained it (loopml's version,
the git commit and whether the checkout had uncommitted changes), and its pip requirements pin
loopml to that version."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

import mlflow
import pytest

import loopml
from loopml import codeversion
from loopml.codeversion import COMMIT_TAG, DIRTY_TAG, VERSION_TAG, code_version
from loopml.config import Settings
from loopml.data import Dataset
from loopml.pipeline.train import train
from loopml.registry import Registry

REPO = Path(loopml.__file__).resolve().parents[2]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.slow
def test_a_trained_model_names_its_code_and_pins_loopml(
    settings: Settings, small_tweets: Dataset, tmp_path: Path
) -> None:
    if not (REPO / ".git").exists():
        pytest.skip("loopml is not imported from a git checkout")
    code_version.cache_clear()
    result = train(settings, dataset=small_tweets, recipe="tfidf-logreg")
    expected = {
        VERSION_TAG: version("loopml"),
        COMMIT_TAG: _git("rev-parse", "HEAD"),
        DIRTY_TAG: str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower(),
    }
    registry = Registry(settings)
    run_tags = registry.client.get_run(result.run_id).data.tags
    version_tags = registry.version(result.version).tags
    for key, value in expected.items():
        assert run_tags[key] == value and version_tags[key] == value, key
    assert len(expected[COMMIT_TAG]) == 40

    model_dir = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{registry.name}/{result.version}", dst_path=str(tmp_path / "m")
    )
    needs = (Path(model_dir) / "requirements.txt").read_text().split()
    assert f"loopml=={version('loopml')}" in needs, needs
    assert "loopml" not in needs, "an unpinned loopml would load any version's code"


def test_outside_a_checkout_the_commit_comes_from_the_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Installed (site-packages, or a venv inside some other repository): git is not asked.
    monkeypatch.setattr(codeversion, "_PACKAGE_DIR", tmp_path / "site-packages" / "loopml")
    code_version.cache_clear()
    try:
        assert code_version().commit == "unknown" and code_version().source == "unknown"
        code_version.cache_clear()
        monkeypatch.setenv("LOOPML_GIT_COMMIT", "0123abc")  # the Dockerfile's REVISION
        found = code_version()
        assert (found.commit, found.dirty, found.source) == ("0123abc", None, "env")
        assert codeversion.code_tags()[DIRTY_TAG] == "unknown"
    finally:
        code_version.cache_clear()

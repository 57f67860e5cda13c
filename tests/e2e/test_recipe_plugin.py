"""A third-party recipe package, really installed, trains through the CLI and serves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from loopml.config import Settings
from loopml.data import Dataset
from loopml.registry import RECIPE_PARAMS_TAG, RECIPE_TAG, Registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "recipe-plugin"


def _install(tmp_path: Path) -> Path:
    # pip builds in the source tree: build from a copy, install into a private target folder.
    source = shutil.copytree(EXAMPLE, tmp_path / "plugin-src")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return target


def _loopml(target: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(target), str(ROOT / "src")])}
    return subprocess.run(
        [sys.executable, "-m", "loopml", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_installed_plugin_trains_with_tuning_registers_and_serves(
    settings: Settings,
    small_tweets: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = _install(tmp_path)
    data = tmp_path / "tweets.jsonl"
    small_tweets.frame.sample(1500, random_state=0)[["text", "label"]].to_json(
        data, orient="records", lines=True
    )

    listed = _loopml(target, "recipes", "--json")
    assert listed.returncode == 0, listed.stderr
    recipes = {r["name"]: r for r in json.loads(listed.stdout)}
    assert recipes["char-nb"]["source"] == "plug-in"
    assert recipes["char-nb"]["distribution"] == "loopml-char-nb"
    assert recipes["char-nb"]["parameters"] == {"alpha": 0.3, "char_max": 5, "min_df": 2}

    trained = _loopml(
        target, "train", "--recipe", "char-nb", "--tune", "2", "--data", str(data), "--json"
    )
    assert trained.returncode in (0, 1), trained.stderr  # 1: its gate failed, still registered
    result = json.loads(trained.stdout)
    assert result["recipe"] == "char-nb"
    assert result["tuning"]["trials"] == 2
    assert result["recipe_params"] == result["tuning"]["best_params"]

    registry = Registry(settings)
    tags = registry.version(result["version"]).tags
    assert tags[RECIPE_TAG] == "char-nb"
    assert json.loads(tags[RECIPE_PARAMS_TAG]) == result["recipe_params"]
    model_dir = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{registry.name}/{result['version']}", dst_path=str(tmp_path / "m")
    )
    assert "loopml-char-nb" in (Path(model_dir) / "requirements.txt").read_text()

    monkeypatch.syspath_prepend(str(target))  # the pickled classifier's module
    model = registry.load(result["version"])
    assert type(model).__name__ == "CharNBClassifier"
    assert model.classes == ["negative", "neutral", "positive"]
    assert model.predict(["@united worst delay ever, lost my bag", "love this, thank you!"]) == [
        "negative",
        "positive",
    ]

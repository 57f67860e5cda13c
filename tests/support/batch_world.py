"""A registered champion for batch tests: trained on 4,000 real non-airline tweets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest

from loopml.config import Settings, load_settings
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.pipeline.train import train
from loopml.recipes.base import TextClassifier
from loopml.registry import CHAMPION, Registry
from loopml.store import open_store

__all__ = ["BatchWorld", "build_world", "champion_home"]


class BatchWorld(NamedTuple):
    home: Path
    settings: Settings
    version: str
    classifier: TextClassifier
    others: pd.DataFrame  # non-airline tweets the champion did not train on
    airline: pd.DataFrame  # airline tweets: a domain the champion never saw


def build_world(home: Path, tweets: Dataset) -> BatchWorld:
    """Train and promote the champion under ``home``; the in-process classifier beside it."""
    settings = load_settings(home=home).prepare()
    frame = tweets.frame
    others = frame[frame["domain"] != "airline"].sample(6000, random_state=1)
    train_rows = others.iloc[:4000]
    ds = Dataset("builtin:tweets[non-airline sample]", train_rows, content_version(train_rows))
    result = train(settings, dataset=ds)
    registry = Registry(settings)
    with open_store(settings.db_url) as store:
        promote(store, registry, result.version, force=True, reason="test")
    airline = frame[frame["domain"] == "airline"].sample(2000, random_state=1)
    return BatchWorld(
        home, settings, result.version, registry.load(result.version), others.iloc[4000:], airline
    )


@contextmanager
def champion_home(home: Path, dataset: Dataset) -> Iterator[Settings]:
    """A LOOPML_HOME with a version trained on ``dataset`` as champion (alias only, no audit),
    under an environment cleared of other LOOPML_ settings while the block runs."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("LOOPML_") and key != "LOOPML_TEST_POSTGRES_URL":
                mp.delenv(key)
        mp.setenv("LOOPML_HOME", str(home))
        mp.setenv("LOOPML_CONFIG", str(home / "loopml.toml"))
        settings = load_settings().prepare()
        version = train(settings, dataset=dataset).version
        Registry(settings).move_alias(CHAMPION, version)
        yield settings

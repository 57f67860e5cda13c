"""Fixtures of the MiniLM tests: the encoder exported to ONNX once per session, shared by tests.

Each test has its own ``LOOPML_HOME``; :func:`minilm_home` links the session's exported models
into it, so a fit reuses them instead of exporting again (about 15 s each on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loopml.data import Dataset


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``cache/onnx`` folder holding the fp32 and int8 MiniLM encoders."""
    pytest.importorskip("torch", reason="needs the transformers extra")
    from loopml.recipes.minilm import base_encoder

    home = tmp_path_factory.mktemp("minilm-home")
    for quantize in (False, True):
        base_encoder(quantize=quantize, home=home)
    return home / "cache" / "onnx"


@pytest.fixture
def minilm_home(home: Path, onnx_cache: Path) -> Path:
    """A fresh LOOPML_HOME whose ``cache/onnx`` is the session's exported encoders."""
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "onnx").symlink_to(onnx_cache, target_is_directory=True)
    return home


def tweet_sample(tweets: Dataset, rows: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``rows`` real tweets and their labels, stratified by label."""
    from sklearn.model_selection import train_test_split

    frame, _ = train_test_split(
        tweets.frame, train_size=rows, random_state=seed, stratify=tweets.frame["label"]
    )
    return frame["text"].tolist(), frame["label"].tolist()

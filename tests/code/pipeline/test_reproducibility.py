"""ML Test Score, Infrastructure 1: training is reproducible. The same data and seed, trained in
two fresh homes, give the same split, the same registered parameters and the same probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loopml.config import load_settings
from loopml.data import Dataset, load_splits
from loopml.pipeline.train import TrainResult, train
from loopml.registry import Registry

pytestmark = pytest.mark.slow


def _train(home: Path, dataset: Dataset, seed: int) -> tuple[TrainResult, Registry]:
    settings = load_settings(home=home, seed=seed).prepare()
    return train(settings, dataset=dataset), Registry(settings)


def test_same_data_and_seed_give_the_same_model(tmp_path: Path, small_tweets: Dataset) -> None:
    first, reg1 = _train(tmp_path / "a", small_tweets, 7)
    second, reg2 = _train(tmp_path / "b", small_tweets, 7)
    other, reg3 = _train(tmp_path / "c", small_tweets, 8)

    params = [
        reg.client.get_run(r.run_id).data.params for reg, r in ((reg1, first), (reg2, second))
    ]
    assert params[0] == params[1]
    assert params[0]["seed"] == "7" and params[0]["dataset_version"] == small_tweets.version

    tests = [
        load_splits(reg.client, r.run_id, ["test"])["test"]
        for reg, r in ((reg1, first), (reg2, second), (reg3, other))
    ]
    assert tests[0]["text"].tolist() == tests[1]["text"].tolist()
    assert tests[0]["text"].tolist() != tests[2]["text"].tolist()  # the seed does matter

    # The registered models, loaded back from each registry, on every tweet of the data.
    # (A new Registry each time: loading goes through MLflow's global tracking URI, which names
    # the store of the Registry made last.)
    texts = small_tweets.frame["text"].tolist()
    p1, p2, p3 = (
        Registry(reg.settings).load(r.version).predict_proba(texts)
        for reg, r in ((reg1, first), (reg2, second), (reg3, other))
    )
    assert np.abs(p1 - p2).max() <= 1e-9
    assert np.abs(p1 - p3).max() > 1e-3  # a different split trains a different model
    assert first.evaluation.metrics == second.evaluation.metrics
    assert first.evaluation.baselines == second.evaluation.baselines

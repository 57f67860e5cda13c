"""The controller's retrain path trains with the champion's recipe and parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from loopml_test_recipes import BagOfWordsNB, register_plugins

from loopml.config import Settings
from loopml.control.retrain import retrain
from loopml.data import Dataset
from loopml.pipeline.train import train
from loopml.recipes import Recipe
from loopml.recipes.tfidf_logreg import TfidfLogReg
from loopml.registry import CHAMPION, RECIPE_PARAMS_TAG, Registry


def _feedback(rows: int = 30) -> pd.DataFrame:
    labels = ["negative", "neutral", "positive"]
    words = {"negative": "awful delay", "neutral": "flight at noon", "positive": "lovely crew"}
    return pd.DataFrame(
        {
            "text": [f"feedback {i}: {words[labels[i % 3]]}" for i in range(rows)],
            "label": [labels[i % 3] for i in range(rows)],
        }
    )


def _champion(settings: Settings, data: Dataset, recipe: str, params: dict[str, str]) -> str:
    result = train(settings, dataset=data, recipe=recipe, params=params)
    Registry(settings).move_alias(CHAMPION, result.version)
    return result.version


@pytest.mark.slow
def test_retrain_reuses_the_champions_non_default_params(
    settings: Settings, small_tweets: Dataset
) -> None:
    # no search on retrain (LOOPML_RETRAIN_TUNE_TRIALS=0): the champion's parameters as they are
    settings = settings.model_copy(update={"retrain_tune_trials": 0})
    champion = _champion(settings, small_tweets, "tfidf-logreg", {"C": "0.5", "ngram_max": "1"})
    registry = Registry(settings)
    expected = TfidfLogReg.defaults() | {"C": 0.5, "ngram_max": 1}
    assert json.loads(registry.version(champion).tags[RECIPE_PARAMS_TAG]) == expected

    result = retrain(settings, registry, _feedback(), trigger="drift")
    tags = registry.version(result.version).tags
    assert tags["loopml.recipe"] == "tfidf-logreg"
    assert json.loads(tags[RECIPE_PARAMS_TAG]) == expected
    run = registry.client.get_run(result.run_id)
    assert run.data.tags["loopml.recipe_reason"] == f"reused from champion version {champion}"
    assert run.data.params["recipe.C"] == "0.5"


@pytest.mark.slow
def test_retrain_reuses_a_plugin_champion(
    settings: Settings, small_tweets: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register_plugins(
        monkeypatch, tmp_path / "plugins", {"test-bow-nb": "loopml_test_recipes:BagOfWordsNB"}
    )
    # a plug-in that declares no search space is retrained as it is, not failed by the search
    monkeypatch.setattr(BagOfWordsNB, "search_space", Recipe.__dict__["search_space"])
    settings = settings.model_copy(update={"retrain_tune_trials": 8})
    _champion(settings, small_tweets, "test-bow-nb", {"alpha": "0.25"})
    registry = Registry(settings)
    result = retrain(settings, registry, _feedback(), trigger="quality")
    tags = registry.version(result.version).tags
    assert result.tuning is None and "loopml.tune.trials" not in tags
    assert tags["loopml.recipe"] == "test-bow-nb"
    assert json.loads(tags[RECIPE_PARAMS_TAG]) == {"alpha": 0.25, "binary": False}
    assert type(registry.load(result.version)).__name__ == "BagOfWordsClassifier"


def test_versions_without_the_params_tag_fall_back_to_the_run(
    settings: Settings, small_tweets: Dataset
) -> None:
    champion = _champion(settings, small_tweets, "tfidf-logreg", {"min_df": "3"})
    registry = Registry(settings)
    registry.client.delete_model_version_tag(registry.name, champion, RECIPE_PARAMS_TAG)
    name, params = registry.recipe_of(registry.version(champion)) or ("", {})
    assert name == "tfidf-logreg"
    assert TfidfLogReg(params).params_dict() == TfidfLogReg.defaults() | {"min_df": 3}

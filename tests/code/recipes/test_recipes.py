from __future__ import annotations

import pickle
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import optuna
import pytest
from loopml_test_recipes import NeedsMissingModule, register_plugins

from loopml.data import Dataset
from loopml.errors import TrainingError
from loopml.recipes import available_recipes, describe_recipes, get_recipe
from loopml.recipes.tfidf_logreg import TfidfLogReg


def test_params_are_coerced_from_cli_strings() -> None:
    recipe = get_recipe("tfidf-logreg", {"C": "2", "ngram_max": "1", "sublinear_tf": "true"})
    assert isinstance(recipe, TfidfLogReg)
    assert recipe.params.C == 2.0
    assert recipe.params.ngram_max == 1
    assert recipe.params.sublinear_tf is True
    assert recipe.params_dict() == TfidfLogReg.defaults() | {
        "C": 2.0,
        "ngram_max": 1,
        "sublinear_tf": True,
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gamma": "1"}, r"unknown parameter 'gamma' \(allowed: C, ngram_max, "),
        ({"C": "lots"}, "parameter C='lots': Input should be a valid number"),
        ({"C": "0"}, "parameter C='0': Input should be greater than 0"),
        ({"sublinear_tf": "maybe"}, "parameter sublinear_tf='maybe': Input should be a valid bool"),
        ({"class_weight": "heavy"}, "parameter class_weight='heavy': Input should be 'none' or"),
    ],
)
def test_bad_params_name_the_recipe_the_parameter_and_the_problem(
    params: dict[str, str], message: str
) -> None:
    with pytest.raises(TrainingError, match=f"^recipe tfidf-logreg: {message}"):
        get_recipe("tfidf-logreg", params)


def test_unknown_recipe() -> None:
    with pytest.raises(
        TrainingError,
        match="unknown recipe 'bert'; available: tfidf-logreg, minilm-logreg, minilm-lora",
    ):
        get_recipe("bert")


def test_search_space_covers_every_parameter_but_max_iter_and_mask_identity() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(20):
        trial = study.ask()
        space = TfidfLogReg.search_space(trial)
        seen.append(TfidfLogReg(space).params_dict())  # every point validates
        study.tell(trial, 0.0)
    assert set(space) == set(TfidfLogReg.defaults()) - {"max_iter", "mask_identity"}
    assert len({p["C"] for p in seen}) == 20
    assert {p["class_weight"] for p in seen} == {"none", "balanced"}


def test_importing_recipes_stays_cheap() -> None:
    code = "import sys, loopml.recipes; print(sorted({'optuna', 'sklearn'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_plugins_are_listed_and_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    register_plugins(monkeypatch, tmp_path, {"test-bow-nb": "loopml_test_recipes:BagOfWordsNB"})
    entries = {e.name: e for e in available_recipes()}
    assert entries["tfidf-logreg"].source == "builtin"
    assert entries["test-bow-nb"].source == "plug-in"
    assert entries["test-bow-nb"].distribution == "loopml-test-plugins"
    recipe = get_recipe("test-bow-nb", {"alpha": "0.5"})
    assert recipe.params_dict() == {"alpha": 0.5, "binary": False}
    model = recipe.fit(["good good", "bad bad", "good", "bad"], ["pos", "neg", "pos", "neg"])
    assert model.predict(["good"]) == ["pos"]
    listed = {r["name"]: r for r in describe_recipes()}
    assert listed["test-bow-nb"]["parameters"] == {"alpha": 1.0, "binary": False}
    assert listed["test-bow-nb"]["installed"] and listed["test-bow-nb"]["error"] is None


def test_a_plugin_cannot_shadow_a_builtin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    register_plugins(monkeypatch, tmp_path, {"tfidf-logreg": "loopml_test_recipes:BagOfWordsNB"})
    with pytest.raises(TrainingError, match="registers recipe 'tfidf-logreg', the name of a built"):
        get_recipe("tfidf-logreg")
    listed = [r for r in describe_recipes() if r["source"] == "plug-in"]
    assert "cannot be shadowed" in listed[0]["error"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("loopml_no_such_plugin:Recipe", "failed to load: ModuleNotFoundError: No module named"),
        ("loopml_test_recipes:Missing", "failed to load: AttributeError"),
        ("loopml_test_recipes:register_plugins", "is not a loopml.recipes.Recipe subclass"),
        ("loopml_test_recipes:NeedsMissingModule", "its class is named 'test-needs-extra'"),
    ],
)
def test_a_broken_plugin_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, target: str, message: str
) -> None:
    register_plugins(monkeypatch, tmp_path, {"broken": target})
    with pytest.raises(TrainingError, match=f"plug-in recipe 'broken' \\({target}, .*{message}"):
        get_recipe("broken")
    assert get_recipe("tfidf-logreg").name == "tfidf-logreg", "other recipes still work"


def test_missing_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    register_plugins(
        monkeypatch, tmp_path, {"test-needs-extra": "loopml_test_recipes:NeedsMissingModule"}
    )
    expected = "recipe test-needs-extra needs: pip install 'loopml[transformers]'"
    with pytest.raises(TrainingError, match=expected.replace("[", r"\[")):
        get_recipe("test-needs-extra")
    listed = {r["name"]: r for r in describe_recipes()}["test-needs-extra"]
    assert listed["extra"] == "transformers" and not listed["installed"]


def test_logged_requirements_pin_what_serving_needs() -> None:
    # without serves_with, a model asks for its recipe's whole extra
    # (loopml itself always at the version that trained it: the pickled classes are its own)
    ours = version("loopml")
    assert NeedsMissingModule().pip_requirements() == [
        f"loopml[transformers]=={ours}",
        "numpy",
        "pandas",
    ]
    # with it, only those distributions, at the versions the model was trained with
    sklearn = f"scikit-learn=={version('scikit-learn')}"
    assert TfidfLogReg().pip_requirements() == [f"loopml=={ours}", "numpy", "pandas", sklearn]


def test_fit_gives_probabilities_in_class_order(small_tweets: Dataset) -> None:
    frame = small_tweets.frame
    model = get_recipe("tfidf-logreg").fit(frame["text"].tolist(), frame["label"].tolist())
    assert model.classes == ["negative", "neutral", "positive"]
    proba = model.predict_proba(["I hate delays", "love it!"])
    assert proba.shape == (2, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(clone.predict_proba(["love it!"]), proba[1:])


def test_the_docs_show_the_example_plugin_as_it_is() -> None:
    root = Path(__file__).parents[3]
    doc = (root / "docs" / "recipes.md").read_text()
    for name in ("pyproject.toml", "loopml_char_nb.py"):
        assert (root / "examples" / "recipe-plugin" / name).read_text() in doc, name

"""Hyper-parameter search with Optuna in the recipe's own search space.

Every trial is a nested MLflow run scored by macro-F1 on the validation split (the test split is
never seen). The starting parameters (the caller's, or the champion's) are scored first as the
``start`` run, so a search reports what it gained over them and never returns worse ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlflow
from sklearn.metrics import f1_score

from loopml.config import Settings
from loopml.data import DataRules, Dataset, Splits, load_dataset, split_dataset
from loopml.errors import TrainingError
from loopml.pipeline.choice import RecipeChoice, choose_recipe
from loopml.recipes import Recipe, recipe_class
from loopml.registry import Registry
from loopml.tracking import experiment_id

if TYPE_CHECKING:
    import optuna

__all__ = ["Search", "SearchSpace", "TuneResult", "declared_space", "search", "tune"]

OnTrial = Callable[[int, float], None]


@dataclass
class Search:
    """The outcome of one search: the starting and the best parameters with their scores."""

    recipe: str
    start_params: dict[str, Any]
    start_macro_f1: float
    best_params: dict[str, Any]
    best_macro_f1: float
    trials: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "recipe": self.recipe,
            "start_params": self.start_params,
            "start_validation_macro_f1": round(self.start_macro_f1, 4),
            "best_params": self.best_params,
            "best_validation_macro_f1": round(self.best_macro_f1, 4),
            "trials": self.trials,
        }


@dataclass
class TuneResult:
    """A search run on its own (``loopml tune``)."""

    run_id: str
    search: Search
    reason: str
    seconds: float

    @property
    def best_params(self) -> dict[str, Any]:
        """The best parameters found (all of them, the fixed ones too)."""
        return self.search.best_params

    @property
    def best_macro_f1(self) -> float:
        """Validation macro-F1 of the best parameters."""
        return self.search.best_macro_f1

    @property
    def trials(self) -> int:
        """How many trials ran (the start run not counted)."""
        return self.search.trials

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return (
            {"run_id": self.run_id, "reason": self.reason}
            | self.search.to_dict()
            | {"seconds": round(self.seconds, 2)}
        )


@dataclass(frozen=True)
class SearchSpace:
    """A recipe's declared search space: each tuned parameter's Optuna distribution (as JSON)
    and a fingerprint of them all, which changes whenever the space does."""

    recipe: str
    distributions: dict[str, str]
    fingerprint: str

    def contains(self, name: str, value: Any) -> bool:
        """Whether ``value`` of parameter ``name`` is a point of the space (inside the bounds of
        a range, one of the choices of a categorical; a fixed parameter is not in it)."""
        import optuna

        text = self.distributions.get(name)
        if text is None:
            return False
        dist = optuna.distributions.json_to_distribution(text)
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return value in dist.choices
        if isinstance(dist, optuna.distributions.IntDistribution):
            if not isinstance(value, int) or isinstance(value, bool):
                return False
            return dist.low <= value <= dist.high and (value - dist.low) % dist.step == 0
        if isinstance(dist, optuna.distributions.FloatDistribution):
            if not isinstance(value, int | float) or isinstance(value, bool):
                return False
            return dist.low <= float(value) <= dist.high
        return False


def declared_space(recipe: str) -> SearchSpace:
    """The search space ``recipe`` declares (``Recipe.search_space``), read from one trial of
    an in-memory study; ``TrainingError`` if the recipe declares none."""
    import optuna

    cls = recipe_class(recipe)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    keys = set(cls.search_space(trial))
    dists = {
        name: optuna.distributions.distribution_to_json(dist)
        for name, dist in sorted(trial.distributions.items())
        if name in keys  # a parameter the space returns under the name it samples it by
    }
    if not dists:
        raise TrainingError(f"recipe {recipe} declares an empty search space")
    text = json.dumps({"recipe": recipe, "space": dists}, sort_keys=True)
    return SearchSpace(recipe, dists, hashlib.sha256(text.encode()).hexdigest())


def _score(recipe: Recipe, splits: Splits, experiment: str, run_name: str) -> float:
    """Fit on train, score on validation, as a nested run of the active run."""
    with mlflow.start_run(experiment_id=experiment, run_name=run_name, nested=True):
        mlflow.log_params(recipe.params_dict())
        model = recipe.fit(splits.train["text"].tolist(), splits.train["label"].tolist())
        predicted = model.predict(splits.validation["text"].tolist())
        score = float(f1_score(splits.validation["label"], predicted, average="macro"))
        mlflow.log_metric("validation_macro_f1", score)
    return score


def search(
    start: Recipe,
    splits: Splits,
    *,
    experiment: str,
    trials: int,
    timeout_s: float,
    seed: int,
    on_trial: OnTrial | None = None,
    min_gain: float = 0.0,
) -> Search:
    """Score ``start``, then up to ``trials`` points of its recipe's search space (nested runs
    of the active MLflow run); the fixed parameters of ``start`` stay as they are. The best
    point replaces ``start`` only if it scores more than ``min_gain`` above it (the best of
    several noisy scores beats the start by chance alone)."""
    import optuna

    cls = type(start)
    base = start.params_dict()
    start_score = _score(start, splits, experiment, "start")

    def objective(trial: optuna.Trial) -> float:
        recipe = cls(base | cls.search_space(trial))
        score = _score(recipe, splits, experiment, f"trial-{trial.number}")
        trial.set_user_attr("params", recipe.params_dict())
        if on_trial:
            on_trial(trial.number, score)
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials, timeout=timeout_s)
    done = [t for t in study.trials if t.value is not None]
    best_params, best_score = base, start_score
    if done and study.best_value > start_score + min_gain:
        best_params, best_score = dict(study.best_trial.user_attrs["params"]), study.best_value
    mlflow.log_params({f"best.{k}": v for k, v in best_params.items()})
    mlflow.log_metrics(
        {"start_validation_macro_f1": start_score, "best_validation_macro_f1": best_score}
    )
    return Search(cls.name, base, start_score, best_params, float(best_score), len(done))


def tune(
    settings: Settings,
    *,
    source: str | None = None,
    dataset: Dataset | None = None,
    recipe: str | None = None,
    params: Mapping[str, Any] | None = None,
    trials: int = 20,
    timeout_s: float = 600.0,
    on_trial: OnTrial | None = None,
) -> TuneResult:
    """Search the parameters of ``recipe`` (default: the champion's, see
    :func:`~loopml.pipeline.choice.choose_recipe`), bounded by ``trials`` and ``timeout_s``."""
    registry = Registry(settings)
    choice: RecipeChoice = choose_recipe(registry, recipe, params)
    dataset = dataset or load_dataset(
        source or settings.data_source,
        text_column=settings.text_column,
        label_column=settings.label_column,
        rules=DataRules.from_settings(settings),
    )
    splits = split_dataset(
        dataset,
        seed=settings.seed,
        test_size=settings.test_size,
        validation_size=settings.validation_size,
    )
    exp = experiment_id(settings, registry.client)
    started = time.perf_counter()
    with mlflow.start_run(experiment_id=exp, run_name=f"tune-{choice.name}") as parent:
        mlflow.set_tags(
            {
                "loopml.dataset_version": dataset.version,
                "loopml.recipe": choice.name,
                "loopml.recipe_reason": choice.reason,
            }
        )
        found = search(
            choice.recipe,
            splits,
            experiment=exp,
            trials=trials,
            timeout_s=timeout_s,
            seed=settings.seed,
            on_trial=on_trial,
        )
    return TuneResult(parent.info.run_id, found, choice.reason, time.perf_counter() - started)

"""Hyper-parameter search with Optuna; each trial is a nested MLflow run scored on validation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
import optuna
from sklearn.metrics import f1_score

from loopml.config import Settings
from loopml.data import DataRules, Dataset, load_dataset, split_dataset
from loopml.recipes import get_recipe
from loopml.registry import Registry
from loopml.tracking import experiment_id

__all__ = ["TuneResult", "tune"]

# Search space of the tfidf-logreg recipe: name -> trial suggestion.
_SPACE: dict[str, Callable[[optuna.Trial], Any]] = {
    "C": lambda t: t.suggest_float("C", 0.1, 30.0, log=True),
    "ngram_max": lambda t: t.suggest_int("ngram_max", 1, 3),
    "min_df": lambda t: t.suggest_int("min_df", 1, 5),
    "class_weight": lambda t: t.suggest_categorical("class_weight", ["none", "balanced"]),
}


@dataclass
class TuneResult:
    """Best parameters found and how the search went."""

    run_id: str
    best_params: dict[str, Any]
    best_macro_f1: float
    trials: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run_id": self.run_id,
            "best_params": self.best_params,
            "best_validation_macro_f1": round(self.best_macro_f1, 4),
            "trials": self.trials,
            "seconds": round(self.seconds, 2),
        }


def tune(
    settings: Settings,
    *,
    source: str | None = None,
    dataset: Dataset | None = None,
    trials: int = 20,
    timeout_s: float = 600.0,
    on_trial: Callable[[int, float], None] | None = None,
) -> TuneResult:
    """Search tfidf-logreg parameters, bounded by ``trials`` and ``timeout_s``."""
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
    train_x, train_y = splits.train["text"].tolist(), splits.train["label"].tolist()
    val_x, val_y = splits.validation["text"].tolist(), splits.validation["label"].tolist()
    exp = experiment_id(settings, Registry(settings).client)

    def objective(trial: optuna.Trial) -> float:
        params = {name: suggest(trial) for name, suggest in _SPACE.items()}
        with mlflow.start_run(experiment_id=exp, run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(params)
            model = get_recipe("tfidf-logreg", params).fit(train_x, train_y)
            score = float(f1_score(val_y, model.predict(val_x), average="macro"))
            mlflow.log_metric("validation_macro_f1", score)
        if on_trial:
            on_trial(trial.number, score)
        return score

    start = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed)
    )
    with mlflow.start_run(experiment_id=exp, run_name="tune-tfidf-logreg") as parent:
        mlflow.set_tag("loopml.dataset_version", dataset.version)
        study.optimize(objective, n_trials=trials, timeout=timeout_s)
        mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
        mlflow.log_metric("best_validation_macro_f1", study.best_value)
    return TuneResult(
        parent.info.run_id,
        dict(study.best_params),
        float(study.best_value),
        len(study.trials),
        time.perf_counter() - start,
    )

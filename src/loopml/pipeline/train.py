"""The training pipeline: validate > version > split > train > evaluate > gate > register."""

from __future__ import annotations

import contextlib
import json
import pickle
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException

from loopml.codeversion import code_tags
from loopml.config import Settings
from loopml.data import DataRules, Dataset, Splits, load_dataset, load_splits, split_dataset
from loopml.errors import LoopmlError, RegistryError, TrainingError
from loopml.pipeline.baselines import baseline_scores, fit_baselines
from loopml.pipeline.behavioral import run_behavioral_tests
from loopml.pipeline.choice import choose_recipe
from loopml.pipeline.evaluate import (
    Evaluation,
    domain_f1,
    evaluate,
    plot_confusion_matrix,
    score,
)
from loopml.pipeline.gate import (
    Comparison,
    GateCheck,
    GateResult,
    run_gate,
    too_few_compared,
    trusted_rows,
)
from loopml.pipeline.stability import check_finite, fit_checked
from loopml.pipeline.tune import Search, search
from loopml.recipes import Recipe
from loopml.recipes.base import TextClassifier
from loopml.recipes.packaging import log_classifier
from loopml.registry import GATE_TAG, RECIPE_PARAMS_TAG, RECIPE_TAG, Registry
from loopml.routing import CHAMPION
from loopml.store import FileHashes, hash_tree, open_settings_store
from loopml.tracking import experiment_id, run_tags

__all__ = [
    "TrainResult",
    "evaluate_version",
    "gate_against_champion",
    "record_artifacts",
    "record_gate",
    "train",
]

Progress = Callable[[str], None]

_FINITE_SAMPLE = 512


@dataclass
class TrainResult:
    """What one training run produced."""

    run_id: str
    version: str
    dataset_version: str
    split_sizes: dict[str, int]
    evaluation: Evaluation
    gate: GateResult
    fit_seconds: float
    model_bytes: int
    total_seconds: float
    recipe: str = ""
    recipe_params: dict[str, Any] | None = None
    #: why this recipe and these parameters (the caller's, the champion's, tuned)
    recipe_reason: str = ""
    #: the search that chose the parameters (``train --tune``)
    tuning: Search | None = None
    #: the retrain's search as recorded: numbers, space fingerprint, policy approval if any
    tuning_record: dict[str, Any] | None = None
    #: who gave the feedback labels it trained on (retraining only), see ``control.retrain``
    provenance: dict[str, Any] | None = None
    #: feedback held back as likely mislabelled (retraining only), see ``labels.noise``
    noise: dict[str, Any] | None = None
    #: False when the solver stopped at its iteration limit (see ``pipeline.stability``)
    converged: bool = True
    #: what loading changed in the data (repeated texts dropped), in words
    data_notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        extra = {"label_provenance": self.provenance} if self.provenance is not None else {}
        if self.tuning is not None:
            extra["tuning"] = self.tuning_record or self.tuning.to_dict()
        if self.noise is not None:
            extra["label_noise"] = self.noise
        return extra | {
            "run_id": self.run_id,
            "version": self.version,
            "recipe": self.recipe,
            "recipe_params": self.recipe_params,
            "recipe_reason": self.recipe_reason,
            "dataset_version": self.dataset_version,
            "split_sizes": self.split_sizes,
            "metrics": self.evaluation.flat_metrics(),
            "gate": self.gate.to_dict(),
            "fit_seconds": round(self.fit_seconds, 3),
            "model_bytes": self.model_bytes,
            "converged": self.converged,
            "total_seconds": round(self.total_seconds, 3),
            "data_notes": list(self.data_notes),
        }


CONVERGED_TAG = "loopml.converged"


def flag_unconverged(gate: GateResult, detail: str) -> None:
    """Fail ``gate`` with the check ``solver_converged``: weights that depend on the iteration
    limit rather than the data are not promoted without a forced, audited promotion."""
    detail = f"{detail[:300]}; more iterations (e.g. -p max_iter) or a smaller C help"
    gate.checks.append(GateCheck("solver_converged", 0.0, 1.0, False, detail))
    gate.passed = False


def check_size(settings: Settings, model_bytes: int) -> None:
    """``TrainingError`` when the pickled model exceeds ``LOOPML_MAX_MODEL_BYTES``."""
    if model_bytes > settings.max_model_bytes:
        raise TrainingError(
            f"model is {model_bytes / 1e6:.1f} MB, over its budget LOOPML_MAX_MODEL_BYTES="
            f"{settings.max_model_bytes} ({settings.max_model_bytes / 1e6:.1f} MB); fewer "
            "features (e.g. -p max_features=50000 or -p ngram_max=1) make it smaller"
        )


def _log_data(dataset: Dataset, splits: Splits, out: Path) -> None:
    for context, frame in (
        ("train", splits.train),
        ("validation", splits.validation),
        ("test", splits.test),
    ):
        path = out / f"{context}.parquet"
        frame.to_parquet(path)
        with warnings.catch_warnings():
            # MLflow finds two equivalent source classes for a local file and says so.
            warnings.simplefilter("ignore", UserWarning)
            ds = from_pandas(
                frame,
                source=path.as_uri(),
                name=f"{dataset.source}@{dataset.version}",
                targets="label",
                digest=f"{dataset.version}-{context}"[:36],
            )
        mlflow.log_input(ds, context=context)
    mlflow.log_artifacts(str(out), artifact_path="data")


def with_baselines(
    evaluation: Evaluation, train: pd.DataFrame, test: pd.DataFrame, *, seed: int
) -> None:
    """Fit the baselines on ``train`` and record what they reach on ``test``: scores,
    predictions, and the unigram model's slice scores and behavioral pass rate."""
    baselines = fit_baselines(train)
    texts = test["text"].astype(str).tolist()
    predicted = baselines.predictions(texts)
    evaluation.baselines = baseline_scores(train, test, predicted)
    evaluation.baseline_predicted = predicted
    evaluation.baseline_domain_f1 = domain_f1(test, predicted["unigram_tfidf_logreg"])
    report = run_behavioral_tests(baselines.unigram, texts, seed=seed)
    evaluation.baseline_behavioral = report.balanced_pass_rate()


def gate_against_champion(
    settings: Settings,
    registry: Registry,
    candidate: Evaluation,
    test: pd.DataFrame,
    *,
    model: TextClassifier,
    seen: set[str],
    exclude_version: str | None = None,
) -> tuple[GateResult, Evaluation | None]:
    """Gate ``candidate`` (``model`` evaluated on ``test``, trained on the texts ``seen``)
    against the current champion.

    Both models are compared on the rows of ``test`` that neither trained on: a row the
    champion trained on would flatter it. With feedback rows among them, both are also scored
    on the trusted holdout (the rows no feedback wrote) and the gate holds the candidate to it.
    Both are also scored on the champion's own test split with its labels, less ``seen``.
    """
    champion = registry.alias(CHAMPION)
    version = str(champion.version) if champion is not None else None
    if champion is None or version is None or version == exclude_version:
        return run_gate(candidate, None, settings), None
    rows, comparison = rows_unseen_by(registry, champion.run_id, test)
    if comparison.rows < settings.gate_min_compared_rows:
        return too_few_compared(candidate, settings, version, comparison), None
    champion_model = registry.load(version)
    champion_eval = evaluate(champion_model, rows, seed=settings.seed)
    compared = evaluate(model, rows, seed=settings.seed) if comparison.excluded else None
    trusted = None
    holdout = trusted_rows(rows)
    if 0 < len(holdout) < len(rows):
        trusted = (score(model, holdout), score(champion_model, holdout))
    result = run_gate(
        candidate,
        champion_eval,
        settings,
        champion_version=version,
        trusted=trusted,
        compared=compared,
        comparison=comparison,
        holdout=champion_holdout(
            registry,
            champion.run_id,
            (champion_model, model),
            seen,
            settings.gate_min_compared_rows,
        ),
    )
    return result, champion_eval


def champion_holdout(
    registry: Registry,
    run_id: str | None,
    models: tuple[TextClassifier, TextClassifier],
    seen: set[str],
    min_rows: int,
) -> tuple[dict[str, float], dict[str, float], int] | None:
    """The candidate's and the champion's macro-F1 on the champion's own test split (run
    ``run_id``), with the labels it was logged with, less the texts ``seen`` by the candidate in
    training; None without such a split or with fewer than ``min_rows`` rows left."""
    try:
        if not run_id:
            return None
        test = load_splits(registry.client, run_id, ("test",), columns=["text", "label"])["test"]
    except (RegistryError, MlflowException, OSError):
        return None
    rows = test[~test["text"].isin(seen)]
    if len(rows) < min_rows:
        return None
    champion, model = models
    macro = "macro_f1"
    return {macro: score(model, rows)[macro]}, {macro: score(champion, rows)[macro]}, len(rows)


def rows_unseen_by(
    registry: Registry, run_id: str | None, test: pd.DataFrame
) -> tuple[pd.DataFrame, Comparison]:
    """The rows of ``test`` whose text is in neither the train nor the validation split of
    training run ``run_id`` (the champion's), and how many were left out. A run whose splits
    cannot be read leaves every row in, and the comparison says so."""
    try:
        if not run_id:
            raise RegistryError("no training run")
        parts = load_splits(registry.client, run_id, ("train", "validation"), columns=["text"])
    except (RegistryError, MlflowException, OSError):
        return test, Comparison(rows=len(test), excluded=0, known=False)
    seen = set(parts["train"]["text"]) | set(parts["validation"]["text"])
    rows = test[~test["text"].isin(seen)]
    return rows, Comparison(rows=len(rows), excluded=len(test) - len(rows))


def _register(
    registry: Registry, recipe: Recipe, classifier: TextClassifier, test: pd.DataFrame, run_id: str
) -> str:
    info = log_classifier(classifier, test["text"].head(2).tolist(), recipe.pip_requirements())
    client = registry.client
    if not registry.exists():
        client.create_registered_model(registry.name)
    mv = client.create_model_version(
        registry.name, source=info.model_uri, run_id=run_id, model_id=info.model_id
    )
    return str(mv.version)


def record_artifacts(settings: Settings, registry: Registry, version: str) -> FileHashes:
    """Record the SHA-256 and size of every file of ``version`` in the loopml database (serving
    loads nothing that differs). Run right after the version is created, by the process that
    uploaded it; ``RegistryError`` if the files cannot be read back."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"models:/{registry.name}/{version}"
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
            files = hash_tree(Path(path))
        except (MlflowException, OSError, ValueError) as exc:
            raise RegistryError(f"cannot read back {uri} to record its hashes: {exc}") from exc
    with open_settings_store(settings) as store:
        store.record_artifacts(registry.name, version, files)
    return files


def _register_recorded(
    settings: Settings,
    registry: Registry,
    recipe: Recipe,
    classifier: TextClassifier,
    test: pd.DataFrame,
    run_id: str,
) -> str:
    """Register, then record the artifact hashes; a version whose hashes cannot be recorded is
    deleted again (serving in production would refuse it anyway)."""
    version = _register(registry, recipe, classifier, test, run_id)
    try:
        record_artifacts(settings, registry, version)
    except LoopmlError:
        # The error being raised says more than a failed clean-up would.
        with contextlib.suppress(MlflowException):
            registry.client.delete_model_version(registry.name, version)
        raise
    return version


def record_gate(
    registry: Registry,
    run_id: str,
    version: str,
    gate: GateResult,
    evaluation: Evaluation,
    champion_eval: Evaluation | None,
) -> None:
    """Write the gate verdict and numbers to the run (tags, JSON) and to the model version."""
    client = registry.client
    payload = {
        "gate": gate.to_dict(),
        "candidate": evaluation.to_dict(),
        "champion": champion_eval.to_dict() if champion_eval else None,
    }
    client.log_dict(run_id, payload, "gate.json")
    tags = {
        GATE_TAG: gate.verdict,
        "loopml.gate.champion": gate.champion_version or "none",
        "loopml.gate.failed_checks": ",".join(c.name for c in gate.failures()) or "none",
        "loopml.macro_f1": f"{evaluation.metrics['macro_f1']:.4f}",
    }
    if gate.comparison is not None:
        tags["loopml.gate.compared_rows"] = str(gate.comparison.rows)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    registry.set_tags(version, tags)


def train(
    settings: Settings,
    *,
    source: str | None = None,
    recipe: str | None = None,
    params: Mapping[str, Any] | None = None,
    tune_trials: int = 0,
    tune_timeout_s: float = 600.0,
    tune_min_gain: float = 0.0,
    dataset: Dataset | None = None,
    splits: Splits | None = None,
    search_splits: Splits | None = None,
    progress: Progress | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> TrainResult:
    """Run the whole pipeline and register the model; the gate verdict is tagged, not enforced.

    ``recipe`` None reuses the champion's recipe and parameters (``params`` override some), or
    the default recipe without a champion. ``tune_trials`` > 0 first searches the recipe's space
    on the validation split (nested runs) and trains with the best parameters (those of the start
    unless the best beats them by more than ``tune_min_gain``). ``splits`` (with
    ``dataset``) fixes the split, as retraining does to keep the original test split;
    ``search_splits`` are what the search scores its trials on when that differs from what the
    model is fitted on (a retrain holds part of its new labels for the search, then fits on all
    of them); ``tags`` are added to the run (for example what triggered it).
    """
    say = progress or (lambda _step: None)
    start = time.perf_counter()
    registry = Registry(settings)
    choice = choose_recipe(registry, recipe, params)  # bad parameters fail before any work
    recipe_obj, reason = choice.recipe, choice.reason
    if dataset is None:
        say("validate")
        dataset = load_dataset(
            source or settings.data_source,
            text_column=settings.text_column,
            label_column=settings.label_column,
            rules=DataRules.from_settings(settings),
        )
    if splits is None:
        say("split")
        splits = split_dataset(
            dataset,
            seed=settings.seed,
            test_size=settings.test_size,
            validation_size=settings.validation_size,
        )
    exp = experiment_id(settings, registry.client)
    name = recipe_obj.name
    tuning = None
    with mlflow.start_run(
        experiment_id=exp, run_name=run_name or f"train-{name}", tags=run_tags()
    ) as run:
        mlflow.set_tags(
            {
                "loopml.dataset_version": dataset.version,
                "loopml.recipe": name,
                "loopml.source": dataset.source,
                **code_tags(),  # the code that trained it: version, commit, dirty flag
                **(tags or {}),
            }
        )
        if dataset.notes:
            mlflow.set_tag("loopml.data_notes", "; ".join(dataset.notes))
        with tempfile.TemporaryDirectory() as tmp:
            _log_data(dataset, splits, Path(tmp))
        if tune_trials > 0:
            say(f"tune ({tune_trials} trials)")
            tuning = search(
                recipe_obj,
                search_splits or splits,
                experiment=exp,
                trials=tune_trials,
                timeout_s=tune_timeout_s,
                seed=settings.seed,
                min_gain=tune_min_gain,
            )
            recipe_obj = type(recipe_obj)(tuning.best_params)
            reason += (
                f"; tuned: best of {tuning.trials} trials, validation macro-F1 "
                f"{tuning.best_macro_f1:.4f} (start {tuning.start_macro_f1:.4f})"
            )
        recipe_params = recipe_obj.params_dict()
        mlflow.set_tag("loopml.recipe_reason", reason)
        mlflow.log_params(
            {
                "recipe": name,
                "seed": settings.seed,
                "dataset_version": dataset.version,
                **{f"recipe.{k}": v for k, v in recipe_params.items()},
            }
        )
        say("fit")
        t0 = time.perf_counter()
        fit = fit_checked(recipe_obj, splits.train["text"].tolist(), splits.train["label"].tolist())
        classifier = fit.classifier
        fit_seconds = time.perf_counter() - t0
        mlflow.set_tag(CONVERGED_TAG, str(fit.converged).lower())
        # A sample: enough to meet NaN weights, cheap for slow recipes (MiniLM: ~130 texts/s).
        check_finite(classifier, splits.test["text"].head(_FINITE_SAMPLE).tolist())
        model_bytes = len(pickle.dumps(classifier))
        mlflow.log_metric("model_bytes", float(model_bytes))
        check_size(settings, model_bytes)
        say("evaluate")
        evaluation = evaluate(classifier, splits.test, seed=settings.seed)
        with_baselines(evaluation, splits.train, splits.test, seed=settings.seed)
        mlflow.log_metrics(evaluation.flat_metrics() | {"fit_seconds": fit_seconds})
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_confusion_matrix(
                evaluation,
                Path(tmp) / "confusion_matrix.png",
                title=f"{name} on {dataset.version[:8]}",
            )
            mlflow.log_artifact(str(png))
        mlflow.log_dict(evaluation.behavioral.to_dict(), "behavioral.json")
        say("register")
        version = _register_recorded(
            settings, registry, recipe_obj, classifier, splits.test, run.info.run_id
        )
        registry.set_tags(
            version,
            {
                "loopml.dataset_version": dataset.version,
                RECIPE_TAG: name,
                RECIPE_PARAMS_TAG: json.dumps(recipe_params, sort_keys=True),
                CONVERGED_TAG: str(fit.converged).lower(),
                **code_tags(),
            },
        )
        say("gate")
        gate, champion_eval = gate_against_champion(
            settings,
            registry,
            evaluation,
            splits.test,
            model=classifier,
            seen=set(splits.train["text"]) | set(splits.validation["text"]),
            exclude_version=version,
        )
        if not fit.converged:
            flag_unconverged(gate, fit.warning)
        record_gate(registry, run.info.run_id, version, gate, evaluation, champion_eval)
    return TrainResult(
        run_id=run.info.run_id,
        version=version,
        dataset_version=dataset.version,
        split_sizes=splits.sizes(),
        evaluation=evaluation,
        gate=gate,
        fit_seconds=fit_seconds,
        model_bytes=model_bytes,
        total_seconds=time.perf_counter() - start,
        recipe=name,
        recipe_params=recipe_params,
        recipe_reason=reason,
        tuning=tuning,
        converged=fit.converged,
        data_notes=dataset.notes,
    )


def evaluate_version(settings: Settings, version: str) -> tuple[Evaluation, GateResult]:
    """Re-evaluate a registered version on its own test split and re-run its gate."""
    registry = Registry(settings)
    mv = registry.version(version)
    if not mv.run_id:
        raise RegistryError(f"version {version} has no training run: cannot find its test split")
    try:
        parts = load_splits(registry.client, mv.run_id, ["train", "validation", "test"])
    except MlflowException as exc:
        raise RegistryError(
            f"version {version}: its data splits are missing: {exc.message}"
        ) from exc
    test = parts["test"]
    model = registry.load(str(mv.version))
    evaluation = evaluate(model, test, seed=settings.seed)
    with_baselines(evaluation, parts["train"], test, seed=settings.seed)
    seen = set(parts["train"]["text"]) | set(parts["validation"]["text"])
    gate, champion_eval = gate_against_champion(
        settings,
        registry,
        evaluation,
        test,
        exclude_version=str(mv.version),
        model=model,
        seen=seen,
    )
    if mv.tags.get(CONVERGED_TAG) == "false":
        flag_unconverged(gate, "the solver stopped at its iteration limit when it was trained")
    record_gate(registry, mv.run_id, str(mv.version), gate, evaluation, champion_eval)
    return evaluation, gate

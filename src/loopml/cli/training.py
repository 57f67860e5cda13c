"""``loopml train|tune|recipes|evaluate|explain``: make model versions and look at them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from loopml.cli import render
from loopml.cli.common import (
    ChampionRecipeOpt,
    DropDuplicatesOpt,
    JsonOpt,
    ParamOpt,
    RecipeOpt,
    SourceOpt,
    cli_settings,
    console,
    emit_json,
    handle_errors,
    parse_params,
    quiet_stdout,
    recipe_name,
    steps,
)
from loopml.cli.release import release

__all__ = ["evaluate", "explain", "recipes", "train", "tune"]


@handle_errors
def train(
    source: SourceOpt = None,
    recipe: RecipeOpt = None,
    param: ParamOpt = None,
    tune: Annotated[
        int,
        typer.Option(
            "--tune",
            min=0,
            help="First search the recipe's space with N Optuna trials on the validation split.",
        ),
    ] = 0,
    tune_timeout: Annotated[
        float, typer.Option(min=1, help="Time budget of --tune in seconds.")
    ] = 600,
    promote: Annotated[
        bool,
        typer.Option(help="If the gate passes, start a canary (the first version: champion)."),
    ] = False,
    drop_duplicates: DropDuplicatesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Validate, split, (tune,) train, evaluate, gate and register a new model version.

    Without --recipe it trains tfidf-logreg with its defaults, champion or not;
    `--recipe champion` reuses the champion's recipe and parameters (as retraining does).
    """
    from loopml.pipeline.choice import DEFAULT_RECIPE
    from loopml.pipeline.train import train as run_train

    settings = cli_settings(drop_duplicates=drop_duplicates)
    with quiet_stdout(json_out), steps("training", enabled=not json_out) as say:
        result = run_train(
            settings,
            source=source,
            recipe=recipe_name(recipe, DEFAULT_RECIPE),
            params=parse_params(param or []),
            tune_trials=tune,
            tune_timeout_s=tune_timeout,
            progress=say,
        )
        released = None
        if promote and result.gate.passed:
            released = release(settings, result.version, direct=False, reason="train --promote")
    summary = result.to_dict() | {
        "promoted": released is not None and released.change is not None,
        "release": released.to_dict() if released is not None else None,
    }
    if json_out:
        emit_json(summary)
    else:
        render.trained(settings.model_name, result, released)
    if not result.gate.passed:
        raise typer.Exit(1)


@handle_errors
def tune(
    source: SourceOpt = None,
    recipe: ChampionRecipeOpt = None,
    param: ParamOpt = None,
    trials: Annotated[int, typer.Option(min=1, help="Maximum number of trials.")] = 20,
    timeout: Annotated[float, typer.Option(min=1, help="Time budget in seconds.")] = 600,
    json_out: JsonOpt = False,
) -> None:
    """Search a recipe's own parameter space with Optuna (nested runs, scored on validation).

    Starts from the champion's recipe and parameters unless --recipe/--param say otherwise.
    """
    from rich.progress import BarColumn

    from loopml.pipeline.tune import tune as run_tune

    settings = cli_settings()
    with (
        quiet_stdout(json_out),
        Progress(
            TextColumn("tuning"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            disable=json_out,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("", total=trials)

        def on_trial(number: int, score: float) -> None:
            bar.update(task, advance=1, description=f"last macro-F1 {score:.4f}")

        result = run_tune(
            settings,
            source=source,
            recipe=recipe_name(recipe, None),
            params=parse_params(param or []),
            trials=trials,
            timeout_s=timeout,
            on_trial=on_trial,
        )
    if json_out:
        emit_json(result.to_dict())
        return
    render.tuned(result)


@handle_errors
def recipes(json_out: JsonOpt = False) -> None:
    """List the training recipes: built-ins and installed plug-ins, with their parameters."""
    from loopml.recipes import describe_recipes

    found = describe_recipes()
    if json_out:
        emit_json(found)
        return
    render.recipes(found)


@handle_errors
def evaluate(
    version: Annotated[str, typer.Argument(help="Registered model version.")],
    json_out: JsonOpt = False,
) -> None:
    """Re-evaluate VERSION on its test split against the champion; exit 1 if the gate fails."""
    from loopml.pipeline.train import evaluate_version

    settings = cli_settings()
    with quiet_stdout(json_out), steps(f"evaluating version {version}", enabled=not json_out):
        evaluation, gate = evaluate_version(settings, version)
    if json_out:
        emit_json(
            {
                "version": version,
                "metrics": evaluation.flat_metrics(),
                "gate": gate.to_dict(),
                "behavioral": evaluation.behavioral.to_dict(),
            }
        )
    else:
        render.evaluated(version, evaluation, gate)
    if not gate.passed:
        raise typer.Exit(1)


@handle_errors
def explain(
    version: Annotated[str, typer.Argument(help="Model version (a number, or champion).")],
    text: Annotated[str, typer.Argument(help="The text to explain.")],
    top: Annotated[int, typer.Option(min=1, help="Tokens shown per class and direction.")] = 5,
    json_out: JsonOpt = False,
) -> None:
    """Which tokens drove VERSION's answer on TEXT, per class (leave-one-token-out occlusion)."""
    from loopml.pipeline.explain import explain_version

    with quiet_stdout(json_out):
        result = explain_version(cli_settings(), version, text, top=top)
    if json_out:
        emit_json(result.to_dict())
        return
    render.explanation(result.to_dict())

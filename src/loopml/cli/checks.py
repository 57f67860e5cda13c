"""``loopml check skew|features|offline-online``: checks on a served model or the default
recipe (exit 1 when one fails)."""

from __future__ import annotations

from typing import Annotated

import typer

from loopml.cli import render
from loopml.cli.common import (
    JsonOpt,
    SourceOpt,
    cli_settings,
    console,
    emit_json,
    handle_errors,
    load_data,
    quiet_stdout,
)

__all__ = ["check_app"]

check_app = typer.Typer(
    help="Checks on a served model or the default recipe (exit 1 when one fails).",
    no_args_is_help=True,
)


@check_app.command("skew")
@handle_errors
def check_skew(
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="Model version whose predictions to check.",
            show_default="the champion",
        ),
    ] = None,
    sample: Annotated[
        int, typer.Option("--sample", "-n", min=1, help="The newest N logged predictions.")
    ] = 1000,
    json_out: JsonOpt = False,
) -> None:
    """Training/serving skew: recompute logged predictions with the registered model.

    Exit codes: 0 every logged probability matches within LOOPML_SKEW_TOLERANCE, 1 skew found,
    2 bad usage or settings.
    """
    from loopml.monitoring.skew import check_skew as run_check

    settings = cli_settings()
    with quiet_stdout(json_out), console.status("checking skew"):
        report = run_check(settings, version=version, sample=sample)
    if json_out:
        emit_json(report.to_dict())
    else:
        render.skew(report)
    raise typer.Exit(0 if report.passed else 1)


@check_app.command("features")
@handle_errors
def check_features(
    source: SourceOpt = None,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample", "-n", min=100, help="A stratified sample of N rows.", show_default="all"
        ),
    ] = None,
    folds: Annotated[
        int, typer.Option("--folds", "-k", min=2, max=10, help="Cross-validation folds.")
    ] = 2,
    level: Annotated[
        float,
        typer.Option(min=0.5, max=0.999, help="Confidence of each feature's lower bound."),
    ] = 0.95,
    seed: Annotated[int | None, typer.Option(help="Folds, sample and bootstrap seed.")] = None,
    kept_only: Annotated[
        bool, typer.Option("--kept-only", help="Only the groups the defaults switch on.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Does each feature group of tfidf-logreg help? Each is switched on and off on the same
    cross-validation folds; the gain in macro-F1 over the out-of-fold predictions of every row,
    with a one-sided lower bound from a paired bootstrap over rows.

    Exit codes: 0 every feature the default recipe keeps helps (lower bound above 0), 1 a kept
    feature does not, 2 bad usage or bad data.
    """
    from loopml.errors import DataError
    from loopml.pipeline.ablation import feature_evidence, kept_features

    dataset = load_data(source, None, None, None)
    seed = cli_settings().seed if seed is None else seed
    frame = dataset.frame
    if sample is not None and sample < len(frame):
        from sklearn.model_selection import train_test_split

        try:
            frame, _ = train_test_split(
                frame, train_size=sample, random_state=seed, stratify=frame["label"]
            )
        except ValueError as exc:
            raise DataError(f"--sample {sample}: {exc}") from None
    with console.status(f"fitting tfidf-logreg variants on {len(frame)} rows, {folds} folds"):
        report = feature_evidence(
            frame["text"].tolist(),
            frame["label"].tolist(),
            folds=folds,
            seed=seed,
            level=level,
            features=kept_features() if kept_only else None,
        )
    if json_out:
        emit_json(report.to_dict() | {"data": dataset.source})
    else:
        render.feature_evidence(report, folds=folds, level=level)
    raise typer.Exit(0 if report.passed else 1)


@check_app.command("offline-online")
@handle_errors
def check_offline_online(
    last: Annotated[
        int | None,
        typer.Option(
            "--last",
            "-n",
            min=1,
            help="The newest N ended rollouts (promoted or rolled back).",
            show_default="LOOPML_OFFLINE_ONLINE_ROLLOUTS",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Does the gate's offline delta predict the canary's live one? Per ended rollout: the
    challenger's offline macro-F1 minus the champion's (the gate's) beside the same on the
    labelled rollout traffic; their sign agreement and correlation.

    Exit codes: 0 agreement, or fewer than 3 measured rollouts; 1 most measured rollouts
    disagree in sign; 2 bad usage or settings.
    """
    from loopml.monitoring.offline_online import MIN_POINTS, agreement
    from loopml.store import open_settings_store

    settings = cli_settings()
    with open_settings_store(settings) as store:
        found = agreement(store, settings.model_name, last=last or settings.offline_online_rollouts)
    if json_out:
        emit_json(found.to_dict())
    else:
        render.offline_online(found, min_points=MIN_POINTS)
    raise typer.Exit(1 if found.alarm else 0)

"""The ``loopml`` command line: parses, calls stage functions, renders with Rich or JSON.

Exit codes: 0 ok, 1 a gate or check failed, 2 bad usage or bad data.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopml._time import as_utc
from loopml.batch.cli import batch_app
from loopml.config import Settings, load_settings
from loopml.errors import LoopmlError, RequestError, TrainingError
from loopml.labels.cli import label_app
from loopml.labels.review_cli import register_review

if TYPE_CHECKING:
    from loopml.control import Tick
    from loopml.monitoring import MonitorSummary

__all__ = ["app", "main", "parse_since"]

app = typer.Typer(
    help="loopml: train, gate, register, serve, monitor and roll out text classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Validate and describe datasets; purge and forget logged data.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
rollout_app = typer.Typer(help="Shadow and canary rollouts of a challenger.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")
feedback_app = typer.Typer(help="Feedback labels: audited corrections.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
register_review(feedback_app)  # held, accept, reject: labels the noise check held back
check_app = typer.Typer(
    help="Checks on a served model or the default recipe (exit 1 when one fails).",
    no_args_is_help=True,
)
app.add_typer(check_app, name="check")
db_app = typer.Typer(
    help="The loopml database's schema: upgrade it, show or check its revision.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(batch_app, name="batch")
app.add_typer(label_app, name="label")

console = Console(stderr=True, soft_wrap=True)
out = Console()


@app.callback()
def _main(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="The registered model every command acts on (sets LOOPML_MODEL_NAME).",
            show_default="LOOPML_MODEL_NAME, else sentiment",
        ),
    ] = None,
) -> None:
    """loopml: train, gate, register, serve, monitor and roll out text classifiers."""
    if model is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", model):
            console.print(
                f"[bold red]error:[/] --model {escape(model)!r}: use letters, digits, . _ -"
            )
            raise typer.Exit(2)
        # the environment, not an argument: servers' worker processes and sub-apps read it too;
        # put back when the command ends (the app may run in-process, as in tests)
        previous = os.environ.get("LOOPML_MODEL_NAME")
        os.environ["LOOPML_MODEL_NAME"] = model
        ctx.call_on_close(functools.partial(_restore_env, "LOOPML_MODEL_NAME", previous))


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="builtin:tweets or a .csv/.parquet/.jsonl file.",
        show_default="LOOPML_DATA_SOURCE",
    ),
]
DropDuplicatesOpt = Annotated[
    bool,
    typer.Option(
        "--drop-duplicates",
        help="Keep each repeated text once, with the label most of its rows give (a tie is"
        " refused, naming the rows). Default: refuse repeated texts (LOOPML_DATA_DROP_DUPLICATES).",
    ),
]
F = TypeVar("F", bound=Callable[..., Any])


class RolloutMode(enum.StrEnum):
    """How a challenger meets live traffic."""

    canary = "canary"
    shadow = "shadow"


def _settings(*, drop_duplicates: bool = False) -> Settings:
    settings = load_settings().prepare()
    settings = settings.for_model(settings.model_name)  # its [models.<name>] section of loopml.toml
    if drop_duplicates:
        settings = settings.model_copy(update={"data_drop_duplicates": True})
    return settings


def _tracking_outage(exc: Exception) -> LoopmlError | None:
    if "mlflow" not in sys.modules:
        return None  # MLflow was never loaded: the error cannot be its store's
    from loopml.tracking import tracking_unavailable

    return tracking_unavailable(exc)


def handle_errors(fn: F) -> F:
    """Turn LoopmlError into a one-paragraph message and its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except Exception as exc:
            # A locked or unreachable MLflow store, wherever MLflow noticed it (and whatever
            # wrapped it): one line and exit 2, never SQLAlchemy's statement and traceback.
            error = _tracking_outage(exc) or exc
            if isinstance(error, LoopmlError):
                console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
                raise typer.Exit(error.exit_code) from None
            # Last resort (a store outage inside a library): one line, never a traceback.
            first = str(exc).splitlines()[0] if str(exc) else ""
            console.print(
                f"[bold red]error:[/] {type(exc).__name__}: {escape(first)[:500]}",
                highlight=False,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def emit_json(obj: Any) -> None:
    """Write ``obj`` as JSON on stdout."""
    sys.stdout.write(json.dumps(obj, default=str, indent=2) + "\n")


@contextlib.contextmanager
def quiet_stdout(json_out: bool) -> Iterator[None]:
    """In --json mode, keep libraries' prints (MLflow's) off stdout so it stays parseable."""
    if json_out:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    else:
        yield


@contextlib.contextmanager
def steps(title: str, *, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A Rich spinner showing the current pipeline step; yields the callback to advance it."""
    if not enabled:
        yield lambda _step: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(title, total=None)
        yield lambda step: progress.update(task, description=f"{title}: {step}")


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TrainingError(f"--param expects KEY=VALUE, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


RecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        "-r",
        help="Recipe (see `loopml recipes`); `champion` reuses the champion's recipe and params.",
        show_default="tfidf-logreg",
    ),
]
ChampionRecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        "-r",
        help="Recipe to tune (see `loopml recipes`).",
        show_default="the champion's recipe and params, else tfidf-logreg",
    ),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Recipe parameter KEY=VALUE (repeatable), e.g. -p C=2."),
]


def _recipe(value: str | None, default: str | None) -> str | None:
    """The recipe name for the pipeline; None means reuse the champion's."""
    if value == "champion":
        return None
    return value or default


def _labels(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


# ---------------------------------------------------------------- data


def _load(
    source: str | None,
    text_column: str | None,
    label_column: str | None,
    labels: list[str] | None,
    drop_duplicates: bool = False,
) -> Any:
    from loopml.data import DataRules, load_dataset

    settings = _settings(drop_duplicates=drop_duplicates)
    return load_dataset(
        source or settings.data_source,
        text_column=text_column or settings.text_column,
        label_column=label_column or settings.label_column,
        labels=labels,
        rules=DataRules.from_settings(settings),
    )


@data_app.command("validate")
@handle_errors
def data_validate(
    source: Annotated[str | None, typer.Argument(help="builtin:tweets or a data file.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Column holding the label.")] = None,
    labels: Annotated[str | None, typer.Option(help="Allowed labels, comma-separated.")] = None,
    drop_duplicates: DropDuplicatesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Check a dataset against every rule; exit 2 with the problems and example rows."""
    dataset = _load(source, text_column, label_column, _labels(labels), drop_duplicates)
    summary = {"valid": True, **dataset.describe()}
    if json_out:
        emit_json(summary)
        return
    for note in dataset.notes:
        out.print(f"note: {note}")
    out.print(
        f"[green]valid[/]: {dataset.source}: {len(dataset.frame)} rows, "
        f"{len(dataset.labels)} classes, version {dataset.version}"
    )


@data_app.command("describe")
@handle_errors
def data_describe(
    source: Annotated[str | None, typer.Argument(help="builtin:tweets or a data file.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Column holding the text.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Column holding the label.")] = None,
    drop_duplicates: DropDuplicatesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Rows, version, class and domain counts and text lengths of a dataset."""
    dataset = _load(source, text_column, label_column, None, drop_duplicates)
    info = dataset.describe()
    if json_out:
        emit_json(info)
        return
    table = Table(title=f"{dataset.source} (version {dataset.version}, {info['rows']} rows)")
    table.add_column("kind")
    table.add_column("value")
    table.add_column("rows", justify="right")
    for kind in ("labels", "domains"):
        counts = info[kind]
        assert isinstance(counts, dict)
        for name, count in counts.items():
            table.add_row(kind[:-1], str(name), str(count))
    out.print(table)
    out.print(f"text length: {info['text_length']}")


@data_app.command("purge")
@handle_errors
def data_purge(
    older_than: Annotated[
        float | None,
        typer.Option(help="Delete what is older than this many days (LOOPML_RETENTION_DAYS)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete logged predictions, their feedback and report files past the retention period."""
    from loopml.data.privacy import purge

    counts = purge(_settings(), older_than_days=older_than)
    if json_out:
        emit_json(counts)
        return
    out.print(
        f"purged data older than {counts['older_than_days']:g} days: "
        f"{counts['predictions']} predictions, {counts['feedback']} feedback labels, "
        f"{counts['report_files']} report files, "
        f"{counts['split_rows']} feedback rows of {len(counts['split_runs'])} training runs' splits"
    )


@data_app.command("forget")
@handle_errors
def data_forget(
    key_id: Annotated[
        str | None, typer.Option(help="API key id: its feedback and the predictions it labelled.")
    ] = None,
    request_id: Annotated[
        list[str] | None, typer.Option("--request-id", help="A request id (repeatable).")
    ] = None,
    text: Annotated[
        list[str] | None, typer.Option("--text", help="An exact text (repeatable).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Delete one subject's predictions and feedback; audited (counts only)."""
    from loopml.data.privacy import forget

    counts = forget(
        _settings(),
        key_id=key_id,
        request_ids=request_id or [],
        texts=text or [],
        reason=reason,
    )
    if json_out:
        emit_json(counts)
        return
    out.print(
        f"deleted {counts['predictions']} predictions, {counts['feedback']} feedback labels, "
        f"{counts['split_rows']} rows of {len(counts['split_runs'])} training runs' splits"
    )
    missing = counts["request_ids_not_found"]
    if missing:
        out.print(
            f"{len(missing)} request id(s) not in the log (unknown, already deleted, or not "
            f"written yet: run again in a minute): {', '.join(missing[:10])}",
            highlight=False,
        )


# ---------------------------------------------------------------- training


def _gate_table(gate: Any) -> Table:
    title = f"gate: {gate.verdict.upper()} (champion: {gate.champion_version or 'none'}"
    if gate.comparison is not None:
        title += f", compared {gate.comparison.describe()}"
    table = Table(title=title + ")")
    for col in ("check", "value", "threshold", "result", "detail"):
        table.add_column(col)
    for c in gate.checks:
        mark = "[green]pass[/]" if c.passed else "[red]FAIL[/]"
        table.add_row(c.name, f"{c.value:g}", f"{c.threshold:g}", mark, c.detail)
    return table


@app.command()
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

    settings = _settings(drop_duplicates=drop_duplicates)
    with quiet_stdout(json_out), steps("training", enabled=not json_out) as say:
        result = run_train(
            settings,
            source=source,
            recipe=_recipe(recipe, DEFAULT_RECIPE),
            params=_parse_params(param or []),
            tune_trials=tune,
            tune_timeout_s=tune_timeout,
            progress=say,
        )
        released = None
        if promote and result.gate.passed:
            released = _release(settings, result.version, direct=False, reason="train --promote")
    summary = result.to_dict() | {
        "promoted": released is not None and released.change is not None,
        "release": released.to_dict() if released is not None else None,
    }
    if json_out:
        emit_json(summary)
    else:
        m = result.evaluation.metrics
        for note in result.data_notes:
            out.print(f"note: {note}")
        out.print(
            f"registered [bold]{settings.model_name}[/] version [bold]{result.version}[/] "
            f"(run {result.run_id}, data {result.dataset_version})"
        )
        out.print(
            f"recipe {result.recipe} {result.recipe_params} ({escape(result.recipe_reason)})",
            highlight=False,
        )
        out.print(
            f"test macro-F1 {m['macro_f1']:.4f}, accuracy {m['accuracy']:.4f}; "
            f"fit {result.fit_seconds:.1f}s, total {result.total_seconds:.1f}s"
        )
        out.print(_gate_table(result.gate))
        if released is not None:
            out.print(_release_line(released))
    if not result.gate.passed:
        raise typer.Exit(1)


@app.command()
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

    settings = _settings()
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
            recipe=_recipe(recipe, None),
            params=_parse_params(param or []),
            trials=trials,
            timeout_s=timeout,
            on_trial=on_trial,
        )
    if json_out:
        emit_json(result.to_dict())
        return
    found = result.search
    out.print(
        f"{found.recipe} ({escape(result.reason)}): {found.trials} trials in "
        f"{result.seconds:.0f}s; validation macro-F1 {found.best_macro_f1:.4f} with "
        f"{found.best_params} (start {found.start_macro_f1:.4f})",
        highlight=False,
    )
    flags = " ".join(f"-p {k}={v}" for k, v in found.best_params.items())
    out.print(f"train it: [bold]loopml train --recipe {found.recipe} {flags}[/]", highlight=False)


@app.command()
@handle_errors
def recipes(json_out: JsonOpt = False) -> None:
    """List the training recipes: built-ins and installed plug-ins, with their parameters."""
    from loopml.recipes import describe_recipes

    found = describe_recipes()
    if json_out:
        emit_json(found)
        return
    table = Table("recipe", "source", "extra", "parameters (defaults)")
    for r in found:
        params = r["error"] or ", ".join(f"{k}={v}" for k, v in r["parameters"].items())
        table.add_row(r["name"], r["source"], r["extra"] or "", escape(params))
    out.print(table)


@app.command()
@handle_errors
def evaluate(
    version: Annotated[str, typer.Argument(help="Registered model version.")],
    json_out: JsonOpt = False,
) -> None:
    """Re-evaluate VERSION on its test split against the champion; exit 1 if the gate fails."""
    from loopml.pipeline.train import evaluate_version

    settings = _settings()
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
        out.print(
            f"version {version}: macro-F1 {evaluation.metrics['macro_f1']:.4f}, "
            f"behavioral pass rate {evaluation.behavioral.pass_rate:.3f}"
        )
        out.print(_gate_table(gate))
    if not gate.passed:
        raise typer.Exit(1)


@app.command()
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
        result = explain_version(_settings(), version, text, top=top)
    if json_out:
        emit_json(result.to_dict())
        return
    _render_explanation(result.to_dict())


def _render_explanation(doc: dict[str, Any]) -> None:
    # Each token coloured by its pull on the predicted label: green towards, red away.
    label = doc["label"]
    line = []
    for token in doc["tokens"]:
        weight = token["attribution"][label]
        style = "green" if weight > 0.005 else "red" if weight < -0.005 else "dim"
        line.append(f"[{style}]{escape(token['token'])}[/]")
    out.print(
        f"version {doc['model_version']} says [bold]{escape(label)}[/] "
        f"({doc['probabilities'][label]:.1%}):  " + " ".join(line)
    )
    table = Table(title="occlusion: probability drop when the token is deleted")
    for col in ("class", "probability", "towards", "away"):
        table.add_column(col)
    for name, info in doc["classes"].items():
        towards = (f"[green]{escape(r['token'])}[/] {r['weight']:+.3f}" for r in info["towards"])
        away = (f"[red]{escape(r['token'])}[/] {r['weight']:+.3f}" for r in info["away"])
        table.add_row(
            escape(name), f"{info['probability']:.3f}", ", ".join(towards), ", ".join(away)
        )
    out.print(table)
    if doc["linear"]:
        linear = Table(title="linear model: tf-idf weight x coefficient per term")
        for col in ("class", "towards", "away"):
            linear.add_column(col)
        for name, info in doc["linear"].items():
            linear.add_row(
                escape(name),
                ", ".join(f"{escape(r['term'])} {r['weight']:+.2f}" for r in info["towards"]),
                ", ".join(f"{escape(r['term'])} {r['weight']:+.2f}" for r in info["away"]),
            )
        out.print(linear)


# ---------------------------------------------------------------- registry


def _release(settings: Settings, version: str, *, direct: bool, reason: str) -> Any:
    from loopml import control
    from loopml.registry import Registry
    from loopml.store import open_settings_store

    with open_settings_store(settings) as store:
        return control.release(
            settings, store, Registry(settings), version, direct=direct, reason=reason
        )


def _release_line(result: Any) -> str:
    if result.how == "canary":
        r = result.routing
        return (
            f"canary started: version {r.challenger} gets {r.weight:.0%} of traffic against "
            f"champion {r.champion}; the controller (`loopml controller`) promotes or rolls it "
            "back by its live analysis (`loopml rollout status` to follow it)"
        )
    change = result.change
    what = "first champion" if result.how == "first_champion" else "direct promotion, audited"
    return f"champion: {change.from_version or 'none'} -> [bold]{change.to_version}[/] ({what})"


@app.command()
@handle_errors
def promote(
    version: Annotated[str, typer.Argument(help="Registered model version.")],
    direct: Annotated[
        bool,
        typer.Option(
            "--direct",
            "--force",
            help="Skip the canary: champion now, even if the gate failed (needs --reason).",
        ),
    ] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --direct).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Start a canary rollout of VERSION (the controller promotes it if its live analysis
    passes); --direct --reason makes it the champion at once. A first version becomes champion."""
    settings = _settings()
    with quiet_stdout(json_out):  # --direct without --reason: a RequestError, exit 2
        result = _release(settings, version, direct=direct, reason=reason)
    if json_out:
        emit_json(result.to_dict())
        return
    out.print(_release_line(result))


@app.command()
@handle_errors
def approve(
    version: Annotated[str, typer.Argument(help="Registered model version.")],
    by: Annotated[str, typer.Option("--by", help="Who reviewed the recipe and parameters.")],
    json_out: JsonOpt = False,
) -> None:
    """Approve VERSION's recipe and parameters after review: a version that changes the
    champion's cannot start a rollout or be promoted without it (recorded in the audit log)."""
    from loopml import control
    from loopml.registry import Registry
    from loopml.store import open_settings_store

    settings = _settings()
    with open_settings_store(settings) as store, quiet_stdout(json_out):
        record = control.approve(store, Registry(settings), version, by=by)
    if json_out:
        emit_json(record)
        return
    change = record["change"]
    what = "the champion's spec, unchanged" if change is None else f"changes {change}"
    out.print(f"version {record['version']} approved by {record['by']} ({what})", highlight=False)


@app.command()
@handle_errors
def rollback(
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Give the champion alias back to the previous version."""
    from loopml import control
    from loopml.registry import Registry
    from loopml.store import open_settings_store

    settings = _settings()
    with (
        open_settings_store(settings) as store,
        quiet_stdout(json_out),
    ):
        change = control.rollback(store, Registry(settings), reason=reason)
    if json_out:
        emit_json(vars(change))
        return
    out.print(f"rolled back: champion {change.from_version} -> [bold]{change.to_version}[/]")


@app.command()
@handle_errors
def models(json_out: JsonOpt = False) -> None:
    """Registered versions with their aliases, gate verdicts and test macro-F1."""
    from loopml.registry import Registry

    settings = _settings()
    registry = Registry(settings)
    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        by_version.setdefault(version, []).append(alias)
    rows: list[dict[str, Any]] = [
        {
            "version": str(v.version),
            "aliases": sorted(by_version.get(str(v.version), [])),
            "gate": v.tags.get("loopml.gate", "not run"),
            "macro_f1": v.tags.get("loopml.macro_f1"),
            "dataset_version": v.tags.get("loopml.dataset_version"),
            "recipe": v.tags.get("loopml.recipe"),
            "run_id": v.run_id,
            "created": v.creation_timestamp,
        }
        for v in registry.versions()
    ]
    if json_out:
        emit_json(rows)
        return
    table = Table(title=f"model {settings.model_name}")
    for col in ("version", "aliases", "gate", "macro-F1", "dataset", "recipe", "run"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["version"],
            ", ".join(r["aliases"]),
            r["gate"],
            r["macro_f1"] or "",
            r["dataset_version"] or "",
            r["recipe"] or "",
            (r["run_id"] or "")[:8],
        )
    out.print(table)


@app.command()
@handle_errors
def history(
    limit: Annotated[int, typer.Option(min=1, help="How many entries, newest first.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The audit log: every promotion, rollback and rollout decision."""
    from loopml.store import open_settings_store

    settings = _settings()
    with open_settings_store(settings) as store:
        entries = store.history(settings.model_name, limit=limit)
    rows: list[dict[str, Any]] = [
        {
            "id": e.id,
            "ts": e.ts.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "from_version": e.from_version,
            "to_version": e.to_version,
            "reason": e.reason,
            "details": e.details,
        }
        for e in entries
    ]
    if json_out:
        emit_json(rows)
        return
    table = Table(title=f"audit log of {settings.model_name}")
    for col in ("when", "who", "action", "from", "to", "reason", "numbers"):
        table.add_column(col)
    for r in rows:
        numbers = ", ".join(f"{k}={v}" for k, v in r["details"].items() if v is not None)
        table.add_row(
            r["ts"][:19],
            r["actor"],
            r["action"],
            r["from_version"] or "-",
            r["to_version"] or "-",
            r["reason"],
            numbers,
        )
    out.print(table)


@app.command("ui")
@handle_errors
def ui_command() -> None:
    """Print the command that opens the MLflow UI on loopml's tracking store."""
    settings = _settings()
    out.print(mlflow_ui_command(settings), highlight=False, soft_wrap=True)


def mlflow_ui_command(settings: Settings) -> str:
    """Shell command opening the MLflow UI on this settings' store."""
    store = settings.mlflow_uri
    if not store.startswith("sqlite"):
        store = "$LOOPML_TRACKING_URI"  # may hold a password: never print it
    return (
        f'.venv/bin/mlflow ui --backend-store-uri "{store}" '
        f'--default-artifact-root "{settings.artifact_root}" --port 5000'
    )


# ---------------------------------------------------------------- control loop


@contextlib.contextmanager
def _control() -> Iterator[tuple[Settings, Any, Any]]:
    from loopml.registry import Registry
    from loopml.store import open_settings_store

    settings = _settings()
    with open_settings_store(settings) as store:
        yield settings, store, Registry(settings)


@rollout_app.command("start")
@handle_errors
def rollout_start(
    version: Annotated[str, typer.Argument(help="Registered model version to roll out.")],
    mode: Annotated[
        RolloutMode | None,
        typer.Option(help="shadow or canary.", show_default="LOOPML_ROLLOUT_MODE"),
    ] = None,
    weight: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=99.99,
            help="First canary weight in percent (e.g. 10); later steps: LOOPML_ROLLOUT_STEPS.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Roll out even if the gate failed.")] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --force).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Start a shadow or canary rollout; the controller advances, promotes or rolls it back."""
    from loopml import control

    if force and not reason.strip():
        # a LoopmlError: typer's own BadParameter is no click exception, so it would exit 1
        raise RequestError("--force needs --reason: say why the gate is overridden")
    with _control() as (settings, store, registry), quiet_stdout(json_out):
        routing = control.start_rollout(
            settings,
            store,
            registry,
            version,
            mode=mode.value if mode else None,
            weight=None if weight is None else weight / 100,
            force=force,
            reason=reason,
        )
    if json_out:
        emit_json(routing.to_dict())
        return
    out.print(
        f"rollout started: version {routing.challenger} in {routing.mode} mode"
        + (f" at {routing.weight:.0%}" if routing.mode == "canary" else "")
    )


@rollout_app.command("status")
@handle_errors
def rollout_status(json_out: JsonOpt = False) -> None:
    """Routing state and a fresh analysis of the rollout in progress."""
    from loopml import control

    with _control() as (settings, store, registry), quiet_stdout(json_out):
        info = control.rollout_status(settings, store, registry)
    if json_out:
        emit_json(info.to_dict())
        return
    r, rollout, analysis = info.routing, info.routing.rollout, info.analysis
    if rollout is None or analysis is None:
        out.print(f"no rollout: champion {r.champion or 'none'} serves all traffic")
        return
    out.print(
        f"champion {r.champion}, challenger {r.challenger}: {r.mode}"
        + (f" at {r.weight:.0%}" if r.mode == "canary" else "")
        + f" (step {rollout['step'] + 1}/{len(rollout['steps'])})"
    )
    table = Table(title=f"analysis: {analysis.status}")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    for c in analysis.checks:
        table.add_row(c.name, c.status, c.detail)
    out.print(table)


@rollout_app.command("abort")
@handle_errors
def rollout_abort(
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "aborted by hand",
    json_out: JsonOpt = False,
) -> None:
    """Send all traffic back to the champion now."""
    from loopml import control

    with _control() as (settings, store, registry), quiet_stdout(json_out):
        routing = control.abort_rollout(settings, store, registry, reason=reason)
    if json_out:
        emit_json(routing.to_dict())
        return
    out.print(f"rollout aborted: champion {routing.champion} serves all traffic")


@feedback_app.command("relabel")
@handle_errors
def feedback_relabel(
    request_id: Annotated[str, typer.Argument(help="The request id of the labelled prediction.")],
    label: Annotated[str, typer.Argument(help="The corrected label.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log (required).")] = "",
    json_out: JsonOpt = False,
) -> None:
    """Correct a stored feedback label (the only way a given label changes); audited."""
    from loopml.serving.feedback import relabel
    from loopml.store import current_actor, open_settings_store

    settings = _settings()
    with open_settings_store(settings) as store:
        result = relabel(
            store,
            request_id=request_id,
            label=label,
            reason=reason,
            actor=current_actor(),
            model_name=settings.model_name,
        )
    if json_out:
        emit_json(result)
        return
    before = result["previous"]
    out.print(f"request {request_id}: label {before['label']} (by {before['key_id']}) -> {label}")


@feedback_app.command("import")
@handle_errors
def feedback_import(
    file: Annotated[
        str,
        typer.Argument(help="CSV or JSONL: columns batch_id,row_id,label or request_id,label."),
    ],
    json_out: JsonOpt = False,
) -> None:
    """Store labels that arrived later (batch rows by batch id and row id, or request ids),
    as feedback given by ``import:<file name>``; all or nothing."""
    from loopml.batch.feedback import import_key, read_labels, resolve_labels
    from loopml.serving.feedback import FeedbackStore
    from loopml.serving.metrics import Metrics
    from loopml.store import open_settings_store

    labels = read_labels(file)
    settings = _settings()
    with open_settings_store(settings) as store:
        items = resolve_labels(store, settings, labels)
        stored = FeedbackStore(store, None, Metrics()).record(items, import_key(file))
    correct = sum(1 for s in stored if s["correct"])
    if json_out:
        emit_json({"stored": len(stored), "correct": correct, "key_id": import_key(file)})
        return
    out.print(
        f"{len(stored)} labels stored as {import_key(file)} ({correct} agree with the prediction)"
    )


@app.command()
@handle_errors
def controller(
    once: Annotated[
        bool, typer.Option(help="One tick, then exit (for cron or a CronJob).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run the closed loop: monitor, retrain, roll out, promote or roll back.

    One controller per model at a time: while another holds the lease, --once exits 3 naming it
    and the loop stands by until the lease expires. With LOOPML_MODELS (names, or * for every
    model with a champion) one controller runs every model's loop, each in a thread of its own
    (a model whose lease another controller holds is reported as standby)."""
    from loopml.control import Controller

    stdout = sys.stdout  # ticks go here even while libraries' prints are kept off stdout
    many = bool(load_settings().models.strip())  # LOOPML_MODELS: one loop per model

    def show(tick: Tick) -> None:
        if json_out:
            stdout.write(json.dumps(tick.to_dict(), default=str) + "\n")
            stdout.flush()
        else:
            who = f"{escape(tick.model or '*')} " if many else ""
            console.print(f"{tick.at:%H:%M:%S} {who}[bold]{tick.action}[/]: {tick.reason}")
            if tick.skew is not None and tick.skew.get("passed") is False:
                console.print(
                    f"  [red]SKEW[/] v{tick.skew['model_version']}: max |logged - recomputed| "
                    f"{tick.skew['max_abs_diff']:.3g} (see `loopml check skew`)"
                )

    if many:
        _controller_fleet(once=once, json_out=json_out, show=show)
        return
    with _control() as (settings, store, registry), quiet_stdout(json_out):
        loop = Controller(settings, store, registry, on_tick=show)
        # SIGTERM (docker stop, a pod's termination) or Ctrl-C: a clean stop, exit 0.
        with loop.stop_on_signals():
            if once:
                try:  # exit 3 (ControllerBusyError) when another controller holds the lease
                    loop.tick()
                finally:
                    loop.release()
            else:
                loop.run()
        if loop.stop_signal is not None:
            console.print(f"stopped by {loop.stop_signal}")


def _controller_fleet(*, once: bool, json_out: bool, show: Callable[[Tick], None]) -> None:
    """``loopml controller`` for LOOPML_MODELS: every model's loop, each in its own thread."""
    from loopml.control import Fleet
    from loopml.store import open_settings_store

    settings = load_settings().prepare()  # global: each model's section applies to it alone
    with open_settings_store(settings) as store, quiet_stdout(json_out):
        fleet = Fleet(settings, store, on_tick=show)
        with fleet.stop_on_signals():
            if once:
                fleet.tick()
            else:
                fleet.run()
        if fleet.stop_signal is not None:
            console.print(f"stopped by {fleet.stop_signal}")


# ---------------------------------------------------------------- the database's schema


def _schema(*, upgrade: bool) -> tuple[str, Any, Any]:
    """The redacted database URL, the schema state before and after (``upgrade``: migrated).

    Any failure to reach or read the database exits 2 (a bad or unreachable URL).
    """
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from loopml.config import redact_url
    from loopml.errors import ConfigError
    from loopml.store._db import connect, migrate, open_error, schema_state

    url = load_settings().db_url
    engine = connect(url)
    try:
        before = schema_state(engine)
        after = migrate(engine) if upgrade else before
    except (SQLAlchemyError, CommandError) as exc:
        raise ConfigError(f"{open_error(url, exc)} (LOOPML_DATABASE_URL)") from exc
    finally:
        engine.dispose()
    return redact_url(url), before, after


@db_app.command("upgrade")
@handle_errors
def db_upgrade(json_out: JsonOpt = False) -> None:
    """Migrate the loopml database to this release's schema (run before rolling out a release
    with LOOPML_DB_AUTO_MIGRATE=false). A schema already newer is left as it is."""
    url, before, after = _schema(upgrade=True)
    if json_out:
        emit_json({"database": url, "from": before.revision, **after.to_dict()})
        return
    if before.status == "current" or before.status == "ahead":
        out.print(f"nothing to do: {before.describe()}", soft_wrap=True)
    else:
        out.print(f"upgraded {before.revision or 'an empty database'} -> {after.revision}")


@db_app.command("current")
@handle_errors
def db_current(json_out: JsonOpt = False) -> None:
    """The database's schema revision, this release's head and what that means."""
    url, state, _ = _schema(upgrade=False)
    if json_out:
        emit_json({"database": url, **state.to_dict(), "message": state.describe()})
        return
    out.print(f"database: {url}", highlight=False, soft_wrap=True)
    out.print(f"revision: {state.revision or '-'} (this release's head: {state.head})")
    out.print(f"{state.status}: {state.describe()}", soft_wrap=True)


@db_app.command("check")
@handle_errors
def db_check(json_out: JsonOpt = False) -> None:
    """Exit 0 when this release can use the schema (at its head, or newer: migrations are
    additive), 1 when it is behind and needs `loopml db upgrade`, 2 when the URL is bad or the
    database unreachable."""
    url, state, _ = _schema(upgrade=False)
    if json_out:
        emit_json({"database": url, **state.to_dict(), "message": state.describe()})
    elif state.usable:
        out.print(f"ok: {state.describe()}", soft_wrap=True)
    else:
        console.print(f"[bold red]not usable:[/] {escape(state.describe())}", soft_wrap=True)
    if not state.usable:
        raise typer.Exit(1)


# ---------------------------------------------------------------- serving and monitoring


@app.command()
@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 for all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes (one model copy each).", min=1, max=64)
    ] = 1,
    access_log: Annotated[
        bool,
        typer.Option("--access-log/--no-access-log", help="Log one line per request (paths only)."),
    ] = False,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve Open Inference Protocol V2 over gRPC (KServe's"
            " GRPCInferenceService) on this port, on the same interface; 0 = off. Every worker"
            " shares it (SO_REUSEPORT).",
            min=0,
            max=65535,
            show_default="LOOPML_GRPC_PORT, else off",
        ),
    ] = None,
) -> None:
    """Serve the champion over HTTP: /v1/predict, Open Inference Protocol V2 under /v2,
    feedback, health, a status page at /, JSON status and Prometheus /metrics; OIP V2 over gRPC
    too with --grpc-port. Follows the routing state (canary or shadow challenger) and the
    registry alias, and hot-swaps."""
    from loopml.serving import run

    settings = load_settings()
    if grpc_port is not None:
        settings = settings.model_copy(update={"grpc_port": grpc_port})
    run(settings, host=host, port=port, workers=workers, access_log=access_log)


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``2h``/``30m``/``1d``/``45s`` ago, or an ISO 8601 time (UTC when it has no offset)."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.strip().lower())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise LoopmlError(
            f"--since: {value!r} is neither a duration (30m, 2h, 1d) nor an ISO time"
        ) from exc
    return as_utc(moment)


def _monitor_table(summary: MonitorSummary) -> Table:
    w, q = summary.window, summary.quality
    table = Table(
        title=f"{summary.model_name} v{summary.model_version}: "
        f"{summary.verdict.upper()} ({w.rows} predictions)"
    )
    for column in ("check", "method", "score", "threshold", "status"):
        table.add_column(column)
    colours = {"drift": "red", "ok": "green", "unavailable": "dim"}
    for c in summary.checks:
        score = "-" if c.score is None else f"{c.score:.3f}"
        table.add_row(
            c.kind, c.method, score, str(c.threshold), f"[{colours[c.status]}]{c.status}[/]"
        )
    if q.macro_f1 is not None and q.accuracy is not None and q.macro_f1_ci is not None:
        low, high = q.macro_f1_ci
        colour = {"alarm": "red", "ok": "green"}.get(q.status, "dim")
        table.add_row(
            "live macro-F1",
            f"{q.labeled} labeled",
            f"{q.macro_f1:.3f}",
            f"floor {q.floor}",
            f"[{colour}]{q.status}[/] [{low:.3f}, {high:.3f}]",
        )
        table.add_row("live accuracy", f"{q.labeled} labeled", f"{q.accuracy:.3f}", "-", "")
    else:
        table.add_row("live quality", "no feedback", "-", f"floor {q.floor}", "[dim]no labels[/]")
    gap = summary.offline_vs_live
    if gap is not None and gap.gap is not None:
        colour = "red" if gap.status == "alarm" else "green"
        offline, live = gap.offline_macro_f1_same_labels, gap.live_macro_f1_same_labels
        table.add_row(
            "offline vs live",
            f"test {offline:.3f}, live {live:.3f}",
            f"gap {gap.gap:.3f}",
            f"max {gap.max_gap}",
            f"[{colour}]{gap.status}[/]",
        )
    return table


@app.command()
@handle_errors
def monitor(
    window: Annotated[
        int | None,
        typer.Option(
            "--window",
            "-w",
            min=1,
            help="The newest N predictions of the champion.",
            show_default="LOOPML_MONITOR_WINDOW",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Predictions since a time: 30m, 2h, 1d or ISO 8601."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check the champion's recent predictions for drift and live quality; exit 1 on an alarm.

    Exit codes: 0 no drift and no quality alarm (also "insufficient data"), 1 drift or quality
    alarm, 2 bad usage or settings.
    """
    from loopml.monitoring import run_monitor

    if window is not None and since is not None:
        raise LoopmlError("give --window or --since, not both")
    start = parse_since(since) if since is not None else None
    settings = _settings()
    with quiet_stdout(json_out), console.status("monitoring") as status:
        report = run_monitor(
            settings,
            window=window,
            since=start,
            progress=lambda step: status.update(f"monitoring: {step}"),
        )
    if json_out:
        emit_json(report.to_dict())
    else:
        out.print(_monitor_table(report.summary))
        for reason in report.summary.reasons:
            out.print(f"  - {reason}", highlight=False)
        out.print(f"report: {report.report_path}", highlight=False)
    raise typer.Exit(1 if report.alarm else 0)


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

    settings = _settings()
    with quiet_stdout(json_out), console.status("checking skew"):
        report = run_check(settings, version=version, sample=sample)
    if json_out:
        emit_json(report.to_dict())
    else:
        verdict = "[green]no skew[/]" if report.passed else "[red]SKEW[/]"
        out.print(
            f"{report.model_name} v{report.model_version}: {verdict} on {report.rows} logged "
            f"predictions: max |logged - recomputed| {report.max_abs_diff:.3g}, "
            f"{report.share_above:.1%} above {report.tolerance:g}, "
            f"{report.label_mismatches} label mismatches"
        )
        if report.skipped_without_text:
            out.print(f"  {report.skipped_without_text} predictions without text were skipped")
        for row in report.worst:
            out.print(f"  {row['request_id']}: {row['abs_diff']:.3g}", highlight=False)
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

    dataset = _load(source, None, None, None)
    seed = _settings().seed if seed is None else seed
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
        raise typer.Exit(0 if report.passed else 1)
    table = Table(
        title=f"macro-F1 with and without each feature ({report.rows} rows, {folds}-fold)"
    )
    for col in ("feature", "default", "with", "without", "gain", f"{level:.0%} lower", "verdict"):
        table.add_column(col)
    for f in report.features:
        verdict = "helps" if f.helps else ("[red]does not help[/]" if f.kept else "off")
        table.add_row(
            f.feature,
            "on" if f.kept else "off",
            f"{f.macro_f1_with:.4f}",
            f"{f.macro_f1_without:.4f}",
            f"{f.delta:+.4f}",
            f"{f.lower:+.4f}",
            verdict,
        )
    out.print(table)
    if not report.passed:
        out.print(f"[red]kept but not shown to help:[/] {', '.join(report.failing)}")
    raise typer.Exit(0 if report.passed else 1)


def _delta(value: float | None) -> str:
    return "" if value is None else f"{value:+.4f}"


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

    settings = _settings()
    with open_settings_store(settings) as store:
        found = agreement(store, settings.model_name, last=last or settings.offline_online_rollouts)
    if json_out:
        emit_json(found.to_dict())
        raise typer.Exit(1 if found.alarm else 0)
    table = Table(title=f"challenger minus champion macro-F1, last {found.last} rollouts")
    for col in ("ended", "outcome", "versions", "offline", "live", "agree", "notes"):
        table.add_column(col, no_wrap=col != "notes")
    for p in found.pairs:
        agrees = {True: "yes", False: "[red]no[/]", None: ""}[p.agrees]
        table.add_row(
            f"{p.ts:%m-%d %H:%M}",
            p.outcome,
            f"{p.challenger} vs {p.champion}",
            _delta(p.offline_delta),
            _delta(p.live_delta),
            agrees,
            escape(p.notes or ""),
        )
    out.print(table)
    share = found.sign_agreement
    r = found.correlation
    out.print(
        f"{found.points} measured rollout(s): sign agreement "
        f"{'n/a' if share is None else f'{share:.0%}'}, correlation "
        f"{'n/a' if r is None else f'{r:+.2f}'}"
        + (f" (needs {MIN_POINTS})" if found.points < MIN_POINTS else "")
        + (": [red]offline and live disagree in most rollouts[/]" if found.alarm else "")
    )
    raise typer.Exit(1 if found.alarm else 0)


def _demo_view(stats: Any, ticks: list[Tick]) -> Table:
    table = Table(title="loopml demo: the loop closing by itself", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    elapsed = time.monotonic() - stats.started
    table.add_row(
        "traffic",
        f"{stats.sent} requests ({stats.sent / max(elapsed, 1e-9):.0f}/s), {stats.failed} failed, "
        f"{stats.labels_sent} late labels; phase: {stats.phase}",
    )
    for phase in ("before shift", "after shift", "after promotion"):
        score, n = stats.macro_f1(phase)
        if n:
            table.add_row(f"macro-F1 {phase}", f"{score:.3f} on {n} requests")
    monitor = next((t.monitor for t in reversed(ticks) if t.monitor is not None), None)
    if monitor is not None:
        table.add_row("drift", f"{monitor.verdict} {', '.join(monitor.reasons[:2])}")
    if ticks:
        last = ticks[-1]
        table.add_row("controller", f"{last.action}: {last.reason[:90]}")
        routing = last.current_routing
        if routing is not None:
            split = f"{routing.mode} {routing.weight:.0%}" if routing.challenger else "all"
            table.add_row(
                "routing",
                f"champion {routing.champion}, challenger {routing.challenger or '-'} ({split})",
            )
    return table


def _demo_summary(result: Any) -> Table:
    table = Table(title="the loop closed: macro-F1 on the live stream")
    for col in ("traffic", "model", "requests", "macro-F1"):
        table.add_column(col)

    def row(name: str, model: str, value: tuple[float | None, int]) -> None:
        score = "-" if value[0] is None else f"{value[0]:.3f}"
        table.add_row(name, model, str(value[1]), score)

    old = f"v{result.champion_version}"
    row("before the shift (non-airline)", old, result.before_shift)
    row("after the shift (airline), old model", old, result.after_shift_old_model)
    row(
        "after the shift, after promotion",
        f"v{result.promoted_version or '-'}",
        result.after_promotion,
    )
    return table


@app.command()
@handle_errors
def demo(
    fast: Annotated[bool, typer.Option(help="Less data and quicker ticks (for tests).")] = False,
    recipe: RecipeOpt = None,
    param: ParamOpt = None,
    budget: Annotated[
        float | None,
        typer.Option(
            min=10,
            help="Seconds the stream may run before the demo stops waiting for a promotion "
            "(default 420, 300 with --fast); slower recipes (MiniLM) need more.",
        ),
    ] = None,
    label_budget: Annotated[
        int | None,
        typer.Option(
            min=50,
            help="Label only what the label queue picks, this many labels in all (default: "
            "a random half of all requests gets a label).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The closed loop on real tweets: drift, retraining, canary, promotion (a few minutes)."""
    from rich.live import Live

    from loopml.demo import run_demo

    settings = _settings()
    live = Live(console=console, refresh_per_second=4)

    def update(stats: Any, ticks: list[Tick]) -> None:
        if stats.sent % 25 == 0:
            live.update(_demo_view(stats, ticks))

    with quiet_stdout(json_out), live if not json_out else contextlib.nullcontext():
        result = run_demo(
            settings,
            fast=fast,
            recipe=_recipe(recipe, None),
            params=_parse_params(param or []),
            time_budget_s=budget,
            label_budget=label_budget,
            progress=None if json_out else lambda msg: console.print(f"[dim]{msg}[/]"),
            on_update=None if json_out else update,
        )
    if json_out:
        emit_json(result.to_dict())
    else:
        out.print(
            f"champion v{result.champion_version}: test macro-F1 "
            f"{result.champion_test_macro_f1:.3f} on its own (non-airline) test split"
        )
        out.print(_demo_summary(result))
        out.print(f"reports ({len(result.reports)} HTML files):", highlight=False)
        for path in result.reports[-2:]:
            out.print(f"  {path}", highlight=False, soft_wrap=True)
        out.print(
            f"audit trail: LOOPML_HOME={result.home} .venv/bin/loopml history",
            highlight=False,
            soft_wrap=True,
        )
        out.print(
            f"serve its champion: LOOPML_HOME={result.home} .venv/bin/loopml serve",
            highlight=False,
            soft_wrap=True,
        )
        out.print("open the MLflow UI:")
        ui = mlflow_ui_command(load_settings(home=result.home))
        out.print(f"  {ui}", highlight=False, soft_wrap=True)
    if not result.recovered:
        console.print("[red]the loop did not close: quality did not recover (see the history)[/]")
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()

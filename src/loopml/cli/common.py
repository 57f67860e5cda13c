"""What the command groups share: the consoles, the global ``--model`` option, settings, the
error handler, ``--json`` and the options more than one command takes."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from loopml.cliutil import JsonOpt, emit_json
from loopml.config import Settings, load_settings
from loopml.errors import LoopmlError, TrainingError

__all__ = [
    "ChampionRecipeOpt",
    "DropDuplicatesOpt",
    "JsonOpt",
    "ParamOpt",
    "RecipeOpt",
    "SourceOpt",
    "cli_settings",
    "console",
    "control_plane",
    "emit_json",
    "handle_errors",
    "label_list",
    "load_data",
    "out",
    "parse_params",
    "quiet_stdout",
    "recipe_name",
    "select_model",
    "steps",
]

console = Console(stderr=True, soft_wrap=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])

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


def select_model(
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


def cli_settings(*, drop_duplicates: bool = False) -> Settings:
    """The settings, prepared (directories made); ``drop_duplicates`` from the flag."""
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


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``--param KEY=VALUE`` pairs as a dict."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TrainingError(f"--param expects KEY=VALUE, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


def recipe_name(value: str | None, default: str | None) -> str | None:
    """The recipe name for the pipeline; None means reuse the champion's."""
    if value == "champion":
        return None
    return value or default


def label_list(value: str | None) -> list[str] | None:
    """``--labels a,b,c`` as a list (None when not given)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def load_data(
    source: str | None,
    text_column: str | None,
    label_column: str | None,
    labels: list[str] | None,
    drop_duplicates: bool = False,
) -> Any:
    """The dataset a command names, checked by the settings' data rules."""
    from loopml.data import DataRules, load_dataset

    settings = cli_settings(drop_duplicates=drop_duplicates)
    return load_dataset(
        source or settings.data_source,
        text_column=text_column or settings.text_column,
        label_column=label_column or settings.label_column,
        labels=labels,
        rules=DataRules.from_settings(settings),
    )


@contextlib.contextmanager
def control_plane() -> Iterator[tuple[Settings, Any, Any]]:
    """Settings, the open loopml store and the registry, for the control-loop commands."""
    from loopml.registry import Registry
    from loopml.store import open_settings_store

    settings = cli_settings()
    with open_settings_store(settings) as store:
        yield settings, store, Registry(settings)

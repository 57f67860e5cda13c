"""``loopml serve|controller|monitor|ui``: the long-running data and control planes, the
monitor's check of live traffic and the MLflow UI."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from loopml._time import as_utc
from loopml.cli import render
from loopml.cli.common import (
    JsonOpt,
    cli_settings,
    console,
    control_plane,
    emit_json,
    handle_errors,
    out,
    quiet_stdout,
)
from loopml.config import Settings, load_settings
from loopml.errors import LoopmlError

if TYPE_CHECKING:
    from loopml.control import Tick

__all__ = ["controller", "mlflow_ui_command", "monitor", "parse_since", "serve", "ui_command"]


@handle_errors
def ui_command() -> None:
    """Print the command that opens the MLflow UI on loopml's tracking store."""
    settings = cli_settings()
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
    many = bool(load_settings().models)  # LOOPML_MODELS: one loop per model

    def show(tick: Tick) -> None:
        if json_out:
            stdout.write(json.dumps(tick.to_dict(), default=str) + "\n")
            stdout.flush()
        else:
            render.tick(tick, named=many)

    if many:
        _controller_fleet(once=once, json_out=json_out, show=show)
        return
    with control_plane() as (settings, store, registry), quiet_stdout(json_out):
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
    settings = cli_settings()
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
        render.monitor_report(report)
    raise typer.Exit(1 if report.alarm else 0)

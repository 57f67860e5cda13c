"""One controller for every model: each model's loop in a thread of its own.

``LOOPML_MODELS`` names the models (``*``: every registered model with a champion alias, looked
up again every ``controller_interval_s``, so a newly registered model joins); each runs the
single-model :class:`~loopml.control.controller.Controller` with its effective settings
(:meth:`Settings.for_model`: its ``[models.<name>]`` section of loopml.toml over the global ones).

Why a thread per model rather than one loop ticking the models in turn: a model's tick can take
minutes (a retrain fits models; monitoring runs drift checks and a skew check), while another
model's canary step is milliseconds of database work due every interval. Ticked in turn, model
A's retrain would hold model B's canary (and its rollout lease) for the retrain's whole
duration. In threads each loop keeps its own pace, and keeps everything the single-model
controller has: its own lease (a row per model), recovery, backoff and audit records, so a
failing or stuck step of one model is that model's alone. The heavy work (NumPy, scikit-learn,
database I/O) releases the GIL. A process per model would also isolate a crash in native code,
at the price of an interpreter with MLflow and scikit-learn loaded per model (about 300 MB each);
run one controller per model (``LOOPML_MODEL_NAME``) when that matters.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loopml.config import Settings
from loopml.control.controller import Controller, Tick, _one_line, on_stop_signals
from loopml.errors import ControllerBusyError
from loopml.registry import Registry
from loopml.routing import CHAMPION
from loopml.store import Store

__all__ = ["Fleet", "champion_models"]

log = logging.getLogger(__name__)

_WAIT_SLICE_S = 0.25


def champion_models(registry: Registry) -> list[str]:
    """Every registered model that has a champion alias, by name."""
    return registry.models_with(CHAMPION)


@dataclass
class _Loop:
    """One model's controller and the thread running it."""

    controller: Controller
    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)


class Fleet:
    """Closes the loop of every model of ``LOOPML_MODELS``, each isolated from the others."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        on_tick: Callable[[Tick], None] | None = None,
    ) -> None:
        self.settings = settings  # the global settings: each model's are derived from them
        self.store = store
        self.on_tick = on_tick
        self.stop_signal: str | None = None
        self._loops: dict[str, _Loop] = {}
        self._emit_lock = threading.Lock()  # one tick line at a time on a shared stdout

    def models(self) -> list[str]:
        """The models to run now: ``LOOPML_MODELS``, or for ``*`` the registry's champions."""
        names = self.settings.model_names()
        return champion_models(Registry(self.settings)) if names is None else names

    def controller(self, name: str, *, purges: bool = True) -> Controller:
        """A controller of model ``name`` with its effective settings; ``purges``: it applies
        the daily retention purge (of every model's data: one loop of the fleet does)."""
        settings = self.settings.for_model(name)
        registry = Registry(settings)
        return Controller(settings, self.store, registry, on_tick=self._emit, purges=purges)

    def _emit(self, tick: Tick) -> None:
        if self.on_tick is not None:
            with self._emit_lock:
                self.on_tick(tick)

    # -- one pass (``loopml controller --once``) ------------------------------------------------

    def tick(self, *, now: datetime | None = None) -> list[Tick]:
        """One tick of every model, one after another; a model's failure (or another
        controller holding its lease) is reported as its tick and the others go on."""
        names = self.models()
        if not names:  # LOOPML_MODELS=* before any model has a champion
            return [self._failed("*", "idle", "no registered model has a champion alias yet")]
        ticks = []
        for i, name in enumerate(names):
            if self.stop_signal is not None:
                break
            ticks.append(self._tick_one(name, now, purges=i == 0))
        return ticks

    def _tick_one(self, name: str, now: datetime | None, *, purges: bool) -> Tick:
        try:
            loop = self.controller(name, purges=purges)
        except Exception as exc:  # e.g. a bad [models.<name>] section: that model only
            return self._failed(name, "error", _one_line(exc))
        self._loops[name] = _Loop(loop, threading.current_thread())
        try:
            return loop.tick(now=now)
        except ControllerBusyError as exc:
            return self._failed(name, "standby", str(exc))
        except Exception as exc:
            return self._failed(name, "error", _one_line(exc))
        finally:
            loop.release()
            del self._loops[name]

    def _failed(self, name: str, action: str, reason: str) -> Tick:
        tick = Tick(datetime.now(UTC), action, reason, model=name)
        self._emit(tick)
        return tick

    # -- the loop -------------------------------------------------------------------------------

    def run(self, *, stop: threading.Event | None = None) -> None:
        """Run every model's loop until ``stop`` is set or a signal asks to stop (under
        :meth:`stop_on_signals`); the model set is looked up again every interval."""
        stop = stop or threading.Event()
        try:
            while not self._stopping(stop):
                self._sync()
                self._wait(stop, time.monotonic() + self.settings.controller_interval_s)
        finally:
            for loop in self._loops.values():
                loop.stop.set()
            for loop in self._loops.values():
                loop.thread.join()
            self._loops.clear()

    def running(self) -> list[str]:
        """The models whose loop runs now."""
        return sorted(n for n, loop in self._loops.items() if loop.thread.is_alive())

    def _sync(self) -> None:
        """Start the loops of new models (and restart any that ended), stop removed ones."""
        try:
            names = self.models()
        except Exception as exc:  # the registry is away: the running loops go on
            self._failed("*", "error", f"cannot list the models: {_one_line(exc)}")
            return
        for name in names:
            if self.stop_signal is not None:
                return  # stopping: start nothing the signal handler did not see
            current = self._loops.get(name)
            if current is not None and current.thread.is_alive():
                # exactly one loop purges, whichever models come and go
                current.controller.purges = name == names[0]
                continue  # running (or, removed and added again, ending: restarted next time)
            try:
                controller = self.controller(name, purges=name == names[0])
            except Exception as exc:
                self._failed(name, "error", _one_line(exc))
                continue
            self._loops[name] = self._start(name, controller)
        for name, loop in list(self._loops.items()):
            if name not in names:
                loop.stop.set()  # no longer a champion: it finishes its tick and ends
                if not loop.thread.is_alive():
                    del self._loops[name]

    def _start(self, name: str, controller: Controller) -> _Loop:
        stop = threading.Event()
        thread = threading.Thread(
            target=controller.run,
            kwargs={"stop": stop},
            name=f"loopml-controller-{name}",
            daemon=True,
        )
        loop = _Loop(controller, thread, stop)
        thread.start()
        log.info("controller of model %s started", name)
        return loop

    def _stopping(self, stop: threading.Event) -> bool:
        return stop.is_set() or self.stop_signal is not None

    def _wait(self, stop: threading.Event, deadline: float) -> None:
        # In slices: a signal handler only sets a flag (see Controller._wait).
        while not self._stopping(stop) and (left := deadline - time.monotonic()) > 0:
            stop.wait(min(left, _WAIT_SLICE_S))

    # -- stopping on a signal -------------------------------------------------------------------

    def stop_on_signals(self) -> contextlib.AbstractContextManager[None]:
        """SIGTERM and SIGINT stop every model's loop cleanly while inside (main thread only):
        what moves routing or aliases finishes, monitoring and retrains are abandoned."""
        return on_stop_signals(self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is None:
            self.stop_signal = name
        for loop in list(self._loops.values()):
            loop.controller.abandon(name)

"""The controller: monitor > policy > retrain > gate > rollout > promote or roll back, each tick.

Its state is the routing state and the audit log in the loopml database, nothing in memory, so a
controller killed at any point resumes where it was on its next tick (or rolls back, when it was
away longer than the rollout lease).

Stopped by SIGTERM or SIGINT (:meth:`Controller.stop_on_signals`), it finishes what moves routing
or aliases (short database work), and abandons monitoring or a retrain, which can take minutes:
their MLflow runs end KILLED with the reason, an audit line says what was abandoned, and the next
start does it again. Then it exits, well within a 75 s grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import select

from loopml.config import Settings
from loopml.control import rollout
from loopml.control.learning import Reachable, learned_from_feedback, reachable_macro_f1
from loopml.control.lease import Lease, LeaseState
from loopml.control.live import labeled_feedback
from loopml.control.policy import LearningGap, cooling_down, decide
from loopml.control.retrain import champion_splits, new_labeled_rows, retrain
from loopml.data import Splits
from loopml.data.privacy import purge
from loopml.errors import ApprovalRequiredError, ControllerBusyError, LoopmlError, MonitorError
from loopml.labels.noise import trainable
from loopml.pipeline.choice import choose_recipe
from loopml.registry import GATE_TAG, Registry
from loopml.routing import (
    CHALLENGER,
    CHAMPION,
    Routing,
    load_routing,
    routing_in,
    save_routing,
)
from loopml.store import AuditEntry, MonitorResult, Store, current_actor
from loopml.tracking import (
    CONTROLLER_TAG,
    MODEL_TAG,
    experiment_id,
    tagging_runs,
    tracking_unavailable,
)

if TYPE_CHECKING:
    from loopml.monitoring import MonitorSummary

__all__ = ["Controller", "MonitorNote", "StepAbandoned", "Tick"]

log = logging.getLogger(__name__)

# How often the wait between ticks looks at a stop request.
_WAIT_SLICE_S = 0.25

# Audit actions the retrain cooldown counts: every attempt, an interrupted one too (a controller
# killed mid-retrain again and again must not retrain forever). A retrain abandoned on SIGTERM
# (a deploy, an operator) is not counted: the next start does it again.
RETRAIN_ATTEMPTS = (
    "retrain",
    "retrain_rejected",
    "retrain_failed",
    "retrain_interrupted",
    "retrain_awaiting_approval",
)
# The value of the gate tag on a version whose retrain was cut short before its gate verdict:
# never rolled out (rollouts and promotions need "passed"); `loopml evaluate VERSION` gates it.
INTERRUPTED = "interrupted"
# Consecutive failed retrains double the cooldown before the next attempt, up to this factor.
RETRAIN_BACKOFF_MAX = 16
# Consecutive failed ticks double the wait before the next one, up to this factor.
TICK_BACKOFF_MAX = 8
# The step between a retrain's record and the start of its rollout.
ROLLOUT_START = "rollout_start"
# Where the controller's skew check goes in a monitoring run's summary (the gauges read it there).
SKEW_KEY = "skew"


class StepAbandoned(BaseException):
    """A signal stopped the controller inside a step it may abandon (monitoring, a retrain).

    A BaseException, like KeyboardInterrupt: the steps' ``except Exception`` handlers (a failed
    retrain is audited and counted for the cooldown) must not take it for a failure.
    """

    def __init__(self, step: str, signal_name: str, *, started: bool = True) -> None:
        super().__init__(f"{signal_name} during {step}")
        self.step = step
        self.signal_name = signal_name
        self.started = started


@dataclass
class MonitorNote:
    """What the monitoring run of a tick concluded, and where its report is."""

    verdict: str
    reasons: list[str]
    report: str


@dataclass
class Tick:
    """What one controller tick saw and did."""

    at: datetime
    action: str
    reason: str
    monitor: MonitorNote | None = None
    new_labels: int | None = None
    version: str | None = None  # the retrained version, if any
    routing: Routing | None = None  # the routing after a rollout started
    step: rollout.StepResult | None = None  # the rollout step taken, if any
    learning: dict[str, Any] | None = None  # live vs reachable macro-F1, when estimated
    skew: dict[str, Any] | None = None  # the training/serving skew check, fresh or carried
    model: str | None = None  # the model whose loop ticked

    @property
    def current_routing(self) -> Routing | None:
        """The routing this tick left behind, when it changed or checked one."""
        return self.step.routing if self.step is not None else self.routing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (one line per tick of ``loopml controller --json``)."""
        out: dict[str, Any] = {"at": self.at.isoformat(), "action": self.action}
        out["reason"] = self.reason
        if self.model is not None:
            out["model"] = self.model
        if self.monitor is not None:
            out["monitor"] = asdict(self.monitor)
        if self.new_labels is not None:
            out["new_labels"] = self.new_labels
        if self.version is not None:
            out["version"] = self.version
        if self.learning is not None:
            out["learning"] = self.learning
        if self.skew is not None:
            out["skew"] = self.skew
        if self.routing is not None:
            out["routing"] = self.routing.to_dict()
        if self.step is not None:
            out["rollout"] = self.step.to_dict()
        return out


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` takes SIGTERM and SIGINT while inside, the previous handlers after; outside
    the main thread (where signals cannot be handled) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Controller:
    """Closes the loop for one model."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry | None = None,
        *,
        on_tick: Callable[[Tick], None] | None = None,
        lease: Lease | None = None,
        purges: bool = True,
    ) -> None:
        self.settings = settings
        # The daily purge covers every model's data: one of a process's model loops applies it.
        self.purges = purges
        self.store = store
        self.registry = registry or Registry(settings)
        self.on_tick = on_tick
        self.lease = lease or Lease(
            store, self.registry.name, duration_s=settings.controller_lease_s
        )
        # What the previous holder left, until recovered (a failed recovery is tried again).
        self._to_recover: list[LeaseState | None] = []
        self._purged_at: datetime | None = None
        # The newest reachable estimate (champion version, estimate): an optimisation only, the
        # decisions themselves are in the audit log.
        self._estimate: tuple[str, Reachable] | None = None
        self._fresh_estimate = False
        # The signal that asked to stop (its name), and the abandonable step running now (in
        # the thread ``_step_thread``; the lock orders it against :meth:`abandon`).
        self.stop_signal: str | None = None
        self._step: str | None = None
        self._step_thread: int | None = None
        self._step_lock = threading.RLock()  # a handler may run while its thread holds it

    def _audit(
        self,
        action: str,
        reason: str,
        *,
        to_version: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        champion = load_routing(self.store, self.registry.name).champion
        self.store.audit(
            actor=current_actor(),
            action=action,
            model_name=self.registry.name,
            from_version=champion,
            to_version=to_version,
            reason=reason,
            details=details or {},
        )

    def _last_retrain(self) -> datetime | None:
        query = (
            select(AuditEntry.ts)
            .where(
                AuditEntry.model_name == self.registry.name,
                AuditEntry.action.in_(RETRAIN_ATTEMPTS),
            )
            .order_by(AuditEntry.id.desc())
            .limit(1)
        )
        with self.store.session() as session:
            ts: datetime | None = session.execute(query).scalar_one_or_none()
        return ts

    def _reconcile(self) -> None:
        """Make the registry aliases agree with the routing state, the committed truth.

        A fresh install adopts the champion alias. After a crash between an alias move and its
        database commit, the aliases are put back to what the database says.
        """
        routing = load_routing(self.store, self.registry.name)
        aliases = self.registry.aliases()
        if routing.champion is None:
            if CHAMPION in aliases:
                with self.store.session() as session:
                    state = routing_in(session, self.registry.name, lock=True)
                    state.champion = aliases[CHAMPION]
                    save_routing(session, state)
            return
        if aliases.get(CHAMPION) != routing.champion:
            self._audit(
                "reconcile",
                f"champion alias {aliases.get(CHAMPION)} did not match the "
                f"routing state: reset to {routing.champion}",
                to_version=routing.champion,
            )
            self.registry.move_alias(CHAMPION, routing.champion)
        if aliases.get(CHALLENGER) != routing.challenger:
            self.registry.set_challenger(routing.challenger)

    # -- stopping on a signal ---------------------------------------------------------------

    def stop_on_signals(self) -> contextlib.AbstractContextManager[None]:
        """SIGTERM and SIGINT stop the controller cleanly while inside (main thread only)."""
        return on_stop_signals(self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        first = self.stop_signal is None
        if first:
            self.stop_signal = signal.Signals(signum).name
        # Runs in the main thread between two bytecodes: raising here unwinds the step (its
        # transactions roll back, its MLflow runs end); anywhere else the tick finishes first.
        if first and self._step is not None:
            raise StepAbandoned(self._step, self.stop_signal or "signal")

    def abandon(self, signal_name: str) -> None:
        """Stop this controller from another thread (a multi-model controller's signal handler):
        the loop ends after its tick, and an abandonable step running now in the controller's
        thread is cut short as a signal would cut it in the main thread."""
        with self._step_lock:
            if self.stop_signal is not None:
                return
            self.stop_signal = signal_name
            if self._step is None or self._step_thread is None:
                return
            # Raised in that thread at its next bytecode, like a signal handler's exception;
            # the lock keeps it from landing after the step ended (its exit waits for the lock).
            step, thread = self._step, self._step_thread
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread), ctypes.py_object(_abandoned_class(step, signal_name))
            )

    @contextlib.contextmanager
    def _abandonable(self, step: str) -> Iterator[None]:
        """A step a stop request may cut short (it has nothing half-done that matters)."""
        with self._step_lock:
            if self.stop_signal is not None:
                raise StepAbandoned(step, self.stop_signal, started=False)
            self._step, self._step_thread = step, threading.get_ident()
        try:
            yield
        finally:
            with self._step_lock:
                self._step = self._step_thread = None

    def _abandoned(self, now: datetime, stopped: StepAbandoned, began: float) -> Tick:
        """End what the abandoned step left open and put it on the record."""
        if not stopped.started:
            return Tick(now, "stopped", f"{stopped.signal_name}: stopped before {stopped.step}")
        runs = self._end_open_runs(began, f"{stopped.signal_name}: the controller stopped")
        reason = (
            f"{stopped.signal_name} during {stopped.step}: abandoned, the next start does it again"
        )
        if runs:
            reason += f"; MLflow run(s) {', '.join(runs)} ended KILLED"
        versions = self._mark_ungated(runs, reason)
        if versions:
            reason += f"; version(s) {', '.join(versions)} marked {INTERRUPTED}, never rolled out"
        action = f"{stopped.step}_abandoned"
        details = {"signal": stopped.signal_name, "mlflow_runs": runs, "versions": versions}
        self._audit(action, reason, details=details)
        self._clear_step()
        log.warning("%s", reason)
        return Tick(now, action, reason)

    def _end_open_runs(self, began: float, reason: str) -> list[str]:
        """End KILLED, with ``reason`` as a tag, the MLflow runs this process started since
        ``began`` (a time.time()) and a cut-short step left open (or ended FAILED)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        ended: list[str] = []
        try:
            while (active := mlflow.active_run()) is not None:
                ended.append(active.info.run_id)
                mlflow.end_run("KILLED")
            last = mlflow.last_active_run()
            if (
                last is not None
                and last.info.run_id not in ended
                and last.info.start_time >= int(began * 1000)
            ):
                ended.append(last.info.run_id)
            for run_id in ended:
                self.registry.client.set_tag(run_id, "loopml.abandoned", reason)
                self.registry.client.set_terminated(run_id, "KILLED")
        except (MlflowException, OSError) as exc:
            log.warning("cannot end the abandoned MLflow runs %s: %s", ended, exc)
        return ended

    # -- the lease, and recovering what another holder left ----------------------------------

    def _hold(self) -> None:
        """Hold the lease for a tick: renew it, or take it (``ControllerBusyError`` while another
        controller holds it) and recover what the previous holder left half done."""
        if self.lease.held:
            self.lease.renew()
        else:
            self._to_recover = [self.lease.acquire()]
        if self._to_recover:
            self._recover(self._to_recover[0])
            self._to_recover = []

    def release(self) -> None:
        """Give the lease up (a clean exit): a standby controller takes over at once."""
        self.lease.release()

    def _clear_step(self) -> None:
        with contextlib.suppress(LoopmlError):  # the lease row only: expiry clears it too
            self.lease.renew(step=None)

    def _orphan_runs(self) -> list[Any]:
        """MLflow runs another controller created and left RUNNING (it died or hung), except
        the run of the rollout in progress, which lives on across controllers."""
        client = self.registry.client
        current = (load_routing(self.store, self.registry.name).rollout or {}).get("run_id")
        runs = client.search_runs(
            [experiment_id(self.settings, client)],
            filter_string="attributes.status = 'RUNNING'",
            max_results=1000,
        )
        # Runs of other models are theirs to recover (their controller may be alive).
        return [
            run
            for run in runs
            if run.data.tags.get(CONTROLLER_TAG, self.lease.holder) != self.lease.holder
            and run.data.tags.get(MODEL_TAG, self.registry.name) == self.registry.name
            and run.info.run_id != current
        ]

    def _mark_ungated(self, run_ids: list[str], reason: str) -> list[str]:
        """Tag the versions registered by ``run_ids`` that have no gate verdict yet as
        ``interrupted``: never rolled out or promoted without ``--force``."""
        from mlflow.exceptions import MlflowException

        marked: list[str] = []
        for run_id in run_ids:
            try:
                found = self.registry.client.search_model_versions(f"run_id = '{run_id}'")
            except MlflowException as exc:
                log.warning("cannot list the versions of run %s: %s", run_id, exc)
                continue
            for mv in found:
                if mv.name != self.registry.name or GATE_TAG in mv.tags:
                    continue
                tags = {GATE_TAG: INTERRUPTED, "loopml.interrupted": reason[:4000]}
                self.registry.set_tags(str(mv.version), tags)
                marked.append(str(mv.version))
        return marked

    def _recover(self, previous: LeaseState | None) -> None:
        """After taking the lease: close the MLflow runs another controller left RUNNING (as
        FAILED), mark the version of an interrupted retrain, and audit it: the cooldown counts an
        interrupted retrain as an attempt."""
        orphans = self._orphan_runs()
        step = previous.step if previous is not None else None
        retrains = [r.info.run_id for r in orphans if r.data.tags.get("loopml.kind") == "retrain"]
        if not orphans and step is None:
            return
        who = previous.holder if previous is not None else "another controller"
        reason = f"controller {who} stopped during {step or 'a tick'} without finishing it"
        run_ids = [r.info.run_id for r in orphans]
        if run_ids:
            reason += f"; MLflow run(s) {', '.join(run_ids)} closed FAILED"
        versions = self._mark_ungated(retrains, reason)
        if versions:
            reason += f"; version(s) {', '.join(versions)} marked {INTERRUPTED}, not rolled out"
        retrain = step == "retrain" or bool(retrains)
        details = {
            "previous_holder": who,
            "step": step,
            "mlflow_runs": run_ids,
            "versions": versions,
        }
        # The record first: runs still RUNNING after a crash here are found again next time.
        self._audit(
            "retrain_interrupted" if retrain else "controller_recovered",
            reason,
            to_version=versions[-1] if versions else None,
            details=details,
        )
        for run_id in run_ids:
            self.registry.client.set_tag(run_id, "loopml.interrupted", reason[:4000])
            self.registry.client.set_terminated(run_id, "FAILED")
        log.warning("%s", reason)
        if step == ROLLOUT_START:
            self._start_recorded_rollout(who)

    def _start_recorded_rollout(self, who: str) -> None:
        """Start the rollout of the newest ``retrain`` on record: the controller ``who`` recorded
        it and was killed before the rollout started."""
        query = (
            select(AuditEntry)
            .where(AuditEntry.model_name == self.registry.name)
            .where(AuditEntry.action.in_(RETRAIN_ATTEMPTS))
            .order_by(AuditEntry.id.desc())
            .limit(1)
        )
        with self.store.session() as session:
            entry = session.scalars(query).first()
        if entry is None or entry.action != "retrain" or entry.to_version is None:
            return
        if load_routing(self.store, self.registry.name).rollout is not None:
            return  # an operator started one meanwhile: it stays
        trigger = str((entry.details or {}).get("monitor_verdict", "an alarm"))
        try:
            rollout.start(
                self.settings,
                self.store,
                self.registry,
                entry.to_version,
                reason=f"retrained after {trigger}; {who} stopped before starting the rollout",
                source="controller",
            )
        except LoopmlError as exc:  # e.g. the champion changed since its gate: not rolled out
            self._audit("controller_recovered", f"rollout of {entry.to_version} not started: {exc}")

    # -- the loop -------------------------------------------------------------------------------

    def tick(self, *, now: datetime | None = None) -> Tick:
        """One pass of the loop, holding the lease (``ControllerBusyError`` when another
        controller holds it: nothing was done)."""
        self._hold()
        tags = {CONTROLLER_TAG: self.lease.holder, MODEL_TAG: self.registry.name}
        with self.lease.kept_alive(), tagging_runs(tags):
            result = self._tick(now or datetime.now(UTC))
        self._report(result)
        return result

    def _report(self, tick: Tick) -> None:
        tick.model = self.registry.name
        if self.on_tick:
            self.on_tick(tick)

    def _tick(self, now: datetime) -> Tick:
        self._reconcile()
        self._purge_if_due(now)
        self.lease.renew()  # a rollout step moves routing: fenced
        step = rollout.step(self.settings, self.store, self.registry, now=now)
        if step is not None:
            return Tick(now, f"rollout_{step.action}", step.reason, step=step)
        began = time.time()
        try:
            return self._monitor_and_decide(now)
        except StepAbandoned as stopped:
            return self._abandoned(now, stopped, began)

    def _purge_if_due(self, now: datetime) -> None:
        """Apply ``LOOPML_RETENTION_DAYS`` once a day (the first tick after a start included):
        logged texts do not outlive the retention period while the loop runs."""
        if not self.purges:
            return
        if self._purged_at is not None and now - self._purged_at < timedelta(days=1):
            return
        purge(self.settings, now=now, audit_if_empty=False)
        self._purged_at = now

    def _last_monitor(self) -> datetime | None:
        row = self.store.latest_monitor_result(self.registry.name)
        return row.ts if row is not None else None

    def _monitor_and_decide(self, now: datetime) -> Tick:
        from loopml.monitoring import run_monitor

        last = self._last_monitor()
        if last is not None and (now - last).total_seconds() < self.settings.monitor_interval_s:
            # Each run writes reports and an MLflow run: not on every tick of an idle loop.
            return Tick(now, "idle", f"monitored {(now - last).total_seconds():.0f}s ago")

        self.lease.renew()
        try:
            with self._abandonable("monitor"):
                report = run_monitor(self.settings)
        except MonitorError as exc:
            return Tick(now, "idle", str(exc))
        summary = report.summary
        skew = self._skew_if_due(summary.model_version, report.result_id, now)
        new_labels, learned, gap = 0, False, None
        last_retrain = self._last_retrain()
        settings = self._backed_off()
        since = cooling_down(last_retrain, now, settings)
        if summary.verdict != "insufficient_data":
            learned = learned_from_feedback(self.registry)
            if learned or summary.verdict in ("drift", "quality_alarm"):
                splits, _ = champion_splits(self.registry)
                feedback = labeled_feedback(self.store, self.registry.name)
                new = new_labeled_rows(feedback, splits, set(splits.train["label"]))
                new = trainable(self.store, self.registry.name, new)  # held ones wait for review
                new_labels = len(new)
                if learned and since is None:
                    with self._abandonable("monitor"):  # the reachable estimate fits models
                        gap = self._learning_gap(summary, splits, new, report.result_id, now)
        decision = decide(
            summary,
            new_labels=new_labels,
            last_retrain=last_retrain,
            now=now,
            settings=settings,
            learned=learned,
            learning=gap,
        )
        seen = Tick(
            now,
            decision.action,
            decision.reason,
            monitor=MonitorNote(summary.verdict, summary.reasons, str(report.report_path)),
            new_labels=new_labels,
            learning=decision.numbers or None,
            skew=skew,
        )
        if decision.action == "none" and gap is not None and self._fresh_estimate:
            # A new estimate that says "caught up" is a decision too: on the record, with numbers.
            self._audit("learning_check", decision.reason, details=decision.numbers)
        return seen if decision.action != "retrain" else self._retrain(seen, summary.verdict)

    def _backed_off(self) -> Settings:
        """The settings with the retrain cooldown doubled for each failed retrain in a row
        beyond the first (up to ``RETRAIN_BACKOFF_MAX`` times): a retrain that keeps failing
        (a broken data source, a recipe that raises) is retried, ever less often."""
        query = (
            select(AuditEntry.action)
            .where(
                AuditEntry.model_name == self.registry.name,
                AuditEntry.action.in_(RETRAIN_ATTEMPTS),
            )
            .order_by(AuditEntry.id.desc())
            .limit(RETRAIN_BACKOFF_MAX.bit_length())
        )
        with self.store.session() as session:
            recent = list(session.execute(query).scalars())
        failed = next((i for i, a in enumerate(recent) if a != "retrain_failed"), len(recent))
        if failed < 2:
            return self.settings
        factor = min(2 ** (failed - 1), RETRAIN_BACKOFF_MAX)
        cooldown = self.settings.retrain_cooldown_s * factor
        return self.settings.model_copy(update={"retrain_cooldown_s": cooldown})

    def _skew_if_due(
        self, version: str | None, result_id: int | None, now: datetime
    ) -> dict[str, Any] | None:
        """Training/serving skew of the monitored version (ML Test Score, Monitoring 3): its
        newest ``skew_sample`` logged predictions rescored with the registered model, at most
        every ``skew_interval_s``. The result goes into this monitoring run's summary, where the
        ``loopml_skew_*`` gauges read it; a check not yet due carries the previous result
        forward, with its time. Skew found is also an audit record."""
        if version is None or result_id is None:
            return None
        last = self._previous_skew(result_id)
        if last is not None and last.get("model_version") == version:
            age = (now - datetime.fromisoformat(last["checked_at"])).total_seconds()
            if 0 <= age < self.settings.skew_interval_s:
                self.store.annotate_monitor_result(result_id, SKEW_KEY, last)
                return last
        with self._abandonable("monitor"):  # loads the model: seconds
            found = self._check_skew(version, now)
        self.store.annotate_monitor_result(result_id, SKEW_KEY, found)
        return found

    def _previous_skew(self, result_id: int) -> dict[str, Any] | None:
        query = (
            select(MonitorResult.summary)
            .where(MonitorResult.model_name == self.registry.name, MonitorResult.id < result_id)
            .order_by(MonitorResult.id.desc())
            .limit(1)
        )
        with self.store.session() as session:
            summary = session.execute(query).scalar_one_or_none()
        skew = (summary or {}).get(SKEW_KEY)
        return dict(skew) if isinstance(skew, dict) and "checked_at" in skew else None

    def _check_skew(self, version: str, now: datetime) -> dict[str, Any]:
        from loopml.monitoring import check_skew

        stamp = {"model_version": version, "checked_at": now.isoformat()}
        try:
            report = check_skew(self.settings, version=version, sample=self.settings.skew_sample)
        except LoopmlError as exc:
            # On the record as an error (no gauge): checked again once the interval passed.
            log.warning("skew check of version %s failed: %s", version, exc)
            return stamp | {"error": _one_line(exc)}
        found: dict[str, Any] = report.to_dict() | stamp
        if not report.passed:
            self._audit(
                "skew_detected",
                f"version {version}: {report.share_above:.1%} of {report.rows} logged "
                f"predictions differ from the registered model's by more than "
                f"{report.tolerance:g} (max {report.max_abs_diff:.3g}), "
                f"{report.label_mismatches} label mismatches",
                to_version=version,
                details=found,
            )
        return found

    def _learning_gap(
        self,
        summary: MonitorSummary,
        splits: Splits,
        new: pd.DataFrame,
        result_id: int | None,
        now: datetime,
    ) -> LearningGap | None:
        """The champion's macro-F1 on the new labels against the reachable estimate on the same
        labels, once enough arrived. The estimate (a few fits) is redone only when the new
        labels grew by half since the last one: learning curves are read on a log scale."""
        window, s = summary.quality, self.settings
        self._fresh_estimate = False
        if len(new) < s.retrain_min_new_labels:
            return None
        version = summary.model_version
        cached = self._estimate
        if cached is None or cached[0] != version or len(new) >= 1.5 * cached[1].labels:
            estimate = reachable_macro_f1(
                splits,
                new,
                recipe=choose_recipe(self.registry).recipe,
                champion=self.registry.load(version),
                seed=s.seed,
            )
            self._estimate, self._fresh_estimate = (version, estimate), True
        reachable = self._estimate[1] if self._estimate else None
        if reachable is None or reachable.champion_macro_f1 is None:
            return None
        gap = LearningGap(
            reachable.champion_macro_f1,
            reachable.macro_f1,
            reachable.labels,
            s.retrain_reachable_margin,
            gap_ci=reachable.gap_ci,
            window_macro_f1=window.macro_f1,
        )
        learning = gap.to_dict() | {
            "estimate": reachable.to_dict(),
            "estimated_at": now.isoformat(),
        }
        summary.learning = learning
        if result_id is not None:
            self.store.annotate_monitor_result(result_id, "learning", learning)
        return gap

    def _audit_noise_guard(self, noise: dict[str, Any], version: str) -> None:
        """An alert on the record when the noise check marked too much feedback to hold back."""
        if noise.get("guard_tripped"):
            self._audit(
                "label_noise_guard",
                f"the label-noise check marked {noise['flagged']} of {noise['checked']} "
                f"feedback rows (more than {noise['max_fraction']:g}): none held back, "
                "the gate judges them; look for a label shift or a bad source",
                to_version=version,
                details=noise,
            )

    def _fence(self, step: str) -> None:
        """Before the pipeline registers a version: only while this controller holds the lease."""
        if step in ("register", "gate"):
            self.lease.renew()

    def _retrain(self, seen: Tick, trigger: str) -> Tick:
        # The attempt is on the lease row from here until its audit record: a controller killed
        # in between leaves it for the next holder, which records it (the cooldown counts it).
        self.lease.renew(step="retrain")
        try:
            tick = self._retrain_and_audit(seen, trigger)
        except ControllerBusyError:
            raise  # another controller holds the lease now: this one records nothing
        except Exception:
            self._clear_step()  # retrain_failed is on the record
            raise
        self._clear_step()
        return tick

    def _retrain_and_audit(self, seen: Tick, trigger: str) -> Tick:
        why = seen.reason
        feedback = labeled_feedback(self.store, self.registry.name)
        try:
            with self._abandonable("retrain"):
                result = retrain(
                    self.settings, self.registry, feedback, trigger=trigger, progress=self._fence
                )
        except ControllerBusyError:
            raise
        except Exception as exc:
            # Recorded so that the cooldown also spaces out failing retrains.
            message = _one_line(exc)
            self._audit("retrain_failed", f"{why}; {message}")
            raise
        self.lease.renew()
        numbers = {
            "gate": result.gate.to_dict(),
            "dataset_version": result.dataset_version,
            "run_id": result.run_id,
            "monitor_verdict": trigger,
            "why": why,
            "label_provenance": result.provenance,
            "recipe": {
                "name": result.recipe,
                "params": result.recipe_params,
                "why": result.recipe_reason,
            },
        }
        if result.noise is not None:
            numbers["label_noise"] = result.noise  # feedback held back as likely mislabelled
            self._audit_noise_guard(result.noise, result.version)
        if result.tuning_record is not None:
            # what was searched, start (the champion's parameters) vs best, who approved them
            numbers["tuning"] = result.tuning_record
        if seen.learning:
            numbers["learning"] = seen.learning
        if not result.gate.passed:
            failed = ", ".join(
                f"{c.name} {c.value:.3f} (threshold {c.threshold:.3f})"
                for c in result.gate.failures()
            )
            self._audit(
                "retrain_rejected",
                f"{why}; gate failed: {failed}",
                to_version=result.version,
                details=numbers,
            )
            return replace(
                seen,
                action="retrain_rejected",
                reason=f"gate failed: {failed}",
                version=result.version,
            )
        self._audit("retrain", why, to_version=result.version, details=numbers)
        # Recorded; a controller killed before the rollout starts leaves this step for the next
        # holder, which starts it (see _recover).
        self.lease.renew(step=ROLLOUT_START)
        try:
            routing = rollout.start(
                self.settings,
                self.store,
                self.registry,
                result.version,
                reason=f"retrained after {trigger}",
                source="controller",
            )
        except ApprovalRequiredError as exc:
            # Parameters the retrain-tune policy does not cover: the version waits for a human
            # (`loopml approve`, then `loopml rollout start`); the loop goes on.
            message = _one_line(exc)
            self._audit("retrain_awaiting_approval", message, to_version=result.version)
            return replace(
                seen, action="retrain_awaiting_approval", reason=message, version=result.version
            )
        return replace(
            seen,
            action="rollout_started",
            reason=f"version {result.version}: {why}",
            version=result.version,
            routing=routing,
        )

    def _stopping(self, stop: threading.Event) -> bool:
        return stop.is_set() or self.stop_signal is not None

    def run(self, *, stop: threading.Event | None = None, max_ticks: int | None = None) -> None:
        """Tick every ``controller_interval_s`` until ``stop`` is set, a signal asks to stop
        (under :meth:`stop_on_signals`), or ``max_ticks``; the lease is released at the end.

        While another controller holds the lease this one stands by: it reports the holder
        (a ``standby`` tick, once per holder) and polls, taking over once the lease expires.
        """
        stop = stop or threading.Event()
        ticks, failures, standby_for = 0, 0, None
        try:
            while not self._stopping(stop) and (max_ticks is None or ticks < max_ticks):
                started = time.monotonic()
                try:
                    self.tick()
                    standby_for, failures = None, 0
                except ControllerBusyError as exc:
                    if exc.holder != standby_for:
                        self._report(Tick(datetime.now(UTC), "standby", str(exc)))
                    standby_for = exc.holder
                    self._wait(stop, started + self._standby_poll_s())
                    continue
                except Exception as exc:
                    # One bad tick (a store outage, a failed retrain) must not end the loop. The
                    # message, not a URL or a traceback, is what gets reported.
                    failures += 1
                    self._report(Tick(datetime.now(UTC), "error", _one_line(exc)))
                ticks += 1
                self._wait(stop, started + self._next_tick_s(failures))
        finally:
            self.release()

    def _next_tick_s(self, failures: int) -> float:
        """Seconds from a tick's start to the next: the interval, doubled for each failed tick
        in a row beyond the first (up to ``TICK_BACKOFF_MAX`` times, and never past half the
        rollout lease, which a rollout in progress must not outlive)."""
        interval = self.settings.controller_interval_s
        if failures < 2:
            return interval
        backoff: float = interval * min(2 ** (failures - 1), TICK_BACKOFF_MAX)
        return max(interval, min(backoff, self.settings.rollout_lease_s / 2))

    def _standby_poll_s(self) -> float:
        return min(self.settings.controller_interval_s, self.settings.controller_lease_s / 4)

    def _wait(self, stop: threading.Event, deadline: float) -> None:
        """Wait until ``deadline`` (a time.monotonic()), keeping a held lease renewed.

        In slices: a signal handler only sets a flag (an Event set from a handler can deadlock
        on the lock its own thread holds in wait())."""
        while not self._stopping(stop) and (left := deadline - time.monotonic()) > 0:
            stop.wait(min(left, _WAIT_SLICE_S))
            try:
                self.lease.renew_if_due()
            except LoopmlError as exc:
                # Lost, or the database is away: the next tick takes the lease again or waits.
                log.warning("%s", exc)


def _abandoned_class(step: str, signal_name: str) -> type[StepAbandoned]:
    """A StepAbandoned for ``step`` that another thread can raise (it is raised by class)."""

    class Abandoned(StepAbandoned):
        def __init__(self) -> None:
            super().__init__(step, signal_name)

    return Abandoned


def _one_line(exc: BaseException) -> str:
    """What a tick reports of an error: loopml's message, an MLflow outage named as one (never
    a URL with its password or a traceback), else the exception's type."""
    outage = tracking_unavailable(exc)
    if outage is not None:
        return str(outage)
    return str(exc) if isinstance(exc, LoopmlError) else type(exc).__name__

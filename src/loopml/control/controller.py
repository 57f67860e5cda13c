"""The controller: monitor > policy > retrain > gate > rollout > promote or roll back, each tick.

Its state is the routing state and the audit log in the loopml database, nothing in memory, so a
controller killed at any point resumes where it was on its next tick (or rolls back, when it was
away longer than the rollout lease).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from loopml.config import Settings
from loopml.control import rollout
from loopml.control.live import labeled_feedback
from loopml.control.policy import decide
from loopml.control.retrain import champion_splits, new_labeled_rows, retrain
from loopml.data.privacy import purge
from loopml.errors import LoopmlError, MonitorError
from loopml.registry import Registry
from loopml.routing import (
    CHALLENGER,
    CHAMPION,
    Routing,
    load_routing,
    routing_in,
    save_routing,
)
from loopml.store import AuditEntry, Store, current_actor

__all__ = ["Controller", "MonitorNote", "Tick"]


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

    @property
    def current_routing(self) -> Routing | None:
        """The routing this tick left behind, when it changed or checked one."""
        return self.step.routing if self.step is not None else self.routing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (one line per tick of ``loopml controller --json``)."""
        out: dict[str, Any] = {"at": self.at.isoformat(), "action": self.action}
        out["reason"] = self.reason
        if self.monitor is not None:
            out["monitor"] = asdict(self.monitor)
        if self.new_labels is not None:
            out["new_labels"] = self.new_labels
        if self.version is not None:
            out["version"] = self.version
        if self.routing is not None:
            out["routing"] = self.routing.to_dict()
        if self.step is not None:
            out["rollout"] = self.step.to_dict()
        return out


class Controller:
    """Closes the loop for one model."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry | None = None,
        *,
        on_tick: Callable[[Tick], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry or Registry(settings)
        self.on_tick = on_tick
        self._purged_at: datetime | None = None

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
                AuditEntry.action.in_(["retrain", "retrain_rejected", "retrain_failed"]),
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

    def tick(self, *, now: datetime | None = None) -> Tick:
        """One pass of the loop."""
        now = now or datetime.now(UTC)
        self._reconcile()
        self._purge_if_due(now)
        step = rollout.step(self.settings, self.store, self.registry, now=now)
        if step is not None:
            result = Tick(now, f"rollout_{step.action}", step.reason, step=step)
        else:
            result = self._monitor_and_decide(now)
        if self.on_tick:
            self.on_tick(result)
        return result

    def _purge_if_due(self, now: datetime) -> None:
        """Apply ``LOOPML_RETENTION_DAYS`` once a day (the first tick after a start included):
        logged texts do not outlive the retention period while the loop runs."""
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

        try:
            report = run_monitor(self.settings)
        except MonitorError as exc:
            return Tick(now, "idle", str(exc))
        summary = report.summary
        new_labels = 0
        if summary.verdict in ("drift", "quality_alarm"):
            feedback = labeled_feedback(self.store, self.registry.name)
            splits, _ = champion_splits(self.registry)
            new_labels = len(new_labeled_rows(feedback, splits, set(splits.train["label"])))
        decision = decide(
            summary,
            new_labels=new_labels,
            last_retrain=self._last_retrain(),
            now=now,
            settings=self.settings,
        )
        seen = Tick(
            now,
            decision.action,
            decision.reason,
            monitor=MonitorNote(summary.verdict, summary.reasons, str(report.report_path)),
            new_labels=new_labels,
        )
        return seen if decision.action != "retrain" else self._retrain(seen, summary.verdict)

    def _retrain(self, seen: Tick, trigger: str) -> Tick:
        why = seen.reason
        feedback = labeled_feedback(self.store, self.registry.name)
        try:
            result = retrain(self.settings, self.registry, feedback, trigger=trigger)
        except Exception as exc:
            # Recorded so that the cooldown also spaces out failing retrains.
            message = str(exc) if isinstance(exc, LoopmlError) else type(exc).__name__
            self._audit("retrain_failed", f"{why}; {message}")
            raise
        numbers = {
            "gate": result.gate.to_dict(),
            "dataset_version": result.dataset_version,
            "run_id": result.run_id,
            "monitor_verdict": trigger,
            "why": why,
            "label_provenance": result.provenance,
        }
        if not result.gate.passed:
            failed = ", ".join(c.name for c in result.gate.failures())
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
        routing = rollout.start(
            self.settings,
            self.store,
            self.registry,
            result.version,
            reason=f"retrained after {trigger}",
            source="controller",
        )
        return replace(
            seen,
            action="rollout_started",
            reason=f"version {result.version}: {why}",
            version=result.version,
            routing=routing,
        )

    def run(self, *, stop: threading.Event | None = None, max_ticks: int | None = None) -> None:
        """Tick every ``controller_interval_s`` until ``stop`` is set (or ``max_ticks``)."""
        stop = stop or threading.Event()
        ticks = 0
        while not stop.is_set() and (max_ticks is None or ticks < max_ticks):
            started = time.monotonic()
            try:
                self.tick()
            except Exception as exc:
                # One bad tick (a store outage, a failed retrain) must not end the loop. The
                # message, not a URL or a traceback, is what gets reported.
                message = str(exc) if isinstance(exc, LoopmlError) else type(exc).__name__
                if self.on_tick:
                    self.on_tick(Tick(datetime.now(UTC), "error", message))
            ticks += 1
            stop.wait(max(0.0, self.settings.controller_interval_s - (time.monotonic() - started)))

"""Rollouts: start, advance, promote, roll back. The one code path for controller, CLI and API.

A rollout lives in the routing state (``details['rollout']``), so it survives any restart. Every
transition is one database transaction holding both the new routing and its audit record; the
MLflow ``challenger`` alias follows, and each decision is also logged to the rollout's MLflow run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException
from sqlalchemy.orm import Session

from loopml.config import Settings, settings_of
from loopml.control.analysis import Analysis, Limits, analyze
from loopml.control.approval import check_approved
from loopml.control.correlation import rollout_pair
from loopml.control.live import collect
from loopml.control.promotion import promote
from loopml.errors import RolloutError
from loopml.monitoring import OFFLINE_ONLINE_KEY
from loopml.registry import Registry
from loopml.routing import CHAMPION, Mode, Routing, load_routing, routing_in, save_routing
from loopml.store import Store, current_actor
from loopml.tracking import experiment_id, run_tags

__all__ = ["StepResult", "abort", "limits_from", "live_analysis", "start", "status", "step"]


@dataclass
class StepResult:
    """What one rollout step did: ``wait``, ``advance``, ``promote`` or ``rollback``."""

    action: str
    routing: Routing
    analysis: Analysis | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "action": self.action,
            "reason": self.reason,
            "routing": self.routing.to_dict(),
            "analysis": self.analysis.to_dict() if self.analysis else None,
        }


def limits_from(settings: Settings) -> Limits:
    """Analysis thresholds from settings (the ``rollout_*`` ones)."""
    return settings_of(Limits, settings)


def live_analysis(settings: Settings, store: Store, routing: Routing) -> Analysis:
    """Analyze champion against challenger on the traffic since the current step began."""
    rollout = routing.rollout or {}
    champ, chall, paired = collect(
        store,
        routing.model_name,
        champion=str(routing.champion),
        challenger=str(routing.challenger),
        mode=routing.mode,
        since=datetime.fromisoformat(rollout["step_started_at"]),
    )
    return analyze(champ, chall, limits_from(settings), paired=paired)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _age_s(stamp: str, now: datetime) -> float:
    moment = datetime.fromisoformat(stamp)
    return (now - moment).total_seconds()


def _mlflow_run(settings: Settings, registry: Registry, version: str, mode: str) -> str | None:
    try:
        exp = experiment_id(settings, registry.client)
        run = registry.client.create_run(
            exp,
            run_name=f"rollout-v{version}-{mode}",
            tags={"loopml.kind": "rollout", "loopml.challenger": version, **run_tags()},
        )
        return str(run.info.run_id)
    except (MlflowException, OSError):
        return None  # the audit log is the record of truth; MLflow is a convenience view


def _log_decision(
    registry: Registry, rollout: dict[str, Any], action: str, payload: dict[str, Any]
) -> None:
    run_id = rollout.get("run_id")
    if not run_id:
        return
    moment = _now()
    n = int(moment.timestamp())  # MLflow step: seconds, so decisions of a rollout order by time
    try:
        name = f"decisions/{moment:%Y%m%dT%H%M%S%f}-{action}.json"
        registry.client.log_dict(run_id, payload, name)
        analysis = payload.get("analysis") or {}
        for side in ("champion", "challenger"):
            stats = analysis.get(side) or {}
            if stats.get("labeled"):
                registry.client.log_metric(
                    run_id, f"{side}_accuracy", stats["correct"] / stats["labeled"], step=n
                )
        registry.client.log_metric(run_id, "weight", float(payload.get("weight", 0.0)), step=n)
        if action in ("promote", "rollback", "abort"):
            registry.client.set_tag(run_id, "loopml.rollout.outcome", action)
            registry.client.set_terminated(run_id, "FINISHED" if action == "promote" else "KILLED")
    except (MlflowException, OSError):
        pass  # MLflow is a view; the audit record already holds the decision


def _end_run(registry: Registry, run_id: str | None, why: str) -> None:
    """End the MLflow run of a rollout that never started as FAILED, with the reason as a tag."""
    if not run_id:
        return
    try:
        registry.client.set_tag(run_id, "loopml.rollout.outcome", why[:4000])
        registry.client.set_terminated(run_id, "FAILED")
    except (MlflowException, OSError):
        pass  # MLflow is a view; a controller taking the lease over closes it too


def _check_same(routing: Routing, expect: str | None) -> None:
    if expect is not None and (routing.rollout or {}).get("id") != expect:
        raise RolloutError("the rollout changed while it was being analyzed: nothing was done")


def _transition(
    store: Store,
    registry: Registry,
    *,
    action: str,
    reason: str,
    change: Callable[[Routing], None],
    analysis: Analysis | None = None,
    expect: str | None = None,
    details: dict[str, Any] | None = None,
) -> Routing:
    """Apply ``change`` to the routing and append the audit record (``details`` added to its
    numbers), in one transaction.

    With ``expect``, the rollout must still be the one that was analyzed (an operator may have
    aborted it, or started another, in the meantime).
    """
    with store.session() as session:
        routing = routing_in(session, registry.name, lock=True)
        _check_same(routing, expect)
        before = routing.challenger
        change(routing)
        numbers: dict[str, Any] = {"mode": routing.mode, "weight": routing.weight}
        numbers |= details or {}
        if analysis is not None:
            numbers["analysis"] = analysis.to_dict()
        store.audit(
            actor=current_actor(),
            action=action,
            model_name=registry.name,
            from_version=routing.champion,
            to_version=routing.challenger or before,
            reason=reason,
            details=numbers,
            session=session,
        )
        save_routing(session, routing)
    return routing


def start(
    settings: Settings,
    store: Store,
    registry: Registry,
    version: str,
    *,
    mode: Mode | None = None,
    weight: float | None = None,
    reason: str = "",
    force: bool = False,
    source: str = "manual",
) -> Routing:
    """Start a shadow or canary rollout of ``version`` against the champion."""
    mode = mode or settings.rollout_mode
    if mode not in ("shadow", "canary"):
        raise RolloutError(f"mode must be 'shadow' or 'canary', got {mode!r}")
    mv = registry.version(version)
    champion = registry.alias(CHAMPION)
    if champion is None:
        raise RolloutError("no champion to roll out against: promote a first version")
    if str(champion.version) == str(mv.version):
        raise RolloutError(f"version {mv.version} is already the champion")
    verdict = registry.gate_verdict(mv)
    if verdict != "passed" and not force:
        raise RolloutError(
            f"version {mv.version} failed its gate ({verdict}); use --force --reason"
        )
    check_approved(registry, mv)  # a canary is production traffic: the spec is reviewed first
    steps = [w for w in settings.rollout_steps if weight is None or w > weight]
    if weight is not None:
        if not 0 < weight < 1:
            raise RolloutError(
                f"a canary weight must be between 0 and 100%, got {weight:.0%} "
                "(all traffic on a version is a promotion: use `loopml promote`)"
            )
        steps = [weight, *steps]
    now = _iso(_now())
    run_id = _mlflow_run(settings, registry, str(mv.version), mode)
    rollout = {
        "id": uuid.uuid4().hex[:12],
        "mode": mode,
        "steps": steps,
        "step": 0,
        "started_at": now,
        "step_started_at": now,
        "heartbeat_at": now,
        "source": source,
        "reason": reason,
        "run_id": run_id,
    }

    def change(routing: Routing) -> None:
        if routing.rollout is not None:
            raise RolloutError(f"a rollout of version {routing.challenger} is already running")
        routing.champion = str(champion.version)
        routing.challenger = str(mv.version)
        routing.mode = mode
        routing.weight = steps[0] if mode == "canary" else 0.0
        routing.details["rollout"] = rollout

    try:
        routing = _transition(
            store, registry, action=f"rollout_start_{mode}", reason=reason, change=change
        )
    except BaseException as exc:
        # Refused (another rollout runs) or cut short: its MLflow run must not stay RUNNING.
        _end_run(registry, run_id, f"not started: {exc}")
        raise
    registry.set_challenger(str(mv.version))
    _log_decision(registry, rollout, "start", {"weight": routing.weight, "steps": steps})
    return routing


def _end(routing: Routing) -> None:
    routing.challenger, routing.mode, routing.weight = None, "none", 0.0
    routing.details.pop("rollout", None)


def abort(
    settings: Settings,
    store: Store,
    registry: Registry,
    *,
    reason: str,
    analysis: Analysis | None = None,
    action: str = "rollout_abort",
    expect: str | None = None,
    details: dict[str, Any] | None = None,
) -> Routing:
    """Send all traffic back to the champion at once and record why (``details`` added to the
    audit record)."""
    current = load_routing(store, registry.name)
    rollout = current.rollout
    if rollout is None:
        raise RolloutError("no rollout in progress")

    def change(routing: Routing) -> None:
        _end(routing)

    routing = _transition(
        store,
        registry,
        action=action,
        reason=reason,
        change=change,
        analysis=analysis,
        expect=expect,
        details=details,
    )
    registry.set_challenger(None)
    _log_decision(
        registry,
        rollout,
        "rollback" if action != "rollout_abort" else "abort",
        {"weight": 0.0, "reason": reason, "analysis": analysis.to_dict() if analysis else None},
    )
    return routing


def _promote(
    settings: Settings, store: Store, registry: Registry, routing: Routing, analysis: Analysis
) -> Routing:
    rollout = dict(routing.rollout or {})
    version = str(routing.challenger)
    pair = rollout_pair(settings, store, registry, routing)

    def finish(session: Session) -> None:
        state = routing_in(session, registry.name, lock=True)
        _check_same(state, rollout.get("id"))
        state.champion = version
        _end(state)
        save_routing(session, state)

    promote(
        store,
        registry,
        version,
        force=True,
        reason="rollout passed its live analysis",
        action="rollout_promote",
        details={"analysis": analysis.to_dict(), OFFLINE_ONLINE_KEY: pair},
        routing=finish,
    )
    _log_decision(registry, rollout, "promote", {"weight": 1.0, "analysis": analysis.to_dict()})
    return load_routing(store, registry.name)


def _rollback(
    settings: Settings,
    store: Store,
    registry: Registry,
    reason: str,
    analysis: Analysis | None,
    expect: str,
) -> StepResult:
    # The rollout's offline/live pair goes into its last record (ML Test Score, Model 2).
    pair = rollout_pair(settings, store, registry, load_routing(store, registry.name))
    routing = abort(
        settings,
        store,
        registry,
        reason=reason,
        analysis=analysis,
        action="rollout_rollback",
        expect=expect,
        details={OFFLINE_ONLINE_KEY: pair},
    )
    return StepResult("rollback", routing, analysis, reason)


def _failures(analysis: Analysis, *, step_ended: bool) -> list[str]:
    # Errors and latency fail at once. Quality is tested once, when the step ends: testing it
    # on every tick of a growing sample would roll back good challengers far more than alpha.
    return [
        f"{c.name}: {c.detail}"
        for c in analysis.checks
        if c.status == "fail" and (step_ended or c.name != "live_quality")
    ]


def step(
    settings: Settings, store: Store, registry: Registry, *, now: datetime | None = None
) -> StepResult | None:
    """Analyze the rollout in progress and advance, promote, roll back or wait. None if idle."""
    now = now or _now()
    routing = load_routing(store, registry.name)
    rollout = routing.rollout
    if rollout is None or routing.champion is None or routing.challenger is None:
        return None
    expect = str(rollout["id"])
    away = _age_s(rollout["heartbeat_at"], now)
    if away > settings.rollout_lease_s:
        reason = f"controller was away {away:.0f}s (lease {settings.rollout_lease_s:.0f}s)"
        return _rollback(settings, store, registry, reason, None, expect)
    analysis = live_analysis(settings, store, routing)
    step_ended = _age_s(rollout["step_started_at"], now) >= settings.rollout_step_min_s
    failed = _failures(analysis, step_ended=step_ended)
    if failed:
        return _rollback(settings, store, registry, "; ".join(failed), analysis, expect)
    if _age_s(rollout["started_at"], now) > settings.rollout_max_duration_s:
        reason = f"no verdict within {settings.rollout_max_duration_s:.0f}s"
        return _rollback(settings, store, registry, reason, analysis, expect)
    if not (step_ended and analysis.status == "pass"):
        _heartbeat(store, registry, now, expect)
        return StepResult("wait", load_routing(store, registry.name), analysis, _waiting(analysis))
    index = int(rollout["step"]) + 1
    # All traffic on the challenger is the promotion itself: with no champion traffic left
    # there would be nothing to compare it with.
    if routing.mode == "shadow" or index >= len(rollout["steps"]) or rollout["steps"][index] >= 1:
        promoted = _promote(settings, store, registry, routing, analysis)
        return StepResult("promote", promoted, analysis, "every step passed")
    return _advance(store, registry, routing, analysis, now)


def _waiting(analysis: Analysis) -> str:
    # the checks still waiting say what for, so an operator (and the demo) can see why a step lasts
    pending = [f"{c.name}: {c.detail}" for c in analysis.checks if c.status == "wait"]
    return "; ".join(pending) or f"analysis {analysis.status}, step not over"


def _heartbeat(store: Store, registry: Registry, now: datetime, expect: str) -> None:
    with store.session() as session:
        routing = routing_in(session, registry.name, lock=True)
        if routing.rollout is not None and routing.rollout.get("id") == expect:
            routing.details["rollout"] = routing.rollout | {"heartbeat_at": _iso(now)}
            save_routing(session, routing)


def _advance(
    store: Store, registry: Registry, routing: Routing, analysis: Analysis, now: datetime
) -> StepResult:
    rollout = dict(routing.rollout or {})
    index = int(rollout["step"]) + 1
    weight = float(rollout["steps"][index])

    def change(state: Routing) -> None:
        state.weight = weight
        state.details["rollout"] = rollout | {
            "step": index,
            "step_started_at": _iso(now),
            "heartbeat_at": _iso(now),
        }

    new = _transition(
        store,
        registry,
        action="rollout_advance",
        reason=f"analysis passed: weight {routing.weight:.0%} -> {weight:.0%}",
        change=change,
        analysis=analysis,
        expect=rollout["id"],
    )
    _log_decision(registry, rollout, "advance", {"weight": weight, "analysis": analysis.to_dict()})
    return StepResult("advance", new, analysis, f"weight -> {weight:.0%}")


@dataclass
class RolloutStatus:
    """The routing state and, during a rollout, a fresh analysis of it."""

    routing: Routing
    analysis: Analysis | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        analysis = self.analysis.to_dict() if self.analysis is not None else None
        return {"routing": self.routing.to_dict(), "analysis": analysis}


def status(settings: Settings, store: Store, registry: Registry) -> RolloutStatus:
    """Routing state plus a fresh analysis of the rollout in progress (if any)."""
    routing = load_routing(store, registry.name)
    analysis = live_analysis(settings, store, routing) if routing.rollout is not None else None
    return RolloutStatus(routing, analysis)

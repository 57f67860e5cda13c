"""The offline/live pair of a rollout, recorded in its final audit record (ML Test Score, Model 2).

Offline: the gate's macro-F1 of the challenger minus the champion's (on the same test rows), from
the ``gate.json`` the gate wrote to the challenger's training run. Live: the challenger's live
macro-F1 minus the champion's on the labelled traffic each served since the rollout started.
Either is None, with the reason, when it cannot be measured (no champion at the gate, too few
labels); a rollout is never held up by it. :mod:`loopml.monitoring.offline_online` reads the
pairs back.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from loopml.config import Settings
from loopml.control.live import live_macro_f1
from loopml.errors import LoopmlError
from loopml.registry import Registry
from loopml.routing import Routing
from loopml.store import Store

__all__ = ["offline_delta", "rollout_pair"]

log = logging.getLogger(__name__)


def _gate_record(registry: Registry, version: str) -> dict[str, Any]:
    mv = registry.version(version)
    if not mv.run_id:
        raise LoopmlError(f"version {version} has no training run")
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.client.download_artifacts(mv.run_id, "gate.json", tmp)
        record: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return record


def offline_delta(registry: Registry, version: str) -> dict[str, Any]:
    """The gate's challenger-minus-champion test macro-F1 of ``version``, with both scores and
    the champion it was judged against (``offline_delta`` None, and why, when unknown).

    The challenger's score is the gate's ``macro_f1`` check (on the rows the champion was scored
    on: neither model trained on them; 4 decimals), the champion's is its evaluation on them.
    """
    try:
        record = _gate_record(registry, version)
    except (LoopmlError, MlflowException, OSError, ValueError) as exc:
        return {"offline_delta": None, "why": f"no gate record: {str(exc)[:200]}"}
    gate = record.get("gate") or {}
    checks: list[dict[str, Any]] = gate.get("checks") or []
    check = next((c for c in checks if c.get("name") == "macro_f1"), {})
    champion = (record.get("champion") or {}).get("metrics") or {}
    out: dict[str, Any] = {
        "gate_champion": gate.get("champion_version"),
        "compared_rows": (gate.get("comparison") or {}).get("rows"),
        "challenger_macro_f1": check.get("value"),
        "champion_macro_f1": champion.get("macro_f1"),
        "offline_delta": None,
    }
    if out["challenger_macro_f1"] is None or out["champion_macro_f1"] is None:
        return out | {"why": "the gate compared with no champion"}
    delta = float(out["challenger_macro_f1"]) - float(out["champion_macro_f1"])
    return out | {"offline_delta": round(delta, 6)}


def rollout_pair(
    settings: Settings, store: Store, registry: Registry, routing: Routing
) -> dict[str, Any]:
    """(offline delta, live delta) of the rollout in ``routing``, as it ends. Never raises: a
    rollback must not wait on a measurement (what failed is in ``notes``)."""
    try:
        return _measure(settings, store, registry, routing)
    except Exception as exc:  # a safety path: the reason is kept, the rollout goes on
        log.warning("offline/live pair not measured: %s", exc)
        return {
            "champion": routing.champion,
            "challenger": routing.challenger,
            "mode": routing.mode,
            "offline_delta": None,
            "live_delta": None,
            "notes": f"not measured: {type(exc).__name__}: {str(exc)[:200]}",
        }


def _measure(
    settings: Settings, store: Store, registry: Registry, routing: Routing
) -> dict[str, Any]:
    rollout = routing.rollout or {}
    champion, challenger = str(routing.champion), str(routing.challenger)
    offline = offline_delta(registry, challenger)
    live = live_macro_f1(
        store,
        routing.model_name,
        champion=champion,
        challenger=challenger,
        mode=routing.mode,
        since=datetime.fromisoformat(rollout["started_at"]),
    )
    need = settings.rollout_min_labeled
    enough = min(live.champion_labeled, live.challenger_labeled) >= need
    missing = [offline["why"]] if "why" in offline else []
    if not enough:
        missing.append(
            f"live labels: champion {live.champion_labeled}, challenger "
            f"{live.challenger_labeled}; need {need} each"
        )
    if offline.get("gate_champion") not in (None, champion):
        # Still a pair: the delta is the gate's, against the champion it saw.
        missing.append(f"the gate judged against version {offline['gate_champion']}")
    return {
        "champion": champion,
        "challenger": challenger,
        "mode": routing.mode,
        "offline_delta": offline["offline_delta"],
        "live_delta": live.delta if enough else None,
        "offline": {k: v for k, v in offline.items() if k != "offline_delta"},
        "live": {
            "labels": live.labels,
            "champion_labeled": live.champion_labeled,
            "challenger_labeled": live.challenger_labeled,
            "champion_macro_f1": live.champion_macro_f1,
            "challenger_macro_f1": live.challenger_macro_f1,
        },
        "notes": "; ".join(missing) or None,
    }

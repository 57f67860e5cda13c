"""The status view: what one worker serves and obeys, as JSON for ``/v1/status`` and the page."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from loopml.routing import CHALLENGER, CHAMPION, lease_expired

if TYPE_CHECKING:
    from loopml.serving.models import Served
    from loopml.serving.runtime import Runtime

__all__ = ["model_status", "routing_status", "served_status", "worker_status"]

_ROLLOUT_KEYS = (
    "id",
    "mode",
    "step",
    "steps",
    "started_at",
    "step_started_at",
    "heartbeat_at",
    "source",
    "reason",
)


def routing_status(runtime: Runtime, served: Served | None = None) -> dict[str, Any]:
    """The routing state this worker follows for ``served`` (default: the default model) and
    what it obeys now (JSON-ready)."""
    served = served or runtime.models.default
    follower, plan = served.follower, served.router.plan
    routing = follower.routing
    champion = served.router.champion.model
    challenger = plan.challenger
    rollout = routing.rollout if routing is not None else None
    return {
        "source": "routing_state" if routing is not None and routing.champion else "alias",
        "champion": routing.champion if routing is not None else None,
        "challenger": routing.challenger if routing is not None else None,
        "mode": routing.mode if routing is not None else "none",
        "weight": routing.weight if routing is not None else 0.0,
        "effective_mode": plan.mode,
        "effective_weight": plan.routing.weight if plan.mode == "canary" and plan.routing else 0.0,
        "serving": {
            CHAMPION: champion.version if champion else None,
            CHALLENGER: challenger.version if challenger else None,
        },
        "lease_expired": (
            lease_expired(routing, runtime.settings.rollout_lease_s) if routing else False
        ),
        "updated_at": routing.updated_at.isoformat()
        if routing is not None and routing.updated_at
        else None,
        "read_at": follower.routing_read_at,
        "error": follower.routing_error,
        "rollout": {k: rollout.get(k) for k in _ROLLOUT_KEYS} if rollout is not None else None,
    }


def _variants(served: Served) -> dict[str, Any]:
    return {
        name: {
            "version": slot.model.version,
            "variant": slot.model.variant,
            "alias": slot.alias,
            "classes": list(slot.model.classes),
            "loaded_at": slot.model.loaded_at,
            "authenticity": slot.model.authenticity,
            "versions_served": slot.history[-10:],
        }
        for name, slot in served.router.slots.items()
        if slot.model is not None
    }


def served_status(runtime: Runtime, served: Served) -> dict[str, Any]:
    """One served model: loaded or not, its size, use, label set, variants and routing."""
    return {
        "name": served.name,
        "default": served.name == runtime.models.default_name,
        "ready": served.router.ready,
        "loaded": served.loaded,
        "unloaded": not served.active,
        "bytes": served.size_bytes or served.last_bytes,
        "in_flight": served.in_flight,
        "classes": list(served.classes),
        "variants": _variants(served),
        "routing": routing_status(runtime, served),
        "queue_depth": sum(sl.batcher.queued for sl in served.router.slots.values()),
        "serving_errors": served.errors.status(),
        "last_reload": served.follower.last_reload,
    }


def model_status(runtime: Runtime, name: str) -> dict[str, Any]:
    """``/v1/models/{name}/status`` (404 naming the served models for any other name)."""
    return served_status(runtime, runtime.models.get(name))


def worker_status(runtime: Runtime) -> dict[str, Any]:
    """A JSON-ready snapshot for ``/v1/status`` (the default model's, and every served one's
    under ``served_models``)."""
    s = runtime.settings
    router = runtime.router
    models = _variants(runtime.models.default)
    return {
        "ready": router.ready,
        "pid": os.getpid(),
        "uptime_s": round(time.time() - runtime.started_at, 3),
        "model_name": s.model_name,
        "models": models,
        "routing": routing_status(runtime),
        "queue_depth": sum(
            sl.batcher.queued for sv in runtime.models.all() for sl in sv.router.slots.values()
        ),
        "predlog": runtime.predlog.status() if runtime.predlog else {},
        "serving_errors": runtime.errors.status(),
        "limits": {
            "max_batch_size": s.max_batch_size,
            "max_queue_size": s.max_queue_size,
            "max_text_chars": s.max_text_chars,
            "max_texts_per_request": s.max_texts_per_request,
            "max_body_bytes": s.max_body_bytes,
            "reload_interval_s": s.reload_interval_s,
            "routing_poll_s": s.routing_poll_s,
            "rollout_lease_s": s.rollout_lease_s,
            "log_text": s.log_text,
            "api_keys_required": runtime.guard.keys_required,
        },
        "last_reload": runtime.follower.last_reload,
        "served_models": {sv.name: served_status(runtime, sv) for sv in runtime.models.all()},
        "loaded_model_bytes": runtime.models.loaded_bytes,
        "max_loaded_model_bytes": s.max_loaded_model_bytes,
    }

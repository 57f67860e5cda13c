"""``/v1/admin/*``: operator actions, behind ``Authorization: Bearer $LOOPML_ADMIN_TOKEN``.

The promote and rollout routes are the HTTP twins of ``loopml promote`` and
``loopml rollout start|abort|status``: the same functions
(:mod:`loopml.control`'s public API, imported on first use: it loads MLflow), the same audit log,
run in a worker thread. Their errors map to statuses by the app's one handler. The audit actor says
the action came over HTTP (``http:admin@<client address>``). Every replica obeys the new routing
state within ``LOOPML_ROUTING_POLL_S``.

On a server of many models, ``?model=NAME`` acts on that served model (its registry, routing
row, audit trail and ``[models.NAME]`` settings); without it, on ``LOOPML_MODEL_NAME``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request

from loopml.config import Settings
from loopml.errors import (
    LoopmlError,
    NotReadyError,
    ReloadFailedError,
    RequestError,
    ServingError,
    StoreError,
)
from loopml.serving.deps import AdminDep, RuntimeDep
from loopml.serving.docs import error_responses
from loopml.serving.models import Served
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import (
    ApproveIn,
    ApproveOut,
    FeedbackRelabelIn,
    FeedbackRelabelOut,
    PromoteIn,
    ReleaseOut,
    ReloadOut,
    RolloutAbortIn,
    RolloutStartIn,
    RolloutStatusOut,
    RoutingOut,
)

__all__ = ["http_actor", "router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])

log = logging.getLogger("loopml.serving")

T = TypeVar("T")

ModelQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="the served model to act on (default: LOOPML_MODEL_NAME)",
    ),
]


def _served(runtime: Runtime, model: str | None) -> Served:
    """The served model an admin request acts on: ``model``, or the default one (404 naming
    the served models for a name this server does not serve)."""
    return runtime.models.get(model) if model else runtime.models.default


@router.post(
    "/reload",
    response_model=ReloadOut,
    responses=error_responses(401, 403, 404, 408, 409, 413, 503),
)
async def reload(_auth: AdminDep, runtime: RuntimeDep, model: ModelQuery = None) -> dict[str, Any]:
    """Follow the routing state and the registry alias now (this worker; others follow at their
    next poll).

    409 when the version to serve cannot be loaded or warmed up: the previous model keeps serving.
    """
    # held like a request: an unloaded model is loaded again (and counted) before the reload
    served = await runtime.models.acquire(_served(runtime, model).name)
    try:
        out = await served.follower.reload()
    finally:
        runtime.models.release(served)
    if out["result"] == "failed":
        raise ReloadFailedError(
            f"reload failed, still serving version {out['previous']}: {out['error']}"
        )
    return out


def http_actor(request: Request) -> str:
    """The audit actor of an admin request: it came over HTTP, from this client address."""
    client = request.client.host if request.client else "unknown"
    who = getattr(request.state, "admin_id", None) or "admin"
    return f"http:{who}@{client}"


async def _call(runtime: Runtime, request: Request, model: str | None, fn: Callable[..., T]) -> T:
    """Run ``fn(settings, store, registry)`` of the served model ``model`` in a thread as the
    HTTP actor. Its loopml errors reach the app's handler as they are; anything else (MLflow
    below) becomes a 503."""
    from loopml.store import acting_as

    served = _served(runtime, model)
    store = runtime.store
    if store is None:
        raise NotReadyError("the server is not started")
    actor = http_actor(request)

    def call() -> T:
        with acting_as(actor):
            return fn(served.settings, store, served.loader.registry)

    try:
        return await asyncio.to_thread(call)
    except StoreError as exc:
        raise StoreError(f"the loopml database is unavailable; retry later ({exc})") from None
    except LoopmlError:
        raise
    except Exception as exc:  # MLflow or anything below: never a 500 for an operator action
        log.error("admin rollout action failed: %s", type(exc).__name__)
        raise ServingError(f"the action failed: {type(exc).__name__}; retry later") from None


@router.post(
    "/rollout/start",
    response_model=RoutingOut,
    responses=error_responses(400, 401, 403, 404, 408, 409, 413, 422, 503),
)
async def rollout_start(
    body: RolloutStartIn,
    request: Request,
    _auth: AdminDep,
    runtime: RuntimeDep,
    model: ModelQuery = None,
) -> dict[str, Any]:
    """Start a shadow or canary rollout of ``version`` (``loopml rollout start``).

    404 for an unknown version; 409 when a rollout runs already, the version is the champion or
    its gate failed (without ``force``); 422 for a bad body (``force`` needs a ``reason``).
    """
    if body.force and not body.reason.strip():
        raise RequestError("reason: required with force (say why the gate is overridden)")

    def start(settings: Settings, store: Any, registry: Any) -> dict[str, Any]:
        from loopml import control

        registry.version(body.version)  # UnknownVersionError (404) before anything else
        routing = control.start_rollout(
            settings,
            store,
            registry,
            body.version,
            mode=body.mode,
            weight=body.weight,
            reason=body.reason,
            force=body.force,
        )
        return routing.to_dict()

    return await _call(runtime, request, model, start)


@router.post(
    "/promote",
    response_model=ReleaseOut,
    responses=error_responses(400, 401, 403, 404, 408, 409, 413, 422, 503),
)
async def promote(
    body: PromoteIn,
    request: Request,
    _auth: AdminDep,
    runtime: RuntimeDep,
    model: ModelQuery = None,
) -> dict[str, Any]:
    """Ship ``version`` as ``loopml promote`` does: a canary rollout that the controller promotes
    or rolls back by its live analysis; ``direct`` (with a ``reason``, audited as a forced
    promotion) makes it the champion at once. A model's first version becomes champion directly.

    404 for an unknown version; 409 when a rollout runs already, the version is the champion or
    its gate failed (without ``direct``); 422 for ``direct`` without a ``reason``.
    """
    if body.direct and not body.reason.strip():
        raise RequestError("reason: required with direct (say why the canary is skipped)")

    def release(settings: Settings, store: Any, registry: Any) -> dict[str, Any]:
        from loopml import control

        return control.release(
            settings, store, registry, body.version, direct=body.direct, reason=body.reason
        ).to_dict()

    return await _call(runtime, request, model, release)


@router.post(
    "/approve",
    response_model=ApproveOut,
    responses=error_responses(400, 401, 403, 404, 408, 409, 413, 422, 503),
)
async def approve(
    body: ApproveIn,
    request: Request,
    _auth: AdminDep,
    runtime: RuntimeDep,
    model: ModelQuery = None,
) -> dict[str, Any]:
    """Approve ``version``'s recipe and parameters after review (``loopml approve``): a version
    that changes the champion's cannot start a rollout or be promoted without it. The audit
    record names the reviewer (``by``) and the HTTP actor.

    404 for an unknown version; 409 for a version that names no recipe; 422 for a bad body.
    """

    def record(settings: Settings, store: Any, registry: Any) -> dict[str, Any]:
        from loopml import control

        return control.approve(store, registry, body.version, by=body.by)

    return await _call(runtime, request, model, record)


@router.post(
    "/rollout/abort",
    response_model=RoutingOut,
    responses=error_responses(400, 401, 403, 404, 408, 409, 413, 422, 503),
)
async def rollout_abort(
    request: Request,
    _auth: AdminDep,
    runtime: RuntimeDep,
    body: RolloutAbortIn | None = None,
    model: ModelQuery = None,
) -> dict[str, Any]:
    """Send all traffic back to the champion now (``loopml rollout abort``); 409 when no
    rollout is in progress."""
    reason = body.reason if body is not None else "aborted over HTTP"

    def abort(settings: Settings, store: Any, registry: Any) -> dict[str, Any]:
        from loopml import control

        return control.abort_rollout(settings, store, registry, reason=reason).to_dict()

    return await _call(runtime, request, model, abort)


@router.get(
    "/rollout",
    response_model=RolloutStatusOut,
    responses=error_responses(401, 403, 404, 503),
)
async def rollout_status(
    request: Request, _auth: AdminDep, runtime: RuntimeDep, model: ModelQuery = None
) -> dict[str, Any]:
    """The routing state and a fresh analysis of the rollout in progress
    (``loopml rollout status``)."""

    def status(settings: Settings, store: Any, registry: Any) -> dict[str, Any]:
        from loopml import control

        return control.rollout_status(settings, store, registry).to_dict()

    return await _call(runtime, request, model, status)


@router.post(
    "/feedback/relabel",
    response_model=FeedbackRelabelOut,
    responses=error_responses(400, 401, 403, 404, 408, 413, 422, 503),
)
async def feedback_relabel(
    body: FeedbackRelabelIn,
    request: Request,
    _auth: AdminDep,
    runtime: RuntimeDep,
    model: ModelQuery = None,
) -> dict[str, Any]:
    """Correct a stored feedback label (``loopml feedback relabel``): the only way a label
    changes once given. The change and its reason go to the audit log in the same transaction.

    404 when the request id has no label yet; 409 for a label the model does not know.
    """
    from loopml.serving.feedback import relabel

    def change(settings: Settings, store: Any, _registry: Any) -> dict[str, Any]:
        from loopml.store import current_actor

        return relabel(
            store,
            request_id=body.request_id,
            label=body.label,
            reason=body.reason,
            actor=current_actor(),
            model_name=settings.model_name,
        )

    return await _call(runtime, request, model, change)

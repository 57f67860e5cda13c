"""Operational routes: liveness, readiness, status and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from loopml.serving._http import json_response
from loopml.serving.deps import RuntimeDep
from loopml.serving.docs import error_responses
from loopml.serving.metrics import CONTENT_TYPE_LATEST
from loopml.serving.schemas import StatusOut
from loopml.serving.status import model_status as status_of_model

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process answers (no dependency checked)."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness", responses=error_responses(503))
async def readyz(runtime: RuntimeDep) -> Response:
    """200 once a model is loaded (and the database's schema is usable), 503 before."""
    if runtime.schema_problem is not None:
        problem = await asyncio.to_thread(runtime.recheck_schema)
        if problem is not None:
            return json_response({"error": problem}, 503, {"Retry-After": "5"})
    if runtime.router.ready:
        return json_response({"status": "ready"})
    return json_response({"error": "no model loaded yet"}, 503, {"Retry-After": "5"})


@router.get("/v1/status", response_model=StatusOut, responses=error_responses(401, 403, 404))
async def status(runtime: RuntimeDep) -> dict[str, Any]:
    """Loaded models, queue depth, prediction-log counters and limits of this worker."""
    return runtime.status()


@router.get("/v1/models/{name}/status", responses=error_responses(401, 403, 404))
async def model_status(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """One served model: loaded or unloaded, bytes, label set, variants and routing."""
    return status_of_model(runtime, name)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses=error_responses(401, 403),
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text exposition (every worker's values when several run)."""
    body = await asyncio.to_thread(runtime.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

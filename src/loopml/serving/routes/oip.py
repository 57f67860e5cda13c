"""Open Inference Protocol V2 over HTTP under ``/v2``: an adapter over the inference core.

The protocol (tensors, the binary tensor data extension, metadata) is :mod:`loopml.serving.oip`;
inference requests are answered by :func:`loopml.serving.oip.answer_infer`, here and in the
fast lane (:mod:`loopml.serving.middleware`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from loopml.serving._http import json_response
from loopml.serving.deps import ClientDep, RuntimeDep
from loopml.serving.docs import body_schema, error_responses
from loopml.serving.oip import answer_infer, model_metadata, repository_index, server_metadata
from loopml.serving.oip_binary import HEADER_LENGTH
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import InferIn, InferOut, ModelMetadataOut, ModelReadyOut

__all__ = ["router"]

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])


@router.get("", summary="Server metadata", responses=error_responses(401, 403))
async def metadata_of_server(_auth: ClientDep) -> dict[str, Any]:
    """Server name, version and the protocol extensions it supports (an API key when keys
    are set)."""
    return server_metadata()


@router.get("/health/live", summary="Liveness")
async def live() -> dict[str, bool]:
    """The server process answers."""
    return {"live": True}


@router.get("/health/ready", summary="Readiness", responses=error_responses(503))
async def ready(runtime: RuntimeDep) -> Response:
    """Ready once a model is loaded."""
    ok = runtime.router.ready
    return json_response({"ready": ok}, 200 if ok else 503)


@router.post(
    "/repository/index", summary="Model repository index", responses=error_responses(401, 403)
)
async def index(caller: ClientDep, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """Every model this server serves (those of the caller's key scope), with its version and
    state (``READY``, or ``UNAVAILABLE`` and a reason: loading, or unloaded to make room; an
    API key when keys are set)."""
    return repository_index(runtime, caller.models)


@router.get(
    "/models/{name}", response_model=ModelMetadataOut, responses=error_responses(401, 403, 404)
)
async def metadata(name: str, caller: ClientDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Model metadata: versions, input and output tensors (an API key when keys are set)."""
    runtime.core.check_scope(caller, name)
    return model_metadata(runtime, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadataOut,
    responses=error_responses(401, 403, 404),
)
async def version_metadata(
    name: str, version: str, caller: ClientDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Metadata of one version (only the version being served; an API key when keys are set)."""
    runtime.core.check_scope(caller, name)
    return model_metadata(runtime, name, version)


@router.get("/models/{name}/ready", response_model=ModelReadyOut, responses=error_responses(404))
async def model_ready(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Whether the model can answer (200 with ``ready: false`` while loading)."""
    return {"name": name, "ready": runtime.core.model(name) is not None}


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReadyOut,
    responses=error_responses(404),
)
async def version_ready(name: str, version: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Whether this version is the one being served."""
    return {"name": name, "ready": runtime.core.model(name, version) is not None}


async def infer(request: Request) -> Response:
    """Classify a BYTES tensor of texts (Open Inference Protocol V2)."""
    runtime: Runtime = request.app.state.runtime
    context = runtime.core.context(request.headers)
    params = request.path_params
    answer = await answer_infer(
        runtime,
        context,
        request.scope["state"],
        await request.body(),
        params["name"],
        params.get("version"),
        request.headers.get(HEADER_LENGTH),
    )
    headers = {k.decode(): v.decode() for k, v in answer.headers}
    return Response(answer.body, headers=headers)


def _infer_doc(*path_params: str) -> dict[str, Any]:
    extra = body_schema(InferIn)
    extra["parameters"] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in path_params
    ]
    return {
        "summary": "Classify texts (OIP V2)",
        "response_model": None,
        "openapi_extra": extra,
        "responses": {
            200: {"model": InferOut},
            **error_responses(400, 401, 403, 404, 408, 413, 422, 503),
        },
    }


router.add_api_route("/models/{name}/infer", infer, methods=["POST"], **_infer_doc("name"))
router.add_api_route(
    "/models/{name}/versions/{version}/infer",
    infer,
    methods=["POST"],
    operation_id="infer_version",
    **_infer_doc("name", "version"),
)

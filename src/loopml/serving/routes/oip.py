"""Open Inference Protocol V2 (KServe, Triton, MLServer clients) under ``/v2``.

Inputs: one BYTES tensor of texts (named ``text``, or the only input), shape ``[n]`` or ``[n, 1]``.
Outputs: ``label`` (BYTES ``[n]``), ``probabilities`` (FP32 ``[n, classes]``, row-major, class order
in the ``classes`` parameter) and ``request_id`` (BYTES ``[n]``, for ``POST /v1/feedback``).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from loopml.errors import NotFoundError, RequestError
from loopml.serving._http import json_response, load_json
from loopml.serving.deps import RuntimeDep
from loopml.serving.docs import body_schema, error_responses
from loopml.serving.loader import LoadedModel
from loopml.serving.routes.predict import check_texts
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import InferIn, InferOut, ModelMetadataOut, ModelReadyOut

__all__ = ["answer_infer", "router"]

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

OUTPUTS = ("label", "probabilities", "request_id")
_JSON = {"content-type": "application/json"}


def _model(runtime: Runtime, name: str, version: str | None) -> LoadedModel | None:
    """The loaded model called ``name`` (and ``version``), None while none is loaded; 404 if
    the name or version is not served here."""
    if name != runtime.settings.model_name:
        raise NotFoundError(
            f"unknown model {name!r}: this server serves {runtime.settings.model_name!r}"
        )
    model = runtime.router.pick().model
    if version is not None and (model is None or version != model.version):
        served = model.version if model else "none"
        raise NotFoundError(
            f"model {name!r} version {version!r} is not served here (serving {served})"
        )
    return model


@router.get("/health/live", summary="Liveness")
async def live() -> dict[str, bool]:
    """The server process answers."""
    return {"live": True}


@router.get("/health/ready", summary="Readiness", responses=error_responses(503))
async def ready(runtime: RuntimeDep) -> Response:
    """Ready once a model is loaded."""
    ok = runtime.router.ready
    return json_response({"ready": ok}, 200 if ok else 503)


def _metadata(runtime: Runtime, name: str, version: str | None) -> dict[str, Any]:
    model = _model(runtime, name, version)
    classes = list(model.classes) if model else []
    return {
        "name": name,
        "versions": [model.version] if model else [],
        "platform": "loopml",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes) or -1]},
            {"name": "request_id", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {"classes": ",".join(classes)},
    }


@router.get("/models/{name}", response_model=ModelMetadataOut, responses=error_responses(404))
async def metadata(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Model metadata: versions, input and output tensors."""
    return _metadata(runtime, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadataOut,
    responses=error_responses(404),
)
async def version_metadata(name: str, version: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Metadata of one version (only the version being served)."""
    return _metadata(runtime, name, version)


@router.get("/models/{name}/ready", response_model=ModelReadyOut, responses=error_responses(404))
async def model_ready(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Whether the model can answer (200 with ``ready: false`` while loading)."""
    return {"name": name, "ready": _model(runtime, name, None) is not None}


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReadyOut,
    responses=error_responses(404),
)
async def version_ready(name: str, version: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Whether this version is the one being served."""
    return {"name": name, "ready": _model(runtime, name, version) is not None}


def parse_infer(body: bytes, runtime: Runtime) -> tuple[Any, list[str], list[str]]:
    """(id, texts, requested outputs) of an OIP V2 request, or a RequestError naming the field."""
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise RequestError("body: must be a JSON object with 'inputs'")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise RequestError("id: must be a string")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs: must be a non-empty list of tensors")
    if not all(isinstance(t, dict) for t in inputs):
        raise RequestError("inputs: every tensor must be a JSON object")
    named = [i for i, t in enumerate(inputs) if t.get("name") == "text"]
    if not named and len(inputs) != 1:
        raise RequestError("inputs: send one BYTES tensor named 'text'")
    index = named[0] if named else 0
    return rid, _texts(inputs[index], f"inputs[{index}]", runtime), _outputs(doc.get("outputs"))


def _texts(tensor: dict[str, Any], where: str, runtime: Runtime) -> list[str]:
    if tensor.get("datatype") != "BYTES":
        raise RequestError(
            f"{where}.datatype: must be 'BYTES' (texts), got {tensor.get('datatype')!r}"
        )
    shape, data = tensor.get("shape"), tensor.get("data")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise RequestError(f"{where}.shape: must be a list of non-negative integers")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise RequestError(f"{where}.shape: must be [n] or [n, 1], got {shape}")
    if (
        isinstance(data, list)
        and data
        and all(isinstance(row, list) and len(row) == 1 for row in data)
    ):
        data = [row[0] for row in data]  # [[t1], [t2]] for shape [n, 1]
    texts = check_texts(data, f"{where}.data", runtime.settings)
    if math.prod(shape) != len(texts):
        raise RequestError(f"{where}.shape: {shape} does not match {len(texts)} data element(s)")
    return texts


def _outputs(requested: Any) -> list[str]:
    if requested is None:
        return list(OUTPUTS)
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise RequestError("outputs: must be a list of objects with a 'name'")
    names = [o["name"] for o in requested]
    unknown = sorted(set(names) - set(OUTPUTS))
    if unknown:
        raise RequestError(f"outputs: unknown output(s) {unknown}; available: {list(OUTPUTS)}")
    return names


async def answer_infer(
    runtime: Runtime, state: dict[str, Any], body: bytes, name: str, version: str | None
) -> bytes:
    """The JSON answer to an OIP V2 inference body (a LoopmlError for bad input or overload)."""
    _model(runtime, name, version)
    rid, texts, wanted = parse_infer(body, runtime)
    result = await runtime.router.answer(state, texts, pinned=version is not None)
    model, answers = result.model, result.answers
    n = len(answers)
    tensors = {
        "label": {
            "name": "label",
            "shape": [n],
            "datatype": "BYTES",
            "data": [a.label for a in answers],
        },
        "probabilities": {
            "name": "probabilities",
            "shape": [n, len(model.classes)],
            "datatype": "FP32",
            "data": [p for a in answers for p in a.probabilities.values()],
        },
        "request_id": {
            "name": "request_id",
            "shape": [n],
            "datatype": "BYTES",
            "data": [a.request_id for a in answers],
        },
    }
    out: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if rid is not None:
        out["id"] = rid
    out["parameters"] = {"variant": model.variant, "classes": ",".join(model.classes)}
    out["outputs"] = [tensors[o] for o in wanted]
    return orjson.dumps(out)


async def infer(request: Request) -> Response:
    """Classify a BYTES tensor of texts (Open Inference Protocol V2)."""
    runtime: Runtime = request.app.state.runtime
    runtime.guard.client(request.headers)
    params = request.path_params
    state = request.scope["state"]
    state["request_key"] = request.headers.get("x-request-key")
    body = await answer_infer(
        runtime, state, await request.body(), params["name"], params.get("version")
    )
    return Response(body, headers=_JSON)


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
            **error_responses(400, 401, 403, 404, 413, 422, 503),
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

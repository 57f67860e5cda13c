"""``POST /v1/predict`` (the default model) and ``POST /v1/models/{name}/predict``: the hot
path, validated by hand and serialized with orjson; an adapter over the inference core
(:mod:`loopml.serving.core`), here and in the fast lane."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from loopml.config import Settings
from loopml.errors import RequestError
from loopml.serving._http import load_json
from loopml.serving.core import RequestContext, check_text, check_texts
from loopml.serving.docs import body_schema, error_responses
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import PredictIn, PredictOut

__all__ = ["answer_predict", "parse_predict", "predict", "predict_model", "router"]

router = APIRouter(prefix="/v1", tags=["predict"])

_JSON = {"content-type": "application/json"}


def parse_predict(body: bytes, settings: Settings) -> list[str]:
    """The texts of a ``PredictIn`` body, or a RequestError saying what is wrong and where."""
    doc = load_json(body)
    if not isinstance(doc, dict):
        got = "null" if doc is None else type(doc).__name__
        raise RequestError(f"body: must be a JSON object with 'text' or 'texts', got {got}")
    unknown = sorted(set(doc) - {"text", "texts"})
    if unknown:
        raise RequestError(f"body: unknown field(s) {unknown}; expected 'text' or 'texts'")
    has_text, has_texts = doc.get("text") is not None, doc.get("texts") is not None
    if has_text == has_texts:
        raise RequestError("body: give exactly one of 'text' (a string) or 'texts' (a list)")
    if has_text:
        return [check_text(doc["text"], "text", settings)]
    return check_texts(doc["texts"], "texts", settings)


async def answer_predict(
    runtime: Runtime,
    context: RequestContext,
    state: dict[str, Any],
    body: bytes,
    name: str | None = None,
) -> bytes:
    """The JSON answer to a ``PredictIn`` body for model ``name`` (default: the default model;
    a LoopmlError for bad input, an unknown model or overload)."""
    core = runtime.core
    if name is not None:
        core.models.get(name)  # 404 before the body is looked at
    texts = parse_predict(body, runtime.settings)
    result = await core.predict(context, state, name or core.default_model, texts)
    model = result.model
    out = {
        "model_name": model.name,
        "model_version": model.version,
        "variant": model.variant,
        "predictions": [
            {"request_id": a.request_id, "label": a.label, "probabilities": a.probabilities}
            for a in result.answers
        ],
    }
    return orjson.dumps(out)


async def predict(request: Request) -> Response:
    """Classify one text or a list of texts with the serving model."""
    runtime: Runtime = request.app.state.runtime
    context = runtime.core.context(request.headers)
    body = await answer_predict(runtime, context, request.scope["state"], await request.body())
    return Response(body, headers=_JSON)


async def predict_model(request: Request) -> Response:
    """Classify one text or a list of texts with the served model ``name``."""
    runtime: Runtime = request.app.state.runtime
    context = runtime.core.context(request.headers)
    name = request.path_params["name"]
    state = request.scope["state"]
    body = await answer_predict(runtime, context, state, await request.body(), name)
    return Response(body, headers=_JSON)


router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    summary="Classify texts",
    response_model=None,
    openapi_extra=body_schema(PredictIn),
    responses={
        200: {"model": PredictOut},
        **error_responses(400, 401, 403, 408, 413, 422, 503),
    },
)

_NAMED = body_schema(PredictIn)
_NAMED["parameters"] = [
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
]
router.add_api_route(
    "/models/{name}/predict",
    predict_model,
    methods=["POST"],
    summary="Classify texts with a named model",
    response_model=None,
    openapi_extra=_NAMED,
    responses={
        200: {"model": PredictOut},
        **error_responses(400, 401, 403, 404, 408, 413, 422, 503),
    },
)

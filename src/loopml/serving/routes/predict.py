"""``POST /v1/predict``: the hot path, validated by hand and serialized with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from loopml.config import Settings
from loopml.errors import RequestError
from loopml.serving._http import load_json
from loopml.serving.docs import body_schema, error_responses
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import PredictIn, PredictOut

__all__ = ["answer_predict", "check_texts", "predict", "router"]

router = APIRouter(prefix="/v1", tags=["predict"])

_JSON = {"content-type": "application/json"}


def check_text(value: Any, where: str, settings: Settings) -> str:
    """A non-blank string without NUL, no longer than ``max_text_chars``, or a 422 naming
    ``where``."""
    if not isinstance(value, str):
        raise RequestError(f"{where}: must be a string, got {_kind(value)}")
    if not value.strip():
        raise RequestError(f"{where}: must not be empty or blank")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL: refused at the door alike on every store, so that a
        # prediction is never answered that its log cannot keep.
        raise RequestError(f"{where}: must not contain NUL (\\u0000) characters")
    if len(value) > settings.max_text_chars:
        raise RequestError(
            f"{where}: {len(value)} characters is over the limit of"
            f" {settings.max_text_chars} (LOOPML_MAX_TEXT_CHARS)",
        )
    return value


def check_texts(values: Any, where: str, settings: Settings) -> list[str]:
    """A non-empty list of valid texts, at most ``max_texts_per_request`` long."""
    if not isinstance(values, list):
        raise RequestError(f"{where}: must be a list of strings, got {_kind(values)}")
    if not values:
        raise RequestError(f"{where}: must hold at least one text")
    if len(values) > settings.max_texts_per_request:
        raise RequestError(
            f"{where}: {len(values)} texts is over the limit of"
            f" {settings.max_texts_per_request} per request (LOOPML_MAX_TEXTS_PER_REQUEST)",
        )
    return [check_text(v, f"{where}[{i}]", settings) for i, v in enumerate(values)]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_predict(body: bytes, settings: Settings) -> list[str]:
    """The texts of a ``PredictIn`` body, or a RequestError saying what is wrong and where."""
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise RequestError(f"body: must be a JSON object with 'text' or 'texts', got {_kind(doc)}")
    unknown = sorted(set(doc) - {"text", "texts"})
    if unknown:
        raise RequestError(f"body: unknown field(s) {unknown}; expected 'text' or 'texts'")
    has_text, has_texts = doc.get("text") is not None, doc.get("texts") is not None
    if has_text == has_texts:
        raise RequestError("body: give exactly one of 'text' (a string) or 'texts' (a list)")
    if has_text:
        return [check_text(doc["text"], "text", settings)]
    return check_texts(doc["texts"], "texts", settings)


async def answer_predict(runtime: Runtime, state: dict[str, Any], body: bytes) -> bytes:
    """The JSON answer to a ``PredictIn`` body (a LoopmlError for bad input or overload)."""
    texts = parse_predict(body, runtime.settings)
    result = await runtime.router.answer(state, texts)
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
    runtime.guard.client(request.headers)
    state = request.scope["state"]
    state["request_key"] = request.headers.get("x-request-key")
    body = await answer_predict(runtime, state, await request.body())
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

"""``POST /v1/predict``: the hot path, validated by hand and serialized with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from loopml.config import Settings
from loopml.serving._http import HttpError, load_json
from loopml.serving.batcher import ModelCallError, QueueFullError, Result, new_ids
from loopml.serving.docs import body_schema, error_responses
from loopml.serving.router import CHAMPION
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import PredictIn, PredictOut

__all__ = ["answer_predict", "check_texts", "predict", "router", "serve_texts"]

router = APIRouter(prefix="/v1", tags=["predict"])

_JSON = {"content-type": "application/json"}


def check_text(value: Any, where: str, settings: Settings) -> str:
    """A non-blank string no longer than ``max_text_chars``, or a 422 naming ``where``."""
    if not isinstance(value, str):
        raise HttpError(422, f"{where}: must be a string, got {_kind(value)}")
    if not value.strip():
        raise HttpError(422, f"{where}: must not be empty or blank")
    if len(value) > settings.max_text_chars:
        raise HttpError(
            422,
            f"{where}: {len(value)} characters is over the limit of"
            f" {settings.max_text_chars} (LOOPML_MAX_TEXT_CHARS)",
        )
    return value


def check_texts(values: Any, where: str, settings: Settings) -> list[str]:
    """A non-empty list of valid texts, at most ``max_texts_per_request`` long."""
    if not isinstance(values, list):
        raise HttpError(422, f"{where}: must be a list of strings, got {_kind(values)}")
    if not values:
        raise HttpError(422, f"{where}: must hold at least one text")
    if len(values) > settings.max_texts_per_request:
        raise HttpError(
            422,
            f"{where}: {len(values)} texts is over the limit of"
            f" {settings.max_texts_per_request} per request (LOOPML_MAX_TEXTS_PER_REQUEST)",
        )
    return [check_text(v, f"{where}[{i}]", settings) for i, v in enumerate(values)]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_predict(body: bytes, settings: Settings) -> list[str]:
    """The texts of a ``PredictIn`` body, or an HttpError saying what is wrong and where."""
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise HttpError(
            422, f"body: must be a JSON object with 'text' or 'texts', got {_kind(doc)}"
        )
    unknown = sorted(set(doc) - {"text", "texts"})
    if unknown:
        raise HttpError(422, f"body: unknown field(s) {unknown}; expected 'text' or 'texts'")
    has_text, has_texts = doc.get("text") is not None, doc.get("texts") is not None
    if has_text == has_texts:
        raise HttpError(422, "body: give exactly one of 'text' (a string) or 'texts' (a list)")
    if has_text:
        return [check_text(doc["text"], "text", settings)]
    return check_texts(doc["texts"], "texts", settings)


async def serve_texts(
    runtime: Runtime, state: dict[str, Any], texts: list[str], *, pinned: bool = False
) -> Result:
    """Route, batch and answer ``texts``; labels the request (``state``) for the metrics.

    In a canary the request key (``state["request_key"]``: the ``X-Request-Key`` header, else the
    first request id) picks the variant; a failing or full challenger is answered by the champion.
    In shadow mode the challenger scores the champion's texts after the answer. ``pinned``
    requests (a version in the path) are answered by the champion only.
    """
    router = runtime.router
    plan = router.plan
    champion = router.champion.model
    if champion is None:
        raise HttpError(
            503,
            "no model is loaded yet: the registry alias 'champion' is not set or"
            " its model cannot be loaded",
            {"Retry-After": "5"},
        )
    ids = None
    if plan.mode == "canary" and not pinned:
        ids = new_ids(len(texts))
        challenger = router.canary_model(plan, state.get("request_key") or ids[0])
        if challenger is not None:
            try:
                result = await router.challenger.batcher.submit(challenger, texts, ids)
            except ModelCallError as exc:
                runtime.report_failure(challenger, len(texts), exc)
            except QueueFullError:
                pass  # the champion answers: a canary must never cost a request
            else:
                state["model_version"] = challenger.version
                state["variant"] = challenger.variant
                return result
    state["model_version"] = champion.version
    state["variant"] = CHAMPION
    try:
        result = await router.champion.batcher.submit(champion, texts, ids)
    except QueueFullError as exc:
        raise HttpError(503, f"overloaded: {exc}; retry later", {"Retry-After": "1"}) from None
    except ModelCallError as exc:
        raise HttpError(503, str(exc), {"Retry-After": "1"}) from None
    if plan.mode == "shadow" and plan.challenger is not None:
        runtime.shadow(plan.challenger, texts, [a.request_id for a in result.answers])
    return result


async def answer_predict(runtime: Runtime, state: dict[str, Any], body: bytes) -> bytes:
    """The JSON answer to a ``PredictIn`` body (HttpError for bad input or overload)."""
    texts = parse_predict(body, runtime.settings)
    result = await serve_texts(runtime, state, texts)
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
    responses={200: {"model": PredictOut}, **error_responses(400, 401, 403, 413, 422, 503)},
)

"""``POST /v1/feedback``: delayed ground truth, joined to predictions by request id."""

from __future__ import annotations

import asyncio
import functools

from fastapi import APIRouter, Request
from starlette.responses import Response

from loopml.errors import ConflictError, NotFoundError, RequestError
from loopml.serving._http import json_response, load_json
from loopml.serving.auth import Principal
from loopml.serving.deps import FeedbackClientDep, RuntimeDep
from loopml.serving.docs import SCHEMAS, body_schema, error_responses
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import FeedbackIn, FeedbackOut

__all__ = ["parse_feedback", "router"]

router = APIRouter(prefix="/v1", tags=["feedback"])

MAX_ITEMS = 1000


def parse_feedback(body: bytes) -> list[tuple[str, str]]:
    """(request_id, label) pairs of a feedback body, or a 4xx naming the bad field."""
    doc = load_json(body)
    items = doc if isinstance(doc, list) else [doc]
    if not items or len(items) > MAX_ITEMS:
        raise RequestError(f"body: send one feedback object or a list of 1 to {MAX_ITEMS}")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"[{i}]" if isinstance(doc, list) else "body"
        if not isinstance(item, dict):
            raise RequestError(f"{where}: must be an object with 'request_id' and 'label'")
        unknown = sorted(set(item) - {"request_id", "label"})
        if unknown:
            raise RequestError(f"{where}: unknown field(s) {unknown}")
        for key, limit in (("request_id", 64), ("label", 100)):
            value = item.get(key)
            if not isinstance(value, str) or not value.strip() or len(value) > limit:
                raise RequestError(
                    f"{where}.{key}: must be a non-empty string of at most {limit} characters"
                )
            if "\x00" in value:  # PostgreSQL text cannot hold NUL: refused alike on every store
                raise RequestError(f"{where}.{key}: must not contain NUL (\\u0000) characters")
        if item["request_id"] in seen:
            # two labels for one prediction in one request: the conflict of a second label
            raise ConflictError(f"{where}.request_id: given twice; a label is given once")
        seen.add(item["request_id"])
        pairs.append((item["request_id"], item["label"]))
    return pairs


_DOC = body_schema(FeedbackIn)
SCHEMAS["FeedbackIn"] = FeedbackIn.model_json_schema()
_DOC["requestBody"]["content"]["application/json"]["schema"] = {
    "anyOf": [
        {"$ref": "#/components/schemas/FeedbackIn"},
        {
            "type": "array",
            "items": {"$ref": "#/components/schemas/FeedbackIn"},
            "minItems": 1,
            "maxItems": MAX_ITEMS,
            # each request id once (JSON Schema can only say it of whole items); 409 otherwise
            "uniqueItems": True,
        },
    ],
}


_RESPONSES = {
    200: {"model": FeedbackOut},
    **error_responses(400, 401, 403, 404, 408, 409, 413, 422, 429, 503),
}


@router.post("/feedback", response_model=None, openapi_extra=_DOC, responses=_RESPONSES)
async def feedback(request: Request, runtime: RuntimeDep, caller: FeedbackClientDep) -> Response:
    """Store the true label of one prediction, or of a list of them (all or nothing).

    Needs a key with the ``feedback`` role (without configured keys: open in development only).
    A request id must come from an answered prediction (one still waiting for the database
    counts, 404 otherwise); the label must be one of the classes of the model that answered it
    (409 otherwise). A label is given once: a second one for the same request id, in this
    request or before, is refused (409); an admin corrects labels
    with ``POST /v1/admin/feedback/relabel``. Each key may post ``LOOPML_FEEDBACK_RATE_PER_MIN``
    labels a minute (429 with ``Retry-After`` beyond). A key scoped to models may label only
    their predictions (403).
    """
    return await _record(request, runtime, caller, None)


@router.post(
    "/models/{name}/feedback", response_model=None, openapi_extra=_DOC, responses=_RESPONSES
)
async def model_feedback(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """Store true labels of predictions of model ``name`` (as ``/v1/feedback``; an id of
    another model's prediction is refused with 409, a key scoped to other models with 403)."""
    caller = runtime.core.caller(request.headers, "feedback", name)
    return await _record(request, runtime, caller, name)


async def _record(
    request: Request, runtime: Runtime, caller: Principal, model: str | None
) -> Response:
    try:
        pairs = parse_feedback(await request.body())
    except RequestError:
        runtime.metrics.feedback.labels("invalid").inc()
        raise
    runtime.feedback_limit.take(caller.key_id, len(pairs))
    record = functools.partial(runtime.feedback.record, model=model, scope=caller.models)
    # The runtime's bounded database executor: 503 at once when it is full or the DB just failed.
    try:
        stored = await runtime.db.run(record, pairs, caller.key_id)
    except NotFoundError:
        wait = _peer_wait(runtime)
        if wait <= 0:
            raise
        # Another worker or replica may have answered these ids and not committed them yet: give
        # its writer time to flush, then look again (all or nothing, so retrying stores nothing
        # twice).
        await asyncio.sleep(wait)
        stored = await runtime.db.run(record, pairs, caller.key_id)
    return json_response({"accepted": len(stored), "items": stored})


def _peer_wait(runtime: Runtime) -> float:
    """Seconds an unknown request id waits before its 404: one flush of this pod's other workers
    when their journals are pending, at least ``feedback_peer_wait_s`` for other replicas."""
    predlog = runtime.predlog
    if predlog is None:
        return 0.0
    settings = runtime.settings
    workers = 2 * settings.predlog_flush_interval_s + 0.25 if predlog.others_may_be_pending() else 0
    return max(workers, settings.feedback_peer_wait_s)

"""OpenAPI helpers for routes that read their body by hand (the hot paths)."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from loopml.config import Settings
from loopml.pipeline.explain import MAX_TOKENS
from loopml.serving.schemas import ErrorOut, at_most_tokens

__all__ = ["SCHEMAS", "body_schema", "error_responses", "with_limits"]

# Nested models of hand-read bodies, merged into components/schemas by the app factory.
SCHEMAS: dict[str, Any] = {}

_REASONS = {
    400: "Malformed body (not JSON or not UTF-8)",
    401: "Missing credentials",
    403: "Invalid credentials",
    404: "Not found",
    408: "The body did not arrive within LOOPML_BODY_TIMEOUT_S (the connection closes)",
    409: "Conflicts with stored state (the message says what): refusals that depend on the"
    " server's data, not on the request alone",
    413: "Body too large",
    422: "Invalid field (the message says which)",
    429: "Over the key's rate limit (see Retry-After)",
    503: "Not ready or overloaded (see Retry-After)",
}


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    SCHEMAS.update(schema.pop("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses`` entries for error codes, all with the ``{"error": ...}`` body."""
    return {code: {"model": ErrorOut, "description": _REASONS[code]} for code in codes}


def with_limits(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A copy of the app's ``schema`` with this server's text limits (``LOOPML_MAX_TEXT_CHARS``,
    ``LOOPML_MAX_TEXTS_PER_REQUEST``, explain's token cap) in the request bodies they apply
    to."""
    schema = copy.deepcopy(schema)
    chars = {"maxLength": settings.max_text_chars}
    predict = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    fields = predict["application/json"]["schema"]["properties"]
    fields["text"].update(chars)
    texts = fields["texts"]["anyOf"][0]
    texts["maxItems"] = settings.max_texts_per_request
    texts["items"].update(chars)
    explain = schema["components"]["schemas"]["ExplainIn"]["properties"]["text"]
    explain.update(chars, allOf=[{"pattern": at_most_tokens(MAX_TOKENS)}])
    return schema

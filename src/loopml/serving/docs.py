"""OpenAPI helpers for routes that read their body by hand (the hot paths)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from loopml.serving.schemas import ErrorOut

__all__ = ["SCHEMAS", "body_schema", "error_responses"]

# Nested models of hand-read bodies, merged into components/schemas by the app factory.
SCHEMAS: dict[str, Any] = {}

_REASONS = {
    400: "Malformed body (not JSON or not UTF-8)",
    401: "Missing credentials",
    403: "Invalid credentials",
    404: "Not found",
    409: "Conflict",
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

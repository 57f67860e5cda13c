"""Small HTTP helpers shared by the routes and the middleware: JSON responses, the error body and
the JSON body parser."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from loopml.errors import MalformedRequestError
from loopml.serving.bounds import MAX_HTTP_MESSAGE_CHARS, bounded_message

__all__ = ["error_body", "error_response", "json_response", "load_json"]

_JSON = "application/json"


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON response serialized by orjson (numpy-free, fast)."""
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type=_JSON)


def error_body(message: str) -> bytes:
    """The one error shape of the API: ``{"error": "..."}`` (the message cut to 2,000
    characters: a value echoed in it never makes a large response); FastAPI's handlers and the
    middleware's raw answers both render it."""
    return orjson.dumps({"error": bounded_message(message, MAX_HTTP_MESSAGE_CHARS)})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """:func:`error_body` as a response."""
    return Response(error_body(message), status_code=status, headers=headers, media_type=_JSON)


def load_json(body: bytes) -> Any:
    """Parse a request body; 400 with a reason when it is empty, not UTF-8 or not JSON."""
    if not body:
        raise MalformedRequestError("the request body is empty: send a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "utf-8" in reason.lower() or "surrogate" in reason.lower():
            raise MalformedRequestError(f"the request body is not valid UTF-8: {reason}") from None
        raise MalformedRequestError(f"the request body is not valid JSON: {reason}") from None

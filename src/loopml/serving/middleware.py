"""The edge of the app (pure ASGI, cheap): gates, body size and time limits, request metrics,
last-resort errors, and the fast lane.

Gates come before anything is read: ``/v1/admin/*`` checks the admin token before its body is
received (an anonymous client cannot make the server buffer a body), and the routes that show
internals (status, page, docs, metrics) are checked here as :class:`~loopml.serving.auth.Guard`
says. A body must arrive within ``LOOPML_BODY_TIMEOUT_S`` (else 408 and the connection closes).

The fast lane answers ``POST /v1/predict``, ``POST /v1/models/{name}/predict`` and
``POST /v2/models/{name}[/versions/{v}]/infer``
(JSON, or OIP's binary tensor data with ``Inference-Header-Content-Length``) directly, with the
same adapters over the inference core (:mod:`loopml.serving.core`: API key, request key,
prediction, metric labels) the FastAPI routes call, skipping FastAPI's per-request machinery
(measured: about half of the CPU time of a single-text request on this 2-core machine; see
benchmarks/README.md). The FastAPI routes stay registered for OpenAPI, /docs and mounting.

It never logs headers or bodies: a crash is logged with its exception type and route only, so
neither tokens nor texts reach the server's logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopml.errors import LoopmlError
from loopml.serving._http import error_body
from loopml.serving.oip import answer_infer
from loopml.serving.oip_binary import HEADER_LENGTH
from loopml.serving.routes.predict import answer_predict
from loopml.serving.runtime import Runtime

__all__ = ["EdgeMiddleware"]

log = logging.getLogger("loopml.serving")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_HEADER_LENGTH = HEADER_LENGTH.encode()


class _TooLargeError(Exception):
    pass


class _BodyTimeoutError(Exception):
    pass


# path -> which gate of the Guard applies (exact paths: a bounded set of metric labels too).
_GATED = {
    "/v1/status": "status",
    "/v1/status/live": "status",
    "/": "page",
    "/docs": "docs",
    "/docs/oauth2-redirect": "docs",
    "/openapi.json": "docs",
    "/metrics": "metrics",
}
_ADMIN_PREFIX = "/v1/admin/"


class EdgeMiddleware:
    """Reads bodies up to ``max_body_bytes`` (else 413) and records every response's metrics."""

    def __init__(self, app: ASGIApp, runtime: Runtime, fast_lane: bool = True) -> None:
        self.app = app
        self.runtime = runtime
        self.core = runtime.core
        self.max_body_bytes = runtime.settings.max_body_bytes
        self.body_timeout_s = runtime.settings.body_timeout_s
        self.fast_lane = fast_lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500
        started = False

        async def send_status(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            if not await self._allowed(scope, send_status):
                return
            if scope["method"] in _BODY_METHODS:
                body = await self._read(scope, receive)
                if body is None:
                    return  # the client went away
                hot = _hot_route(scope["method"], scope["path"]) if self.fast_lane else None
                if hot is not None:
                    scope["route"] = _Template(hot[0])
                    await self._answer(scope, state, body, hot, send_status)
                    return
                receive = _replay(
                    {"type": "http.request", "body": body, "more_body": False}, receive
                )
            await self.app(scope, receive, send_status)
        except _TooLargeError:
            await _error(
                send_status,
                413,
                f"the request body is over the limit of"
                f" {self.max_body_bytes} bytes (LOOPML_MAX_BODY_BYTES)",
            )
        except _BodyTimeoutError:
            await _error(
                send_status,
                408,
                f"the request body was not received within {self.body_timeout_s:g} s"
                " (LOOPML_BODY_TIMEOUT_S)",
                {"Connection": "close"},  # the rest of the body must not be read as a request
            )
        except Exception as exc:
            log.error("unhandled %s on %s %s", type(exc).__name__, scope["method"], _route(scope))
            if not started:
                await _error(send_status, 500, "internal server error")
        finally:
            seconds = time.perf_counter() - start
            self.core.observe(_route(scope), scope["method"], status, state, seconds)

    async def _allowed(self, scope: Scope, send: Send) -> bool:
        """Apply the gate of a gated path (answering the refusal); True to go on."""
        path: str = scope["path"]
        gate = _GATED.get(path)
        template = path
        if gate is None and path.startswith("/v1/models/") and path.endswith("/status"):
            gate, template = "status", "/v1/models/{name}/status"
        admin = gate is None and path.startswith(_ADMIN_PREFIX)
        if gate is None and not admin:
            return True
        guard = self.runtime.guard
        headers = Headers(scope=scope)
        try:
            if admin:
                guard.admin(headers)
            elif gate in ("status", "page"):
                guard.status(headers, browser=gate == "page")
            elif gate == "docs":
                guard.docs(headers)
            else:
                guard.metrics(headers)
        except LoopmlError as exc:
            if gate is not None:
                scope["route"] = _Template(template)
            await _error(send, exc.http_status, str(exc), exc.http_headers)
            return False
        return True

    async def _read(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, bounded by ``max_body_bytes`` and ``body_timeout_s`` (None if the
        client disconnected)."""
        try:
            async with asyncio.timeout(self.body_timeout_s):
                return await self._read_body(scope, receive)
        except TimeoutError:
            raise _BodyTimeoutError from None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > self.max_body_bytes:
                        raise _TooLargeError
                except ValueError:
                    pass
                break
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLargeError
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _answer(
        self,
        scope: Scope,
        state: dict[str, Any],
        body: bytes,
        hot: tuple[str, str | None, str | None],
        send: Send,
    ) -> None:
        runtime = self.runtime
        try:
            context = self.core.context(Headers(scope=scope))
            template, name, version = hot
            if template.startswith("/v1/"):  # /v1/predict, /v1/models/{name}/predict
                out = await answer_predict(runtime, context, state, body, name)
                headers = [(b"content-type", b"application/json")]
            else:
                header_length = _header(scope, _HEADER_LENGTH)
                answer = await answer_infer(
                    runtime, context, state, body, name or "", version, header_length
                )
                out, headers = answer.body, answer.headers
        except LoopmlError as exc:
            await _error(send, exc.http_status, str(exc), exc.http_headers)
            return
        headers.append((b"content-length", str(len(out)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), if the client sent it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class _Template:
    """Stands in for the matched route in ``scope["route"]`` (only ``path`` is read)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def _hot_route(method: str, path: str) -> tuple[str, str | None, str | None] | None:
    """(route template, model name, version) of a fast-lane request, else None."""
    if method != "POST":
        return None  # the router answers any other method: 405 with Allow, nothing predicted
    if path == "/v1/predict":
        return "/v1/predict", None, None
    if path.startswith("/v1/models/") and path.endswith("/predict"):
        parts = path.split("/")  # "", "v1", "models", name, "predict"
        if len(parts) == 5 and parts[3]:
            return "/v1/models/{name}/predict", parts[3], None
        return None
    if not (path.startswith("/v2/models/") and path.endswith("/infer")):
        return None
    parts = path.split("/")  # "", "v2", "models", name, ["versions", v,] "infer"
    if len(parts) == 5 and parts[3]:
        return "/v2/models/{name}/infer", parts[3], None
    if len(parts) == 7 and parts[3] and parts[4] == "versions" and parts[5]:
        return "/v2/models/{name}/versions/{version}/infer", parts[3], parts[5]
    return None


def _route(scope: Scope) -> str:
    # The route template, not the raw path: bounded label cardinality.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _replay(first: Message, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay


async def _error(
    send: Send, status: int, message: str, extra: dict[str, str] | None = None
) -> None:
    body = error_body(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

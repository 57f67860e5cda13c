"""The app factory: one FastAPI app per worker, its lifespan starting and stopping the runtime
(and the gRPC server of OIP V2 when ``LOOPML_GRPC_PORT`` is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from loopml.config import Settings, load_settings
from loopml.errors import LoopmlError
from loopml.serving._http import error_response
from loopml.serving.docs import SCHEMAS, with_limits
from loopml.serving.middleware import EdgeMiddleware
from loopml.serving.routes import admin, apidocs, explain, feedback, oip, ops, page, predict
from loopml.serving.routes import label_queue as label_queue_route
from loopml.serving.routes.studio_webhook import router as studio_webhook_router
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import TEXT_PATTERN

__all__ = ["create_app"]

_DESCRIPTION = """Serves one model as the routing state says: the champion, and during a rollout a
challenger (canary: a stable share of request keys, `X-Request-Key` or the request id; shadow: the
challenger scores the champion's traffic off the request path). Without a routing state it serves
the registry version under the alias `champion`. `GET /` is a status page for humans.

Errors are `{"error": "..."}` with a 4xx status (503 + `Retry-After` when not ready or overloaded).
With `LOOPML_API_KEYS` set, predict, infer and feedback need `Authorization: Bearer <key>` or
`X-API-Key: <key>`; admin routes need `Authorization: Bearer $LOOPML_ADMIN_TOKEN`."""


def create_app(settings: Settings | None = None, *, fast_lane: bool = True) -> FastAPI:
    """A serving app for ``settings`` (default: from the environment); nothing starts until its
    lifespan runs (uvicorn, or ``TestClient`` as a context manager). ``fast_lane=False`` sends the
    hot routes through FastAPI too (for benchmarks)."""
    settings = settings or load_settings()
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # gRPC binds before anything starts (a port in use fails the start at once), answers
        # once the runtime runs, and stops first (its calls in flight get 5 s).
        grpc = None
        if settings.grpc_port:
            from loopml.serving.grpc.service import bind_grpc  # grpcio only when asked for

            grpc = bind_grpc(runtime)
        await runtime.start()
        if grpc is not None:
            await grpc.start()
        try:
            yield
        finally:
            if grpc is not None:
                await grpc.stop()
            await runtime.stop()

    app = FastAPI(
        title="loopml serving",
        version="1",
        description=_DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
        # /docs is routes/apidocs.py: Swagger UI from the package, not from a CDN
        docs_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.runtime = runtime
    for module in (predict, explain, oip, feedback, admin, ops, page, apidocs):
        app.include_router(module.router)
    app.include_router(studio_webhook_router)
    app.include_router(label_queue_route.router)
    _add_error_handlers(app)
    app.add_middleware(EdgeMiddleware, runtime=runtime, fast_lane=fast_lane)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
        app.openapi_schema = with_limits(schema, app.state.runtime.settings)
    return app.openapi_schema


def _add_error_handlers(app: FastAPI) -> None:
    async def loopml_error(_request: Request, exc: Exception) -> Response:
        # The one mapping of the exception tree to HTTP: each class carries its status.
        assert isinstance(exc, LoopmlError)
        return error_response(exc.http_status, str(exc), exc.http_headers)

    async def starlette_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's "error parsing the body": the same 400 as the hand-read routes give
            return error_response(400, f"the request body is not valid UTF-8: {exc.__cause__}")
        return error_response(exc.status_code, str(exc.detail), headers)

    async def validation_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # malformed, not invalid: 400 on every route
            reason = (first.get("ctx") or {}).get("error", "JSON decode error")
            return error_response(400, f"the request body is not valid JSON: {reason}")
        return error_response(422, _describe(exc))

    app.add_exception_handler(LoopmlError, loopml_error)
    app.add_exception_handler(StarletteHTTPException, starlette_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def _describe(exc: RequestValidationError) -> str:
    """'where: what' for the first few problems; never echoes the offending input."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        msg = err.get("msg", "invalid")
        if (err.get("ctx") or {}).get("pattern") == TEXT_PATTERN:
            msg = "must not be blank or contain NUL (\\u0000) characters"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)

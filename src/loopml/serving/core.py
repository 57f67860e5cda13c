"""The protocol-neutral inference core: the one path under every protocol that predicts.

Like KServe's DataPlane under its REST and gRPC servers, the adapters (v1 REST
``routes/predict.py``, OIP REST ``oip.py`` + ``oip_binary.py``, OIP gRPC ``grpc/service.py``) only
translate their wire format; the rest happens here once (diagram: docs/architecture.md):
:meth:`InferenceCore.context` (API key, request key), :meth:`InferenceCore.model` (a name and
version; today only ``LOOPML_MODEL_NAME`` exists, any other name is a 404),
:meth:`InferenceCore.predict` (router > batcher > model > prediction log) and
:meth:`InferenceCore.observe` (one set of metric labels for HTTP and gRPC). Errors are
:class:`~loopml.errors.LoopmlError`; the adapters render them (HTTP:
:func:`loopml.serving._http.error_body`; gRPC: the status of their ``http_status``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers

from loopml.config import Settings
from loopml.errors import NotFoundError, RequestError
from loopml.serving.auth import Guard, Principal
from loopml.serving.batcher import Result
from loopml.serving.bounds import brief, check_response_size
from loopml.serving.livestats import LiveStats
from loopml.serving.loader import LoadedModel
from loopml.serving.metrics import Metrics
from loopml.serving.router import Router

__all__ = ["InferenceCore", "RequestContext", "check_text", "check_texts"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asks (the API key's principal) and the request key that keeps a canary client on
    its variant (None when not sent or when no canary runs)."""

    principal: Principal
    request_key: str | None = None


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


class InferenceCore:
    """Auth, request keys, model resolution, prediction and request metrics for every
    protocol (see the module docstring)."""

    def __init__(
        self, settings: Settings, guard: Guard, router: Router, metrics: Metrics, live: LiveStats
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.router = router
        self.metrics = metrics
        self.live = live
        #: the model of requests that name none (``/v1/predict``)
        self.default_model = settings.model_name
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def caller(self, headers: Headers, role: str = "predict") -> Principal:
        """The caller of a data route or RPC, if its key holds ``role`` (401/403 otherwise)."""
        return self.guard.client(headers, role)

    def context(self, headers: Headers) -> RequestContext:
        """The context of a prediction request: its caller (a key with the ``predict`` role)
        and its request key (read only while a canary needs it)."""
        principal = self.guard.client(headers)
        if self.router.plan.mode != "canary":
            return RequestContext(principal)
        return RequestContext(principal, headers.get("x-request-key") or None)

    def model(self, name: str, version: str | None = None) -> LoadedModel | None:
        """The loaded model called ``name`` (and ``version``), None while none is loaded; 404
        if the name or version is not served here."""
        if name != self.default_model:
            raise NotFoundError(
                f"unknown model {brief(name)}: this server serves {self.default_model!r}"
            )
        model = self.router.pick().model
        if version is not None and (model is None or version != model.version):
            served = model.version if model else "none"
            raise NotFoundError(
                f"model {brief(name)} version {brief(version)} is not served here"
                f" (serving {served})"
            )
        return model

    def check_answer_size(
        self, name: str, texts: int, outputs: Sequence[tuple[str, bool]], id_bytes: int
    ) -> None:
        """Refuse (422) an answer that could be over ``LOOPML_MAX_RESPONSE_BYTES``, before the
        model ``name`` runs; the classes of every loaded variant count (a canary may answer
        with the challenger)."""
        self.model(name)
        classes = {
            c for slot in self.router.slots.values() if slot.model for c in slot.model.classes
        }
        limit = self.settings.max_response_bytes
        check_response_size(texts, outputs, sorted(classes), limit, id_bytes)

    async def predict(
        self,
        context: RequestContext,
        state: dict[str, Any],
        name: str,
        texts: list[str],
        *,
        version: str | None = None,
    ) -> Result:
        """Answer checked ``texts`` with model ``name``: routing (a ``version`` pins the
        champion), batching, the prediction log; ``state`` gets the request's metric labels."""
        if name != self.default_model or version is not None:
            self.model(name, version)  # the 404 of a name or version not served here
        state["request_key"] = context.request_key
        return await self.router.answer(state, texts, pinned=version is not None)

    def observe(
        self, route: str, method: str, status: int, state: dict[str, Any], seconds: float
    ) -> None:
        """Count a request answered with ``status`` after ``seconds`` (``route``: a template or
        an RPC's full name; the model version and variant from ``state``)."""
        version = state.get("model_version", "")
        variant = state.get("variant", "")
        key = (route, method, str(status), version, variant)
        children = self._children.get(key)
        if children is None:
            children = (
                self.metrics.http_requests.labels(*key),
                self.metrics.http_duration.labels(route, version, variant),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if variant and status == 200:
            self.live.observe(variant, seconds)

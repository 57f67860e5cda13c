"""The protocol-neutral inference core: the one path under every protocol that predicts.

Like KServe's DataPlane under its REST and gRPC servers, the adapters (v1 REST
``routes/predict.py``, OIP REST ``oip.py`` + ``oip_binary.py``, OIP gRPC ``grpc/service.py``) only
translate their wire format; the rest happens here once (diagram: docs/architecture.md):
:meth:`InferenceCore.context` (API key, request key), :meth:`InferenceCore.model` (a name and
version among the served models of :mod:`loopml.serving.models`, a 404 naming them otherwise),
:meth:`InferenceCore.predict` (the key's model scope > the model's router > batcher > model >
prediction log) and
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
from loopml.serving.models import ModelSet
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
        self, settings: Settings, guard: Guard, models: ModelSet, metrics: Metrics, live: LiveStats
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.models = models
        self.metrics = metrics
        self.live = live
        #: the model of requests that name none (``/v1/predict``)
        self.default_model = settings.model_name
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}

    @property
    def router(self) -> Router:
        """The default model's router."""
        return self.models.default.router

    def caller(
        self, headers: Headers, role: str = "predict", model: str | None = None
    ) -> Principal:
        """The caller of a data route or RPC, if its key holds ``role`` (401/403 otherwise)
        and, with ``model``, may act on that model (403 for a key scoped to others)."""
        principal = self.guard.client(headers, role)
        if model is not None:
            self.check_scope(principal, model, role)
        return principal

    def check_scope(self, principal: Principal, name: str, role: str = "predict") -> None:
        """404 for a model not served here, then 403 unless ``principal`` may ``role`` on it
        (before anything about the model is looked up or answered)."""
        self.models.get(name)
        principal.check_model(name, role)

    def context(self, headers: Headers) -> RequestContext:
        """The context of a prediction request: its caller (a key with the ``predict`` role)
        and its request key (the router reads it only while a canary runs)."""
        principal = self.guard.client(headers)
        return RequestContext(principal, headers.get("x-request-key") or None)

    def model(self, name: str, version: str | None = None) -> LoadedModel | None:
        """The loaded model called ``name`` (and ``version``), None while none is loaded
        (or it is unloaded); 404 if the name or version is not served here."""
        served = self.models.get(name)
        model = served.router.pick().model
        if model is None and not served.active:
            return None  # unloaded: a prediction loads it again, then checks the version
        if version is not None and (model is None or version != model.version):
            now = model.version if model else "none"
            raise NotFoundError(
                f"model {brief(name)} version {brief(version)} is not served here (serving {now})"
            )
        return model

    def check_answer_size(
        self, name: str, texts: int, outputs: Sequence[tuple[str, bool]], id_bytes: int
    ) -> None:
        """Refuse (422) an answer that could be over ``LOOPML_MAX_RESPONSE_BYTES``, before the
        model ``name`` runs; the classes of every loaded variant count (a canary may answer
        with the challenger)."""
        served = self.models.get(name)
        classes = {
            c for slot in served.router.slots.values() if slot.model for c in slot.model.classes
        }
        classes.update(served.classes)
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
        """Answer checked ``texts`` with model ``name`` (loaded again if it was unloaded):
        the key's model scope (403), routing (a ``version`` pins the champion), batching, the
        prediction log; ``state`` gets the request's metric labels."""
        models = self.models
        served = models.get(name)
        context.principal.check_model(name, "predict")
        state["request_key"] = context.request_key
        state["model"] = name
        served = await models.acquire(name)
        try:
            if version is not None:
                self.model(name, version)  # the 404 of a version not served here
            return await served.router.answer(state, texts, pinned=version is not None)
        finally:
            models.release(served)

    def observe(
        self, route: str, method: str, status: int, state: dict[str, Any], seconds: float
    ) -> None:
        """Count a request answered with ``status`` after ``seconds`` (``route``: a template or
        an RPC's full name; the model version and variant from ``state``)."""
        version = state.get("model_version", "")
        variant = state.get("variant", "")
        key = (route, method, str(status), version, variant, state.get("model", ""))
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

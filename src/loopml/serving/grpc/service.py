"""The gRPC ``inference.GRPCInferenceService`` of a worker (ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata, ModelInfer), answering like ``/v2`` over HTTP.

- An adapter over the inference core (:mod:`loopml.serving.core`), like ``/v2`` over HTTP:
  ``ModelInfer`` goes through the same API key check, batchers, canary and shadow routing
  (``x-request-key`` metadata is the canary's stickiness key), prediction log and metric labels.
  Texts come from ``raw_input_contents`` (what the Triton client sends) or
  ``contents.bytes_contents``; outputs go back as ``raw_output_contents`` (BYTES length-prefixed,
  FP32 little-endian), in the order asked for (all three when none is named).
- API keys: metadata ``authorization: Bearer <key>`` or ``x-api-key: <key>``, checked by the
  core like the HTTP routes: ModelInfer, ModelMetadata and ServerMetadata
  need a key when keys are set (versions, classes and loopml's version are not public); the
  liveness and readiness calls do not.
- Bounds (:mod:`loopml.serving.bounds`): outputs named once each, the answer's size under
  ``LOOPML_MAX_RESPONSE_BYTES`` before the model runs; status messages cut to 500 characters.
- Errors: each :class:`~loopml.errors.LoopmlError` becomes the gRPC status of its ``http_status``
  (400/422 INVALID_ARGUMENT with the message naming the field, 401 UNAUTHENTICATED, 403
  PERMISSION_DENIED, 404 NOT_FOUND, 409 FAILED_PRECONDITION, 503 UNAVAILABLE); anything else is
  logged by type only and answered INTERNAL "internal server error", never a traceback. Messages
  over ``LOOPML_MAX_BODY_BYTES`` are refused by gRPC itself (RESOURCE_EXHAUSTED).
- Metrics: each call counts in ``loopml_http_requests_total`` and its duration histogram with
  ``method="GRPC"``, ``route`` the RPC's full name and ``status`` the HTTP equivalent.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from starlette.datastructures import Headers

from loopml.errors import LoopmlError, RequestError, ServingError
from loopml.serving.bounds import bounded_message, brief, check_output_names
from loopml.serving.core import check_texts
from loopml.serving.grpc import grpc_predict_v2_pb2 as pb
from loopml.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from loopml.serving.grpc._codes import grpc_code
from loopml.serving.oip import (
    OUTPUTS,
    check_shape,
    model_metadata,
    output_raw,
    output_tensors,
    server_metadata,
)
from loopml.serving.oip_binary import decode_bytes_tensor, decode_texts

if TYPE_CHECKING:
    from loopml.serving.runtime import Runtime

__all__ = ["GRPC_GRACE_S", "GrpcServer", "bind_grpc"]

log = logging.getLogger("loopml.serving")

_SERVICE = "/inference.GRPCInferenceService/"
#: how long calls in flight may finish when the worker stops
GRPC_GRACE_S = 5.0


def _headers(context: Any) -> Headers:
    """The call's text metadata as HTTP headers (what the inference core reads)."""
    raw = [
        (str(key).lower().encode("latin-1"), value.encode("latin-1"))
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    ]
    return Headers(raw=raw)


class _Service:
    """The RPC handlers; each runs in the worker's event loop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.core = runtime.core

    async def _call(
        self,
        rpc: str,
        context: Any,
        handler: Callable[[dict[str, Any]], Awaitable[Any]],
    ) -> Any:
        """Run ``handler`` with a metrics state; map errors to gRPC statuses; record metrics."""
        start = time.perf_counter()
        state: dict[str, Any] = {}
        status = 500
        error: tuple[Any, str] | None = None
        try:
            response = await handler(state)
            status = 200
            return response
        except LoopmlError as exc:
            status = exc.http_status
            error = grpc_code(status), bounded_message(str(exc))
        except Exception as exc:
            log.error("unhandled %s on gRPC %s", type(exc).__name__, rpc)
            error = grpc.StatusCode.INTERNAL, "internal server error"
        finally:
            seconds = time.perf_counter() - start
            self.core.observe(_SERVICE + rpc, "GRPC", status, state, seconds)
        assert error is not None
        await context.abort(*error)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> Any:  # noqa: N802
        """The server answers."""

        async def live(_state: dict[str, Any]) -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._call("ServerLive", context, live)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> Any:  # noqa: N802
        """Ready once the champion is loaded."""

        async def ready(_state: dict[str, Any]) -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.runtime.router.ready)

        return await self._call("ServerReady", context, ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> Any:  # noqa: N802
        """Whether the model (and version) can answer; NOT_FOUND if it is not served here."""

        async def model_ready(_state: dict[str, Any]) -> pb.ModelReadyResponse:
            model = self.core.model(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=model is not None)

        return await self._call("ModelReady", context, model_ready)

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> Any:
        """Server name, version and extensions."""

        async def metadata(_state: dict[str, Any]) -> pb.ServerMetadataResponse:
            self.core.caller(_headers(context))
            return pb.ServerMetadataResponse(**server_metadata())

        return await self._call("ServerMetadata", context, metadata)

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> Any:
        """Versions, input and output tensors of the model (as ``GET /v2/models/{name}``)."""

        async def metadata(_state: dict[str, Any]) -> pb.ModelMetadataResponse:
            self.core.caller(_headers(context), model=request.name)
            meta = model_metadata(self.runtime, request.name, request.version or None)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
            )

        return await self._call("ModelMetadata", context, metadata)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> Any:  # noqa: N802
        """Classify the texts of the ``text`` BYTES tensor."""

        async def infer(state: dict[str, Any]) -> pb.ModelInferResponse:
            core = self.core
            call = core.context(_headers(context))
            name, version = request.model_name, request.model_version or None
            core.check_scope(call.principal, name)  # before a version's 404 says what serves
            core.model(name, version)
            texts = _texts(request, self.runtime)
            wanted = _outputs(request)
            binary = [(output, True) for output in wanted]
            core.check_answer_size(name, len(texts), binary, len(request.id.encode()))
            result = await core.predict(call, state, name, texts, version=version)
            model, answers = result.model, result.answers
            response = pb.ModelInferResponse(
                model_name=model.name, model_version=model.version, id=request.id
            )
            response.parameters["variant"].string_param = model.variant
            response.parameters["classes"].string_param = ",".join(model.classes)
            shapes = output_tensors(model, answers)
            for output in wanted:
                datatype, shape = shapes[output]
                response.outputs.add(name=output, datatype=datatype, shape=shape)
                response.raw_output_contents.append(output_raw(output, answers))
            return response

        return await self._call("ModelInfer", context, infer)


def _texts(request: pb.ModelInferRequest, runtime: Runtime) -> list[str]:
    """The texts of the request's ``text`` tensor (or its only one), checked like HTTP's."""
    inputs = request.inputs
    if not inputs:
        raise RequestError("inputs: must be a non-empty list of tensors")
    named = [i for i, t in enumerate(inputs) if t.name == "text"]
    if not named and len(inputs) != 1:
        raise RequestError("inputs: send one BYTES tensor named 'text'")
    index = named[0] if named else 0
    tensor, where = inputs[index], f"inputs[{index}]"
    if tensor.datatype != "BYTES":
        raise RequestError(
            f"{where}.datatype: must be 'BYTES' (texts), got {brief(tensor.datatype)}"
        )
    shape = check_shape(list(tensor.shape), f"{where}.shape")
    limit = runtime.settings.max_texts_per_request
    raw = request.raw_input_contents
    if raw:
        if len(raw) != len(inputs):
            raise RequestError(
                f"raw_input_contents: {len(raw)} entries for {len(inputs)} inputs;"
                " send one per input, in order"
            )
        if tensor.contents.bytes_contents:
            raise RequestError(f"{where}.contents: give contents or raw_input_contents, not both")
        place = f"raw_input_contents[{index}]"
        items = decode_bytes_tensor(raw[index], place, limit)
    else:
        place = f"{where}.contents.bytes_contents"
        items = list(tensor.contents.bytes_contents)
    texts = check_texts(decode_texts(items, place), place, runtime.settings)
    if math.prod(shape) != len(texts):
        raise RequestError(f"{where}.shape: {shape} does not match {len(texts)} element(s)")
    return texts


def _outputs(request: pb.ModelInferRequest) -> list[str]:
    """The names of the outputs asked for (all of them when none is named)."""
    names = [o.name for o in request.outputs]
    if not names:
        return list(OUTPUTS)
    check_output_names(names, OUTPUTS)
    return names


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """A ``grpc.aio`` server of the service, in the current event loop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.port = 0
        # SO_REUSEPORT: with several workers each binds the same port and the kernel spreads
        # connections over them, as it does for the HTTP socket.
        self._server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", runtime.settings.max_body_bytes),
                # an answer's size is checked before it is built (LOOPML_MAX_RESPONSE_BYTES)
                ("grpc.max_send_message_length", runtime.settings.max_response_bytes),
            ]
        )
        service = _Service(runtime)
        # generated code, untyped
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, self._server)  # type: ignore[no-untyped-call]

    def bind(self, host: str, port: int) -> int:
        """Bind ``host:port`` (0 picks a free port); the port bound (a ServingError if none)."""
        address = _address(host, port)
        try:
            bound = int(self._server.add_insecure_port(address))
        except RuntimeError as exc:
            raise ServingError(f"gRPC: cannot listen on {address}: {exc}") from None
        if bound == 0:
            raise ServingError(f"gRPC: cannot listen on {address} (in use or not allowed)")
        self.port = bound
        return bound

    async def start(self) -> None:
        """Start answering on the bound port."""
        await self._server.start()
        log.info("gRPC (OIP V2) listening on port %d", self.port)

    async def stop(self, grace_s: float = GRPC_GRACE_S) -> None:
        """Refuse new calls and let the ones in flight finish for up to ``grace_s``."""
        await self._server.stop(grace_s)


def bind_grpc(runtime: Runtime) -> GrpcServer | None:
    """A gRPC server bound to ``grpc_host:grpc_port`` (not started), or None when the port is 0.

    Call it in the worker's event loop; a ServingError when the port cannot be bound."""
    settings = runtime.settings
    if not settings.grpc_port:
        return None
    server = GrpcServer(runtime)
    server.bind(settings.grpc_host or "127.0.0.1", settings.grpc_port)
    return server

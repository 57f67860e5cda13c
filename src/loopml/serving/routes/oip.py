"""Open Inference Protocol V2 (KServe, Triton, MLServer clients) under ``/v2``.

Inputs: one BYTES tensor of texts (named ``text``, or the only input), shape ``[n]`` or ``[n, 1]``.
Outputs: ``label`` (BYTES ``[n]``), ``probabilities`` (FP32 ``[n, classes]``, row-major, class order
in the ``classes`` parameter) and ``request_id`` (BYTES ``[n]``, for ``POST /v1/feedback``).

Both the JSON form and the binary tensor data extension (what the Triton clients send by default)
are accepted: see :mod:`loopml.serving.oip_binary`. Outputs asked for with
``"parameters": {"binary_data": true}`` (or the request's ``binary_data_output``) come back binary.
The gRPC service (:mod:`loopml.serving.grpc`) answers through the same functions.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from loopml.errors import MalformedRequestError, NotFoundError, RequestError
from loopml.serving._http import json_response, load_json
from loopml.serving.batcher import Answer
from loopml.serving.bounds import brief, check_output_names, check_response_size
from loopml.serving.deps import ClientDep, RuntimeDep
from loopml.serving.docs import body_schema, error_responses
from loopml.serving.loader import LoadedModel
from loopml.serving.oip_binary import (
    HEADER_LENGTH,
    decode_bytes_tensor,
    decode_texts,
    encode_bytes_tensor,
    encode_fp32,
    split_body,
)
from loopml.serving.routes.predict import check_texts
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import InferIn, InferOut, ModelMetadataOut, ModelReadyOut

__all__ = [
    "InferAnswer",
    "InferRequest",
    "answer_infer",
    "check_answer_size",
    "parse_infer",
    "router",
]

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

OUTPUTS = ("label", "probabilities", "request_id")


def served_model(runtime: Runtime, name: str, version: str | None) -> LoadedModel | None:
    """The loaded model called ``name`` (and ``version``), None while none is loaded; 404 if
    the name or version is not served here."""
    if name != runtime.settings.model_name:
        raise NotFoundError(
            f"unknown model {brief(name)}: this server serves {runtime.settings.model_name!r}"
        )
    model = runtime.router.pick().model
    if version is not None and (model is None or version != model.version):
        served = model.version if model else "none"
        raise NotFoundError(
            f"model {brief(name)} version {brief(version)} is not served here (serving {served})"
        )
    return model


@cache
def server_version() -> str:
    """loopml's installed version ("unknown" when run from a source tree without metadata)."""
    try:
        return importlib.metadata.version("loopml")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def server_metadata() -> dict[str, Any]:
    """OIP server metadata: name, version and protocol extensions."""
    return {"name": "loopml", "version": server_version(), "extensions": ["binary_tensor_data"]}


@router.get("", summary="Server metadata", responses=error_responses(401, 403))
async def metadata_of_server(_auth: ClientDep) -> dict[str, Any]:
    """Server name, version and the protocol extensions it supports (an API key when keys
    are set)."""
    return server_metadata()


@router.get("/health/live", summary="Liveness")
async def live() -> dict[str, bool]:
    """The server process answers."""
    return {"live": True}


@router.get("/health/ready", summary="Readiness", responses=error_responses(503))
async def ready(runtime: RuntimeDep) -> Response:
    """Ready once a model is loaded."""
    ok = runtime.router.ready
    return json_response({"ready": ok}, 200 if ok else 503)


def model_metadata(runtime: Runtime, name: str, version: str | None) -> dict[str, Any]:
    """OIP model metadata of ``name`` (404 if it is not served here)."""
    model = served_model(runtime, name, version)
    classes = list(model.classes) if model else []
    return {
        "name": name,
        "versions": [model.version] if model else [],
        "platform": "loopml",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes) or -1]},
            {"name": "request_id", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {"classes": ",".join(classes)},
    }


@router.get(
    "/models/{name}", response_model=ModelMetadataOut, responses=error_responses(401, 403, 404)
)
async def metadata(name: str, _auth: ClientDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Model metadata: versions, input and output tensors (an API key when keys are set)."""
    return model_metadata(runtime, name, None)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadataOut,
    responses=error_responses(401, 403, 404),
)
async def version_metadata(
    name: str, version: str, _auth: ClientDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Metadata of one version (only the version being served; an API key when keys are set)."""
    return model_metadata(runtime, name, version)


@router.get("/models/{name}/ready", response_model=ModelReadyOut, responses=error_responses(404))
async def model_ready(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Whether the model can answer (200 with ``ready: false`` while loading)."""
    return {"name": name, "ready": served_model(runtime, name, None) is not None}


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReadyOut,
    responses=error_responses(404),
)
async def version_ready(name: str, version: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Whether this version is the one being served."""
    return {"name": name, "ready": served_model(runtime, name, version) is not None}


@dataclass(frozen=True)
class InferRequest:
    """A parsed OIP V2 inference request."""

    id: str | None
    texts: list[str]
    #: the requested outputs, in order, each with whether it goes back as binary data
    outputs: list[tuple[str, bool]]


@dataclass(frozen=True)
class InferAnswer:
    """The response body; ``header_length`` is set when it carries binary outputs (the value of
    ``Inference-Header-Content-Length``: the JSON header's size)."""

    body: bytes
    header_length: int | None = None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Content type (and header length) for the raw ASGI response."""
        if self.header_length is None:
            return [(b"content-type", b"application/json")]
        return [
            (b"content-type", b"application/octet-stream"),
            (HEADER_LENGTH.encode(), str(self.header_length).encode()),
        ]


def parse_infer(body: bytes, runtime: Runtime, header_length: str | None = None) -> InferRequest:
    """The parsed OIP V2 request, or a RequestError naming the field.

    ``header_length`` is the ``Inference-Header-Content-Length`` header: when given, the body is
    a JSON header of that many bytes followed by the binary data of the inputs that declare a
    ``binary_data_size`` (the binary tensor data extension)."""
    raw: bytes | None = None
    if header_length is not None:
        body, raw = split_body(body, header_length)
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise RequestError("body: must be a JSON object with 'inputs'")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise RequestError("id: must be a string")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs: must be a non-empty list of tensors")
    if not all(isinstance(t, dict) for t in inputs):
        raise RequestError("inputs: every tensor must be a JSON object")
    blobs = _binary_inputs(inputs, raw)
    named = [i for i, t in enumerate(inputs) if t.get("name") == "text"]
    if not named and len(inputs) != 1:
        raise RequestError("inputs: send one BYTES tensor named 'text'")
    index = named[0] if named else 0
    texts = _texts(inputs[index], f"inputs[{index}]", runtime, blobs[index])
    return InferRequest(rid, texts, _outputs(doc.get("outputs"), _binary_default(doc)))


def _binary_inputs(inputs: list[dict[str, Any]], raw: bytes | None) -> list[bytes | None]:
    """Each input's slice of the binary data (None for inputs sent as JSON ``data``); the
    declared sizes must add up to the binary data exactly."""
    blobs: list[bytes | None] = []
    pos = 0
    for i, tensor in enumerate(inputs):
        params = tensor.get("parameters")
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            blobs.append(None)
            continue
        where = f"inputs[{i}].parameters.binary_data_size"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RequestError(f"{where}: must be a non-negative integer, got {brief(size)}")
        if raw is None:
            raise MalformedRequestError(
                f"{where}: binary data needs the Inference-Header-Content-Length header"
                " (the size of the JSON header before it)"
            )
        if pos + size > len(raw):
            raise MalformedRequestError(
                f"{where}: {size} bytes at offset {pos} is past the end of the {len(raw)} bytes"
                " of binary data after the JSON header"
            )
        blobs.append(raw[pos : pos + size])
        pos += size
    if raw is not None and pos != len(raw):
        raise MalformedRequestError(
            f"Inference-Header-Content-Length: {len(raw)} bytes follow the JSON header but the"
            f" inputs' binary_data_size values add up to {pos}"
        )
    return blobs


def check_shape(shape: Any, where: str) -> list[int]:
    """A text tensor's shape: ``[n]`` or ``[n, 1]`` (a 422 naming ``where`` otherwise)."""
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise RequestError(f"{where}: must be a list of non-negative integers")
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise RequestError(f"{where}: must be [n] or [n, 1], got {brief(shape)}")
    return shape


def _texts(tensor: dict[str, Any], where: str, runtime: Runtime, blob: bytes | None) -> list[str]:
    if tensor.get("datatype") != "BYTES":
        raise RequestError(
            f"{where}.datatype: must be 'BYTES' (texts), got {brief(tensor.get('datatype'))}"
        )
    shape = check_shape(tensor.get("shape"), f"{where}.shape")
    data = tensor.get("data")
    if blob is not None:
        if data is not None:
            raise RequestError(f"{where}: give 'data' or parameters.binary_data_size, not both")
        limit = runtime.settings.max_texts_per_request
        data = decode_texts(decode_bytes_tensor(blob, f"{where} (binary data)", limit), where)
    elif (
        isinstance(data, list)
        and data
        and all(isinstance(row, list) and len(row) == 1 for row in data)
    ):
        data = [row[0] for row in data]  # [[t1], [t2]] for shape [n, 1]
    texts = check_texts(data, f"{where}.data", runtime.settings)
    if math.prod(shape) != len(texts):
        raise RequestError(
            f"{where}.shape: {brief(shape)} does not match {len(texts)} data element(s)"
        )
    return texts


def _binary_default(doc: dict[str, Any]) -> bool:
    """The request's ``parameters.binary_data_output`` (binary outputs unless said otherwise)."""
    params = doc.get("parameters")
    value = params.get("binary_data_output", False) if isinstance(params, dict) else False
    if not isinstance(value, bool):
        raise RequestError(
            f"parameters.binary_data_output: must be true or false, got {brief(value)}"
        )
    return value


def _outputs(requested: Any, binary: bool) -> list[tuple[str, bool]]:
    if requested is None:
        return [(name, binary) for name in OUTPUTS]
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise RequestError("outputs: must be a list of objects with a 'name'")
    check_output_names([o["name"] for o in requested], OUTPUTS)
    wanted = []
    for i, output in enumerate(requested):
        params = output.get("parameters")
        flag = params.get("binary_data", binary) if isinstance(params, dict) else binary
        if not isinstance(flag, bool):
            raise RequestError(
                f"outputs[{i}].parameters.binary_data: must be true or false, got {brief(flag)}"
            )
        wanted.append((output["name"], flag))
    return wanted


def check_answer_size(
    runtime: Runtime, texts: int, outputs: list[tuple[str, bool]], id_bytes: int
) -> None:
    """Refuse (422) an answer that could be over ``LOOPML_MAX_RESPONSE_BYTES``, before the model
    runs; the classes of every loaded model count (a canary may answer with the challenger)."""
    classes = {
        c for slot in runtime.router.slots.values() if slot.model for c in slot.model.classes
    }
    limit = runtime.settings.max_response_bytes
    check_response_size(texts, outputs, sorted(classes), limit, id_bytes)


def output_tensors(model: LoadedModel, answers: list[Answer]) -> dict[str, tuple[str, list[int]]]:
    """name -> (datatype, shape) of the outputs for ``answers``."""
    n = len(answers)
    return {
        "label": ("BYTES", [n]),
        "probabilities": ("FP32", [n, len(model.classes)]),
        "request_id": ("BYTES", [n]),
    }


def output_values(name: str, answers: list[Answer]) -> list[Any]:
    """The flat, row-major values of output ``name``."""
    if name == "label":
        return [a.label for a in answers]
    if name == "probabilities":
        return [p for a in answers for p in a.probabilities.values()]
    return [a.request_id for a in answers]


def output_raw(name: str, answers: list[Answer]) -> bytes:
    """Output ``name`` as raw tensor bytes (BYTES length-prefixed, FP32 little-endian)."""
    values = output_values(name, answers)
    return encode_fp32(values) if name == "probabilities" else encode_bytes_tensor(values)


async def answer_infer(
    runtime: Runtime,
    state: dict[str, Any],
    body: bytes,
    name: str,
    version: str | None,
    header_length: str | None = None,
) -> InferAnswer:
    """The answer to an OIP V2 inference body: JSON, or a JSON header and binary outputs when
    any output asks for binary data (a LoopmlError for bad input or overload)."""
    served_model(runtime, name, version)
    request = parse_infer(body, runtime, header_length)
    id_bytes = len(request.id.encode()) if request.id else 0
    check_answer_size(runtime, len(request.texts), request.outputs, id_bytes)
    result = await runtime.router.answer(state, request.texts, pinned=version is not None)
    model, answers = result.model, result.answers
    shapes = output_tensors(model, answers)
    out: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        out["id"] = request.id
    out["parameters"] = {"variant": model.variant, "classes": ",".join(model.classes)}
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output, binary in request.outputs:
        datatype, shape = shapes[output]
        tensor: dict[str, Any] = {"name": output, "shape": shape, "datatype": datatype}
        if binary:
            blob = output_raw(output, answers)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = output_values(output, answers)
        tensors.append(tensor)
    out["outputs"] = tensors
    head = orjson.dumps(out)
    if not blobs:
        return InferAnswer(head)
    return InferAnswer(head + b"".join(blobs), len(head))


async def infer(request: Request) -> Response:
    """Classify a BYTES tensor of texts (Open Inference Protocol V2)."""
    runtime: Runtime = request.app.state.runtime
    runtime.guard.client(request.headers)
    params = request.path_params
    state = request.scope["state"]
    state["request_key"] = request.headers.get("x-request-key")
    answer = await answer_infer(
        runtime,
        state,
        await request.body(),
        params["name"],
        params.get("version"),
        request.headers.get(HEADER_LENGTH),
    )
    headers = {k.decode(): v.decode() for k, v in answer.headers}
    return Response(answer.body, headers=headers)


def _infer_doc(*path_params: str) -> dict[str, Any]:
    extra = body_schema(InferIn)
    extra["parameters"] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in path_params
    ]
    return {
        "summary": "Classify texts (OIP V2)",
        "response_model": None,
        "openapi_extra": extra,
        "responses": {
            200: {"model": InferOut},
            **error_responses(400, 401, 403, 404, 408, 413, 422, 503),
        },
    }


router.add_api_route("/models/{name}/infer", infer, methods=["POST"], **_infer_doc("name"))
router.add_api_route(
    "/models/{name}/versions/{version}/infer",
    infer,
    methods=["POST"],
    operation_id="infer_version",
    **_infer_doc("name", "version"),
)

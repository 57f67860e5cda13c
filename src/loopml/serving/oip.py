"""Open Inference Protocol V2 (KServe, Triton, MLServer clients): the protocol, over the
inference core (:mod:`loopml.serving.core`); ``/v2`` over HTTP is :mod:`loopml.serving.routes.oip`
(and the fast lane), gRPC is :mod:`loopml.serving.grpc.service`.

Inputs: one BYTES tensor of texts (named ``text``, or the only input), shape ``[n]`` or ``[n, 1]``.
Outputs: ``label`` (BYTES ``[n]``), ``probabilities`` (FP32 ``[n, classes]``, row-major, class order
in the ``classes`` parameter) and ``request_id`` (BYTES ``[n]``, for ``POST /v1/feedback``).

Both the JSON form and the binary tensor data extension (what the Triton clients send by default)
are accepted: see :mod:`loopml.serving.oip_binary`. Outputs asked for with
``"parameters": {"binary_data": true}`` (or the request's ``binary_data_output``) come back binary.
The gRPC service shares the tensors, metadata and shape checks here.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from loopml.errors import MalformedRequestError, RequestError
from loopml.serving._http import load_json
from loopml.serving.batcher import Answer
from loopml.serving.bounds import brief, check_output_names
from loopml.serving.core import RequestContext, check_texts
from loopml.serving.loader import LoadedModel
from loopml.serving.oip_binary import (
    HEADER_LENGTH,
    decode_bytes_tensor,
    decode_texts,
    encode_bytes_tensor,
    encode_fp32,
    split_body,
)
from loopml.serving.runtime import Runtime

__all__ = [
    "OUTPUTS",
    "InferAnswer",
    "InferRequest",
    "answer_infer",
    "check_shape",
    "model_metadata",
    "output_raw",
    "output_tensors",
    "parse_infer",
    "repository_index",
    "server_metadata",
]

OUTPUTS = ("label", "probabilities", "request_id")


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


def model_metadata(runtime: Runtime, name: str, version: str | None) -> dict[str, Any]:
    """OIP model metadata of ``name`` (404 if it is not served here)."""
    model = runtime.core.model(name, version)
    # an unloaded model (LOOPML_MAX_LOADED_MODEL_BYTES) keeps its label set known here
    classes = list(model.classes if model else runtime.core.models.get(name).classes)
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


def repository_index(runtime: Runtime, scope: frozenset[str] | None) -> list[dict[str, Any]]:
    """OIP's model repository index: every served model (of ``scope``, a key's models; None:
    all), its version and state (``READY``; ``UNAVAILABLE`` while unloaded or not loaded yet,
    with the reason)."""
    out = []
    for served in runtime.core.models.all():
        if scope is not None and served.name not in scope:
            continue
        model = served.router.champion.model
        entry: dict[str, Any] = {"name": served.name, "version": model.version if model else ""}
        if model is not None:
            entry["state"] = "READY"
        else:
            entry["state"] = "UNAVAILABLE"
            entry["reason"] = (
                "loading" if served.active else "unloaded (loads again on its next request)"
            )
        out.append(entry)
    return out


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
    context: RequestContext,
    state: dict[str, Any],
    body: bytes,
    name: str,
    version: str | None,
    header_length: str | None = None,
) -> InferAnswer:
    """The answer to an OIP V2 inference body: JSON, or a JSON header and binary outputs when
    any output asks for binary data (a LoopmlError for bad input or overload)."""
    core = runtime.core
    core.check_scope(context.principal, name)  # before a version's 404 says what serves
    core.model(name, version)
    request = parse_infer(body, runtime, header_length)
    id_bytes = len(request.id.encode()) if request.id else 0
    core.check_answer_size(name, len(request.texts), request.outputs, id_bytes)
    result = await core.predict(context, state, name, request.texts, version=version)
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

"""The OIP binary tensor layout, the binary request parser and the gRPC status mapping."""

from __future__ import annotations

import json
import struct
from typing import Any

import grpc
import pytest

from loopml.config import load_settings
from loopml.errors import (
    AuthenticationError,
    LoopmlError,
    MalformedRequestError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RequestError,
    RolloutError,
)
from loopml.serving.grpc._codes import grpc_code
from loopml.serving.oip import InferRequest, parse_infer
from loopml.serving.oip_binary import (
    decode_bytes_tensor,
    decode_texts,
    encode_bytes_tensor,
    encode_fp32,
    split_body,
)


def test_bytes_tensor_round_trip() -> None:
    texts = ["great movie", "", "café ☕"]
    raw = encode_bytes_tensor(texts)
    assert raw[:4] == struct.pack("<I", len("great movie"))
    assert decode_texts(decode_bytes_tensor(raw, "t", 10), "t") == texts
    assert decode_bytes_tensor(b"", "t", 10) == []


def test_fp32_is_little_endian() -> None:
    assert encode_fp32([1.0, 0.25]) == struct.pack("<2f", 1.0, 0.25)


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [
        (b"\x01\x00", MalformedRequestError, "element 0 is cut short"),
        (struct.pack("<I", 5) + b"abc", MalformedRequestError, "declares 5 bytes but only 3"),
        (encode_bytes_tensor(["a", "b", "c"]), RequestError, "LOOPML_MAX_TEXTS_PER_REQUEST"),
    ],
)
def test_bad_bytes_tensors(raw: bytes, error: type[LoopmlError], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        decode_bytes_tensor(raw, "inputs[0]", 2)


def test_texts_must_be_utf8() -> None:
    with pytest.raises(RequestError, match=r"inputs\[0\]\[1\]: is not valid UTF-8"):
        decode_texts([b"ok", b"\xff"], "inputs[0]")


@pytest.mark.parametrize(
    ("value", "fragment"), [("12x", "byte length"), ("0", "at least 1"), ("99", "past the end")]
)
def test_split_body_checks_the_header_length(value: str, fragment: str) -> None:
    with pytest.raises(MalformedRequestError, match=fragment):
        split_body(b"0123456789", value)
    assert split_body(b"0123456789", "4") == (b"0123", b"456789")


class _Runtime:
    settings = load_settings(max_texts_per_request=3)


def _binary(header: dict[str, Any], raw: bytes) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + raw, str(len(head))


def test_parse_binary_request() -> None:
    raw = encode_bytes_tensor(["good", "bad"])
    tensor = {"name": "text", "shape": [2, 1], "datatype": "BYTES"}
    other = {"name": "extra", "shape": [1], "datatype": "INT32"}
    body, length = _binary(
        {
            "id": "9",
            "inputs": [
                {**other, "parameters": {"binary_data_size": 4}},
                {**tensor, "parameters": {"binary_data_size": len(raw)}},
            ],
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "probabilities"},
            ],
        },
        b"\x00" * 4 + raw,
    )
    parsed = parse_infer(body, _Runtime(), length)  # type: ignore[arg-type]
    assert parsed == InferRequest("9", ["good", "bad"], [("label", True), ("probabilities", False)])


def test_binary_output_default_and_bad_flags() -> None:
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}
    doc: dict[str, Any] = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
    parsed = parse_infer(json.dumps(doc).encode(), _Runtime())  # type: ignore[arg-type]
    assert all(binary for _name, binary in parsed.outputs)
    doc["outputs"] = [{"name": "label", "parameters": {"binary_data": "yes"}}]
    with pytest.raises(RequestError, match=r"outputs\[0\].parameters.binary_data"):
        parse_infer(json.dumps(doc).encode(), _Runtime())  # type: ignore[arg-type]
    tensor["parameters"] = {"binary_data_size": 0}
    body, length = _binary({"inputs": [tensor]}, b"")
    with pytest.raises(RequestError, match="not both"):
        parse_infer(body, _Runtime(), length)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MalformedRequestError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (RequestError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (AuthenticationError("x"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDeniedError("x"), grpc.StatusCode.PERMISSION_DENIED),
        (NotFoundError("x"), grpc.StatusCode.NOT_FOUND),
        (OverloadedError("x"), grpc.StatusCode.UNAVAILABLE),
        (RolloutError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_grpc_codes_follow_http_statuses(error: LoopmlError, code: grpc.StatusCode) -> None:
    assert grpc_code(error.http_status) == code

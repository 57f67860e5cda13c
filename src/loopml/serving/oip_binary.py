"""Raw tensors of the Open Inference Protocol: the binary tensor data extension (HTTP) and the
``raw_input_contents``/``raw_output_contents`` of gRPC use the same layout.

- A BYTES tensor is each element as a 4-byte little-endian length and its bytes, back to back.
- An FP32 tensor is its values as little-endian float32, row-major.
- Over HTTP, a binary body is a JSON header of ``Inference-Header-Content-Length`` bytes followed
  by the raw data of the inputs with ``"parameters": {"binary_data_size": N}``, in input order; a
  binary response is laid out the same way (header ``Inference-Header-Content-Length``).

Pure functions, no I/O: every malformed layout is a :class:`~loopml.errors.MalformedRequestError`
(400) or a :class:`~loopml.errors.RequestError` (422) that names the field.
"""

from __future__ import annotations

import struct

from loopml.errors import MalformedRequestError, RequestError

__all__ = [
    "HEADER_LENGTH",
    "decode_bytes_tensor",
    "decode_texts",
    "encode_bytes_tensor",
    "encode_fp32",
    "split_body",
]

#: The HTTP header of the binary tensor data extension (lower case, as ASGI delivers it).
HEADER_LENGTH = "inference-header-content-length"
_HEADER_NAME = "Inference-Header-Content-Length"
_LENGTH = struct.Struct("<I")


def split_body(body: bytes, header_length: str) -> tuple[bytes, bytes]:
    """(JSON header, binary data) of a body sent with ``Inference-Header-Content-Length``."""
    value = header_length.strip()
    if not value.isdigit():
        raise MalformedRequestError(
            f"{_HEADER_NAME}: must be the byte length of the JSON header, got {value[:20]!r}"
        )
    size = int(value)
    if size == 0:
        raise MalformedRequestError(f"{_HEADER_NAME}: must be at least 1 (the JSON header)")
    if size > len(body):
        raise MalformedRequestError(
            f"{_HEADER_NAME}: {size} is past the end of the {len(body)}-byte request body"
        )
    return body[:size], body[size:]


def decode_bytes_tensor(raw: bytes, where: str, limit: int) -> list[bytes]:
    """The elements of a raw BYTES tensor; at most ``limit`` of them (else a 422)."""
    items: list[bytes] = []
    view = memoryview(raw)
    pos, end = 0, len(raw)
    while pos < end:
        if len(items) == limit:
            raise RequestError(
                f"{where}: more than {limit} texts is over the limit of {limit} per request"
                " (LOOPML_MAX_TEXTS_PER_REQUEST)"
            )
        if pos + 4 > end:
            raise MalformedRequestError(
                f"{where}: element {len(items)} is cut short: {end - pos} byte(s) left where"
                " a 4-byte little-endian length is expected"
            )
        (size,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        if pos + size > end:
            raise MalformedRequestError(
                f"{where}: element {len(items)} declares {size} bytes but only {end - pos} remain"
            )
        items.append(bytes(view[pos : pos + size]))
        pos += size
    return items


def decode_texts(items: list[bytes], where: str) -> list[str]:
    """UTF-8 texts of BYTES elements (a 422 naming the element that is not UTF-8)."""
    texts = []
    for i, item in enumerate(items):
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(
                f"{where}[{i}]: is not valid UTF-8 (byte {exc.start}): texts are UTF-8"
            ) from None
    return texts


def encode_bytes_tensor(values: list[str]) -> bytes:
    """A raw BYTES tensor of ``values`` (UTF-8)."""
    parts = []
    for value in values:
        data = value.encode("utf-8")
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def encode_fp32(values: list[float]) -> bytes:
    """A raw FP32 tensor of ``values`` (little-endian float32)."""
    return struct.pack(f"<{len(values)}f", *values)

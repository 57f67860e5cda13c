"""Bounds on what one request may make a worker do or send, checked before the work starts.

- OIP ``outputs``: each name at most once, and only names the model has (a request that names
  ``probabilities`` 37,000 times asked for a response 600 times its size).
- The response: an upper bound of its size, from the number of texts, the outputs asked for and
  the model's classes, must stay under ``LOOPML_MAX_RESPONSE_BYTES`` (HTTP JSON, HTTP binary and
  gRPC alike), so no answer is built that would be refused.
- Error messages: values echoed back are cut to a few dozen characters, and a whole message to
  :data:`MAX_MESSAGE_CHARS` over gRPC (a status message travels in a header that clients cap at
  8 KiB: a 10,000-dimension shape echoed turned INVALID_ARGUMENT into RESOURCE_EXHAUSTED) and
  :data:`MAX_HTTP_MESSAGE_CHARS` over HTTP.

Pure functions: each refusal is a :class:`~loopml.errors.RequestError` (422, gRPC
INVALID_ARGUMENT) that names the field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from loopml.errors import RequestError

__all__ = [
    "MAX_HTTP_MESSAGE_CHARS",
    "MAX_MESSAGE_CHARS",
    "bounded_message",
    "brief",
    "check_output_names",
    "check_response_size",
    "response_bytes_bound",
]

#: the longest gRPC status message (percent-encoded, up to 12 bytes a character: under 8 KiB)
MAX_MESSAGE_CHARS = 500
#: the longest error message of an HTTP response
MAX_HTTP_MESSAGE_CHARS = 2_000
_ECHO_CHARS = 60

# Upper bounds of one value's share of a response, in bytes.
_JSON_FLOAT = 26  # orjson's longest float ("-1.2345678901234567e-308") and a comma
_ID = 32  # a request id: 32 hex characters
_PER_OUTPUT = 200  # a tensor's name, shape, datatype and parameters
_ENVELOPE = 1_024  # model name and version, parameters, the echoed id's quoting


def brief(value: Any, limit: int = _ECHO_CHARS) -> str:
    """``repr(value)``, cut to about ``limit`` characters (for echoing a value in an error)."""
    if isinstance(value, list | tuple) and len(value) > 8:
        text = repr(value[:8])[:-1] + f", ... ({len(value)} items)" + repr(value)[-1]
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounded_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters."""
    if len(message) <= limit:
        return message
    return message[: limit - 16] + " ... (truncated)"


def check_output_names(names: Sequence[str], available: Sequence[str]) -> None:
    """Refuse unknown output names and names asked for more than once."""
    unknown = [n for n in dict.fromkeys(names) if n not in available]
    if unknown:
        shown = ", ".join(brief(n) for n in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise RequestError(
            f"outputs: unknown output(s) {shown}{more}; available: {list(available)}"
        )
    repeated = [(n, c) for n, c in Counter(names).items() if c > 1]
    if repeated:
        name, count = repeated[0]
        raise RequestError(
            f"outputs: {name!r} is named {count} times; name each output at most once"
            f" (available: {list(available)})"
        )


def response_bytes_bound(
    texts: int, outputs: Sequence[tuple[str, bool]], classes: Sequence[str], id_bytes: int = 0
) -> int:
    """An upper bound of the size of the answer to ``texts`` texts: each output (name, binary)
    of the label, probabilities and request_id tensors, for a model with ``classes``."""
    label = max((len(c.encode()) for c in classes), default=0)
    per_text = {
        ("label", True): 4 + label,
        ("label", False): 3 + 6 * label,  # JSON may escape each byte as \\u00XX
        ("probabilities", True): 4 * len(classes),
        ("probabilities", False): _JSON_FLOAT * len(classes),
        ("request_id", True): 4 + _ID,
        ("request_id", False): 3 + _ID,
    }
    total = _ENVELOPE + 6 * id_bytes + 6 * sum(len(c.encode()) + 1 for c in classes)
    for name, binary in outputs:
        total += _PER_OUTPUT + texts * per_text.get((name, binary), 0)
    return total


def check_response_size(
    texts: int,
    outputs: Sequence[tuple[str, bool]],
    classes: Sequence[str],
    limit: int,
    id_bytes: int = 0,
) -> None:
    """Refuse a request whose answer could be over ``limit`` bytes
    (``LOOPML_MAX_RESPONSE_BYTES``)."""
    bound = response_bytes_bound(texts, outputs, classes, id_bytes)
    if bound > limit:
        raise RequestError(
            f"outputs: the answer to {texts} text(s) with outputs {[n for n, _ in outputs]}"
            f" could be {bound} bytes, over the limit of {limit} (LOOPML_MAX_RESPONSE_BYTES):"
            " send fewer texts or ask for fewer outputs"
        )

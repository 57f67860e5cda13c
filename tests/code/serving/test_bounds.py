"""Bounds checked before a request's work starts: OIP outputs named once, the answer's size,
error messages that echo no large value (units; the real servers are in tests/api)."""

from __future__ import annotations

import orjson
import pytest

from loopml.errors import RequestError
from loopml.serving.bounds import (
    MAX_MESSAGE_CHARS,
    bounded_message,
    brief,
    check_output_names,
    check_response_size,
    response_bytes_bound,
)
from loopml.serving.oip import OUTPUTS, check_shape
from loopml.serving.oip_binary import encode_bytes_tensor, encode_fp32

CLASSES = ("negative", "neutral", "positive")


def refused(call: object) -> str:
    with pytest.raises(RequestError) as info:
        call()  # type: ignore[operator]
    return str(info.value)


def test_outputs_named_twice_or_unknown_are_refused() -> None:
    message = refused(lambda: check_output_names(["probabilities"] * 37_000, OUTPUTS))
    assert "'probabilities' is named 37000 times" in message
    assert len(message) < 200
    message = refused(lambda: check_output_names(["label", "label"], OUTPUTS))
    assert "'label' is named 2 times" in message
    # thousands of unknown names, each long: three shown, cut short
    message = refused(lambda: check_output_names([f"{'x' * 500}{i}" for i in range(5000)], OUTPUTS))
    assert "unknown output(s)" in message and "and 4997 more" in message
    assert len(message) < 400
    check_output_names(["request_id", "label"], OUTPUTS)  # each once, any order: fine


def test_the_size_bound_holds_for_real_answers() -> None:
    """The bound is above the size of the answer actually built, JSON and binary alike."""
    n = 256
    label = "negative"
    ids = ["f" * 32] * n
    probs = [-1.2345678901234567e-308, 0.3333333333333333, 1.0] * n
    json_body = orjson.dumps(
        {
            "model_name": "a-model-name",
            "model_version": "12",
            "id": "request-1",
            "parameters": {"variant": "challenger", "classes": ",".join(CLASSES)},
            "outputs": [
                {"name": "label", "shape": [n], "datatype": "BYTES", "data": [label] * n},
                {"name": "probabilities", "shape": [n, 3], "datatype": "FP32", "data": probs},
                {"name": "request_id", "shape": [n], "datatype": "BYTES", "data": ids},
            ],
        }
    )
    outputs = [(name, False) for name in OUTPUTS]
    assert len(json_body) <= response_bytes_bound(n, outputs, CLASSES, len("request-1"))
    raw = encode_bytes_tensor([label] * n) + encode_fp32(probs) + encode_bytes_tensor(ids)
    binary = [(name, True) for name in OUTPUTS]
    assert len(raw) + 600 <= response_bytes_bound(n, binary, CLASSES)


def test_an_answer_over_the_limit_is_refused_before_it_is_built() -> None:
    outputs = [(name, False) for name in OUTPUTS]
    bound = response_bytes_bound(256, outputs, CLASSES)
    check_response_size(256, outputs, CLASSES, bound)
    message = refused(lambda: check_response_size(256, outputs, CLASSES, bound - 1))
    assert "LOOPML_MAX_RESPONSE_BYTES" in message and "256 text(s)" in message
    # a model with many classes: probabilities alone grow with texts x classes
    many = [f"class-{i}" for i in range(2000)]
    refused(lambda: check_response_size(256, [("probabilities", False)], many, 8_388_608))


def test_error_messages_echo_no_large_value() -> None:
    shape = list(range(10_000))
    message = refused(lambda: check_shape(shape, "inputs[0].shape"))
    assert "10000 items" in message
    assert len(message) < 200
    assert len(brief("x" * 10_000)) <= 60
    long = "y" * 100_000
    assert len(bounded_message(long)) == MAX_MESSAGE_CHARS
    assert bounded_message(long).endswith("(truncated)")
    assert bounded_message("short") == "short"

"""The request schemas say what the server takes: the text pattern is the server's own rule in
every regex engine involved (Python's in the generators, Rust's in pydantic and jsonschema-rs),
and the body rules checked by hand are in the JSON Schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pydantic
import pytest

from loopml.config import Settings, load_settings
from loopml.errors import RequestError
from loopml.pipeline.explain import MAX_TOKENS
from loopml.serving.routes.predict import check_text, parse_predict
from loopml.serving.schemas import (
    TEXT_PATTERN,
    FeedbackRelabelIn,
    PredictIn,
    PromoteIn,
    RolloutStartIn,
    at_most_tokens,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path, database_url=None, tracking_uri=None)


def _takes(fn: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        fn(*args, **kwargs)
    except (RequestError, pydantic.ValidationError):
        return False
    return True


def test_the_text_pattern_is_the_servers_rule_in_every_engine(settings: Settings) -> None:
    rust = jsonschema_rs.validator_for({"type": "string", "pattern": TEXT_PATTERN})
    # every blank character is below U+3100 (and the surrogates above it are no text)
    texts = [chr(code) for code in range(0x3100)] + ["a\x00b", " a ", "\u3000x\u3000", "\x1c\x1f"]
    disagree = []
    for text in texts:
        server = _takes(check_text, text, "text", settings)
        python = re.fullmatch(TEXT_PATTERN, text) is not None
        schema = rust.is_valid(text)
        model = _takes(FeedbackRelabelIn, request_id=text, label="x", reason="why")
        if not server == python == schema == model:
            disagree.append((text, server, python, schema, model))
    assert disagree == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": "a"},
        {"texts": ["a", "b"]},
        {"text": "a", "texts": ["b"]},
        {"text": None, "texts": ["a"]},
        {"text": "a", "texts": None},
        {"text": None},
        {"text": " "},
        {"text": ""},
        {"texts": []},
        {"texts": ["a", "\t"]},
        {"text": "a\x00"},
        {"text": "a", "other": 1},
    ],
)
def test_the_predict_schema_takes_what_the_server_takes(body: Any, settings: Settings) -> None:
    schema = jsonschema_rs.validator_for(PredictIn.model_json_schema())
    server = _takes(parse_predict, orjson.dumps(body), settings)
    assert schema.is_valid(body) == server == _takes(PredictIn.model_validate, body)


@pytest.mark.parametrize("model, flag", [(PromoteIn, "direct"), (RolloutStartIn, "force")])
def test_a_reason_is_required_with_direct_and_force(model: Any, flag: str) -> None:
    schema = jsonschema_rs.validator_for(model.model_json_schema())
    verdicts = {
        "no flag": schema.is_valid({"version": "1"}),
        "flag off": schema.is_valid({"version": "1", flag: False, "reason": ""}),
        "flag, no reason": schema.is_valid({"version": "1", flag: True}),
        "flag, blank reason": schema.is_valid({"version": "1", flag: True, "reason": " \u3000"}),
        "flag and reason": schema.is_valid({"version": "1", flag: True, "reason": "ticket 7"}),
    }
    assert verdicts == {
        "no flag": True,
        "flag off": True,
        "flag, no reason": False,
        "flag, blank reason": False,
        "flag and reason": True,
    }


def test_the_token_cap_pattern_counts_tokens_as_explain_does() -> None:
    pattern = at_most_tokens(MAX_TOKENS)
    rust = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    n = MAX_TOKENS
    texts = ["", "a", "a " * n, "a " * (n + 1), " a" * n, " a" * (n + 1), "a\u3000" * n + "b"]
    texts += ["x" * 5000, "\x1cb\x1c" * n, "\x1cb\x1c" * (n + 1), "a\x00b " * n]
    for text in texts:
        takes = len(re.findall(r"\S+", text)) <= MAX_TOKENS  # explain's own tokens
        assert (re.fullmatch(pattern, text) is not None) == rust.is_valid(text) == takes, text[:20]

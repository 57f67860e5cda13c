"""Request and response models: they document the API (OpenAPI, /docs) and type the cold routes.

The hot routes (``/v1/predict``, ``/v2/.../infer``) validate by hand with the same rules, because
pydantic + FastAPI body handling costs a large share of a single-text request on 2 cores.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

__all__ = [
    "ApproveIn",
    "ApproveOut",
    "ErrorOut",
    "ExplainIn",
    "ExplainOut",
    "FeedbackIn",
    "FeedbackItemOut",
    "FeedbackOut",
    "FeedbackRelabelIn",
    "FeedbackRelabelOut",
    "InferIn",
    "InferInputIn",
    "InferOut",
    "InferOutputOut",
    "InferRequestedOutputIn",
    "ModelMetadataOut",
    "ModelReadyOut",
    "PredictIn",
    "PredictOut",
    "PredictionOut",
    "PromoteIn",
    "ReleaseOut",
    "ReloadOut",
    "RolloutAbortIn",
    "RolloutStartIn",
    "RolloutStatusOut",
    "RoutingOut",
    "StatusOut",
    "TensorMetadataOut",
]


#: The characters ``str.strip()`` removes (``str.isspace``), spelled out: regex engines disagree
#: on ``\s`` (Python's holds U+001C-U+001F, those of Rust and ECMAScript do not).
BLANK = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: A text the server takes: not blank, no NUL (PostgreSQL text cannot hold it). The hot routes
#: and ``check_text`` enforce it with their own messages; the schema states it.
TEXT_PATTERN = rf"^[^\x00]*[^\x00{BLANK}][^\x00]*$"
_TEXT: JsonDict = {"pattern": TEXT_PATTERN}


def at_most_tokens(count: int) -> str:
    """A pattern for a text of at most ``count`` tokens (runs of non-blank characters, as
    explain splits them)."""
    return rf"^[{BLANK}]*(?:[^{BLANK}]+(?:[{BLANK}]+|$)){{0,{count}}}$"


def required_with(flag: str) -> dict[str, Any]:
    """JSON Schema: a ``reason`` that is not blank is required when ``flag`` is true."""
    return {
        "anyOf": [
            {"properties": {flag: {"const": False}}},
            {"required": [flag, "reason"], "properties": {"reason": {"pattern": f"[^{BLANK}]"}}},
        ]
    }


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    """Every 4xx/5xx body."""

    error: str


class PredictIn(_In):
    """One text (``text``) or several (``texts``): exactly one of the two."""

    model_config = ConfigDict(
        extra="forbid",
        # null stands for absent (as the server reads it): exactly one of the two is not null
        json_schema_extra={
            "oneOf": [
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
                {"required": ["texts"], "properties": {"texts": {"type": "array"}}},
            ]
        },
    )

    text: str | None = Field(
        None, min_length=1, pattern=TEXT_PATTERN, description="A text to classify."
    )
    texts: list[Annotated[str, Field(min_length=1, pattern=TEXT_PATTERN)]] | None = Field(
        None, min_length=1, description="Several texts to classify."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictIn:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) or 'texts' (a list)")
        return self


class PredictionOut(BaseModel):
    """The answer for one text."""

    request_id: str = Field(description="Quote it in POST /v1/feedback.")
    label: str
    probabilities: dict[str, float]


class PredictOut(BaseModel):
    """Answers, in the order of the texts, and the model that gave them."""

    model_name: str
    model_version: str
    variant: str
    predictions: list[PredictionOut]


class ExplainIn(_In):
    """One text to explain, with the served model or a served ``version``."""

    text: str = Field(
        json_schema_extra={"minLength": 1, **_TEXT},  # checked by check_text, with its messages
        description="The text (the limits of /v1/predict apply).",
    )
    version: str | None = Field(
        None,
        pattern=r"^[0-9]{1,18}$",
        description="A version this worker serves (champion or challenger); default: champion.",
    )
    top: int = Field(5, ge=1, le=50, description="Tokens per class and direction.")


class ExplainOut(BaseModel):
    """The answer and, per class, the tokens that drove it (see docs/explain.md)."""

    model_name: str
    model_version: str
    variant: str
    method: Literal["occlusion"]
    text: str
    label: str
    probabilities: dict[str, float]
    tokens: list[dict[str, Any]] = Field(
        description="Each whitespace token: index, token, start, end and its attribution per"
        " class (the class probability minus the probability without the token)."
    )
    classes: dict[str, dict[str, Any]] = Field(
        description="Per class: probability, and the top tokens towards (attribution > 0) and"
        " away (< 0) from it: {token, index, weight}."
    )
    linear: dict[str, dict[str, Any]] | None = Field(
        description="A linear model's own contributions per class (intercept, towards, away:"
        " {term, weight} = tf-idf weight x coefficient), else null."
    )


class FeedbackIn(_In):
    """The true label of an answered prediction."""

    request_id: str = Field(min_length=1, max_length=64, json_schema_extra=_TEXT)
    label: str = Field(min_length=1, max_length=100, json_schema_extra=_TEXT)


class FeedbackItemOut(BaseModel):
    """One stored feedback item."""

    request_id: str
    label: str
    predicted: str
    correct: bool


class FeedbackOut(BaseModel):
    """What was stored."""

    accepted: int
    items: list[FeedbackItemOut]


class FeedbackRelabelIn(_In):
    """An admin's correction of a stored label (audited)."""

    request_id: str = Field(min_length=1, max_length=64, pattern=TEXT_PATTERN)
    label: str = Field(min_length=1, max_length=100, pattern=TEXT_PATTERN)
    reason: str = Field(min_length=1, max_length=2000, pattern=TEXT_PATTERN)


class FeedbackRelabelOut(BaseModel):
    """The corrected label and what it was (label and the key id that gave it)."""

    request_id: str
    label: str
    previous: dict[str, str | None]


class InferInputIn(BaseModel):
    """An OIP V2 input tensor; loopml reads one BYTES tensor of texts."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequestedOutputIn(BaseModel):
    """An output the client wants (default: all)."""

    name: str
    parameters: dict[str, Any] | None = None


class InferIn(BaseModel):
    """OIP V2 inference request."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInputIn] = Field(min_length=1)
    outputs: list[InferRequestedOutputIn] | None = None


class InferOutputOut(BaseModel):
    """An OIP V2 output tensor."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferOut(BaseModel):
    """OIP V2 inference response: outputs ``label``, ``probabilities`` and ``request_id``."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferOutputOut]


class TensorMetadataOut(BaseModel):
    """Name, datatype and shape of a tensor (-1 = any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadataOut(BaseModel):
    """OIP V2 model metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadataOut]
    outputs: list[TensorMetadataOut]
    parameters: dict[str, Any] = Field(default_factory=dict)


class ModelReadyOut(BaseModel):
    """OIP V2 model readiness."""

    name: str
    ready: bool


class ReloadOut(BaseModel):
    """What one reload did."""

    variant: str
    result: Literal["loaded", "unchanged", "failed", "no_alias"]
    version: str | None
    previous: str | None
    error: str | None = None


class StatusOut(BaseModel):
    """Loaded models, routing, queue, prediction log and limits of this worker."""

    ready: bool
    pid: int
    uptime_s: float
    model_name: str
    models: dict[str, dict[str, Any]]
    routing: dict[str, Any] = Field(
        description="The routing state followed (champion, challenger, mode, weight, rollout"
        " step) and what this worker obeys now (effective_mode: none when the lease expired)."
    )
    queue_depth: int
    predlog: dict[str, Any]
    serving_errors: dict[str, int]
    limits: dict[str, Any]
    last_reload: dict[str, Any] | None
    served_models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Every model this server serves (LOOPML_MODELS): loaded or unloaded, bytes,"
        " label set, variants and routing, as /v1/models/{name}/status gives it.",
    )
    loaded_model_bytes: int = 0
    max_loaded_model_bytes: int = 0


class RolloutStartIn(_In):
    """Start a shadow or canary rollout of ``version`` against the champion."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=required_with("force"))

    version: str = Field(pattern=r"^[0-9]{1,18}$", description="Registry version to roll out.")
    mode: Literal["canary", "shadow"] | None = Field(
        None, description="Default: LOOPML_ROLLOUT_MODE."
    )
    weight: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="First canary weight, below 1 (default: the first of LOOPML_ROLLOUT_STEPS).",
    )
    force: bool = Field(False, description="Roll out even if the version's gate failed.")
    reason: str = Field("", max_length=2000, description="Why (required with force).")


class PromoteIn(_In):
    """Ship ``version``: a canary rollout by default, the champion at once with ``direct``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=required_with("direct"))

    version: str = Field(pattern=r"^[0-9]{1,18}$", description="Registry version to promote.")
    direct: bool = Field(
        False,
        description="Skip the canary: champion now, even if the gate failed (audited as forced).",
    )
    reason: str = Field("", max_length=2000, description="Why (required with direct).")


class ApproveIn(_In):
    """An admin's approval of ``version``'s recipe and parameters, naming the reviewer."""

    version: str = Field(pattern=r"^[0-9]{1,18}$", description="Registry version to approve.")
    by: str = Field(
        min_length=1, max_length=200, pattern=TEXT_PATTERN, description="Who reviewed it."
    )


class ApproveOut(BaseModel):
    """The approval as recorded (audit log and version tags)."""

    version: str
    by: str
    at: str
    actor: str
    recipe: str
    params: dict[str, Any]
    spec: str
    change: dict[str, Any] | None


class ReleaseOut(BaseModel):
    """What a promotion did: ``canary`` (see ``routing``), ``direct`` or ``first_champion``
    (see ``promotion``)."""

    how: Literal["canary", "direct", "first_champion"]
    version: str
    promotion: dict[str, Any] | None
    routing: RoutingOut | None


class RolloutAbortIn(_In):
    """Send all traffic back to the champion now."""

    reason: str = Field("aborted over HTTP", min_length=1, max_length=2000)


class RoutingOut(BaseModel):
    """The routing state of a model."""

    model_name: str
    champion: str | None
    challenger: str | None
    mode: Literal["none", "shadow", "canary"]
    weight: float
    updated_at: str | None
    rollout: dict[str, Any] | None


class RolloutStatusOut(BaseModel):
    """The routing state and a fresh analysis of the rollout in progress (if any)."""

    routing: RoutingOut
    analysis: dict[str, Any] | None

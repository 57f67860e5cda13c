"""``POST /v1/explain`` (the default model) and ``POST /v1/models/{name}/explain``: which tokens
drove a served model's answer on one text.

Same key as predicting (the ``predict`` role when ``LOOPML_API_KEYS`` is set) and the same text
limits. It stays off the hot path: the model is called in the worker's explain process
(:mod:`loopml.serving.explainer`), never through a batcher nor in the worker's own threads, so
predictions neither queue behind it nor wait for the GIL. A worker explains one text at a time,
each capped at :data:`loopml.pipeline.explain.MAX_TOKENS` tokens, and shares that slot fairly
among keys (:mod:`loopml.serving.fairshare`): one request per key at a time, turns in arrival
order, ``LOOPML_EXPLAIN_SECONDS_PER_MIN`` of explaining per key a minute; beyond that 429 with
``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from loopml.errors import NotFoundError, NotReadyError
from loopml.serving.auth import Principal
from loopml.serving.core import check_text
from loopml.serving.deps import PredictClientDep, RuntimeDep
from loopml.serving.docs import error_responses
from loopml.serving.loader import LoadedModel
from loopml.serving.router import Router
from loopml.serving.runtime import Runtime
from loopml.serving.schemas import ExplainIn, ExplainOut

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["explain"])


def _model(router: Router, version: str | None) -> LoadedModel:
    """The champion, or the loaded model of ``version`` (champion or challenger)."""
    loaded = [s.model for s in router.slots.values() if s.model is not None]
    if not loaded:
        raise NotReadyError("no model is loaded yet")
    if version is None:
        champion = router.champion.model
        return champion if champion is not None else loaded[0]
    for model in loaded:
        if model.version == version:
            return model
    served = ", ".join(sorted({m.version for m in loaded}))
    raise NotFoundError(
        f"version {version} is not served here (serving {served}):"
        f" `loopml explain {version} TEXT` explains any registered version"
    )


@router.post(
    "/explain",
    response_model=ExplainOut,
    responses=error_responses(400, 401, 403, 404, 408, 413, 422, 429, 503),
)
async def explain(body: ExplainIn, caller: PredictClientDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Explain one text: the predicted label and, per class, the tokens pushing towards and
    away from it (leave-one-token-out occlusion; for a linear model also its term weights)."""
    caller.check_model(runtime.settings.model_name, "predict")  # it explains the default model
    return await _explain(runtime, runtime.router, caller, body)


@router.post(
    "/models/{name}/explain",
    response_model=ExplainOut,
    responses=error_responses(400, 401, 403, 404, 408, 413, 422, 429, 503),
)
async def explain_model(
    name: str, body: ExplainIn, caller: PredictClientDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """``/v1/explain`` on the served model ``name`` (loaded again first if it was unloaded)."""
    runtime.models.get(name)  # 404 for a model not served here, before the scope
    caller.check_model(name, "predict")
    served = await runtime.models.acquire(name)
    try:
        return await _explain(runtime, served.router, caller, body)
    finally:
        runtime.models.release(served)


async def _explain(
    runtime: Runtime, router: Router, caller: Principal, body: ExplainIn
) -> dict[str, Any]:
    text = check_text(body.text, "text", runtime.settings)
    model = _model(router, body.version)
    async with runtime.explain_share.turn(caller.key_id) as turn:
        result, turn.cost = await runtime.explainer.explain(model, text, top=body.top)
    result.meta = {
        "model_name": model.name,
        "model_version": model.version,
        "variant": model.variant,
    }
    return result.to_dict()

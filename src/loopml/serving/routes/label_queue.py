"""``GET /v1/label-queue``: lease the unlabelled predictions worth labelling next.

Needs a key with the ``feedback`` role (whoever may send labels may ask what to label; without
configured keys: open in development only). The items are leased to the caller's key (plus the
``holder`` name it gives, one per annotator behind a shared key) for ``LOOPML_LABEL_LEASE_S``: no
other caller gets them until the lease expires or a label arrives. At most what the model's label
budget (``LOOPML_LABEL_BUDGET_PER_DAY``) has left is returned. See :mod:`loopml.labels.queue`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from loopml.errors import RequestError
from loopml.labels.queue import DEFAULT_STRATEGY, MAX_LIMIT, STRATEGIES, budget, item_dict, take
from loopml.serving._http import json_response
from loopml.serving.deps import FeedbackClientDep, RuntimeDep
from loopml.serving.docs import error_responses
from loopml.serving.runtime import Runtime

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["feedback"])

_PARAMS = {"model", "limit", "strategy", "holder"}


def _params(request: Request, runtime: Runtime) -> tuple[str, int, str, str | None]:
    query = request.query_params
    unknown = sorted(set(query) - _PARAMS)
    if unknown:
        raise RequestError(f"query: unknown parameter(s) {unknown}; known: {sorted(_PARAMS)}")
    model = query.get("model") or runtime.settings.model_name
    raw = query.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        raise RequestError(
            f"limit: must be an integer from 1 to {MAX_LIMIT}, got {raw!r}"
        ) from None
    strategy = query.get("strategy") or DEFAULT_STRATEGY
    holder = query.get("holder")
    if holder is not None and (not holder.strip() or len(holder) > 100):
        raise RequestError("holder: must be a non-empty name of at most 100 characters")
    return model, limit, strategy, holder


@router.get(
    "/label-queue",
    response_model=None,
    responses=error_responses(401, 403, 422, 503),
)
async def label_queue(request: Request, runtime: RuntimeDep, caller: FeedbackClientDep) -> Response:
    """Lease up to ``limit`` (default 20, at most 1000) unlabelled predictions of ``model``
    (default: the served model's name), best first under ``strategy`` (diverse, uncertainty,
    entropy or random; default diverse), to the caller's key and optional ``holder`` name."""
    model, limit, strategy, name = _params(request, runtime)
    caller.check_model(model, "feedback")  # the items are that model's logged texts
    if strategy not in STRATEGIES:
        raise RequestError(
            f"strategy: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    holder = caller.key_id if name is None else f"{caller.key_id}:{name}"
    # a served model's own [models.NAME] settings (its label budget, lease, pool)
    served = model in runtime.models.names
    settings = runtime.models.get(model).settings if served else runtime.settings

    def work() -> dict[str, Any]:
        store = runtime.store
        items = take(
            settings, model_name=model, limit=limit, strategy=strategy, holder=holder, store=store
        )
        left = budget(settings, model, store=store)
        return {
            "model": model,
            "strategy": strategy,
            "holder": holder,
            "budget": left.to_dict(),
            "items": [item_dict(i) for i in items],
        }

    return json_response(await runtime.db.run(work))

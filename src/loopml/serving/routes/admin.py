"""``/v1/admin/*``: operator actions, behind ``Authorization: Bearer $LOOPML_ADMIN_TOKEN``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from loopml.serving._http import HttpError
from loopml.serving.deps import AdminDep, RuntimeDep
from loopml.serving.docs import error_responses
from loopml.serving.schemas import ReloadOut

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/reload", response_model=ReloadOut, responses=error_responses(401, 403, 404, 409))
async def reload(_auth: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Follow the registry alias now (this worker; others follow at their next poll).

    409 when the aliased version cannot be loaded or warmed up: the previous model keeps serving.
    """
    out = await runtime.reload()
    if out["result"] == "failed":
        raise HttpError(
            409, f"reload failed, still serving version {out['previous']}: {out['error']}"
        )
    return out

"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from loopml.serving.auth import Principal
from loopml.serving.runtime import Runtime

__all__ = [
    "AdminDep",
    "ClientDep",
    "FeedbackClientDep",
    "PredictClientDep",
    "RuntimeDep",
    "get_runtime",
]


def get_runtime(request: Request) -> Runtime:
    """The worker's runtime, stored on the app by the factory."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def require_admin(request: Request) -> None:
    """Admin token check (404 when the admin API is off, 401/403 otherwise)."""
    # Who acted goes to the audit log: "admin" (the token) or the id of a key with the admin role.
    request.state.admin_id = get_runtime(request).guard.admin(request.headers)


def require_predict(request: Request) -> Principal:
    """The caller of a data route: a key with the ``predict`` role when keys are set (the
    inference core's one check, as for predictions)."""
    return get_runtime(request).core.caller(request.headers)


def require_feedback(request: Request) -> Principal:
    """The caller of ``/v1/feedback``: a key with the ``feedback`` role (see ``Guard.client``)."""
    return get_runtime(request).core.caller(request.headers, "feedback")


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
AdminDep = Annotated[None, Depends(require_admin)]
ClientDep = Annotated[Principal, Depends(require_predict)]
FeedbackClientDep = Annotated[Principal, Depends(require_feedback)]
PredictClientDep = Annotated[Principal, Depends(require_predict)]

"""``POST /v1/label-studio/webhook``: Label Studio's annotation events, stored as feedback.

Label Studio sends ``ANNOTATION_CREATED`` and ``ANNOTATION_UPDATED`` with the headers set in the
webhook: ``Authorization: Bearer $LOOPML_LABEL_STUDIO_WEBHOOK_SECRET`` (``loopml label webhook URL``
sets it). Without the setting the endpoint is off (404); no token is 401, a wrong one 403.
Deliveries are idempotent (keyed by Label Studio's annotation id): a repeated one changes nothing.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from loopml.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from loopml.labels.studio import record_annotation, webhook_annotations
from loopml.serving._http import json_response, load_json
from loopml.serving.deps import RuntimeDep
from loopml.serving.docs import error_responses

__all__ = ["router"]

router = APIRouter(prefix="/v1/label-studio", tags=["labels"])


def _check_secret(request: Request, secret: str | None) -> None:
    if secret is None:
        raise NotFoundError(
            "the Label Studio webhook is off: set LOOPML_LABEL_STUDIO_WEBHOOK_SECRET to enable it"
        )
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "the Label Studio webhook needs 'Authorization: Bearer <webhook secret>'"
            " (set it in the webhook's headers: `loopml label webhook URL`)"
        )
    if not hmac.compare_digest(token.strip().encode(), secret.encode()):
        raise PermissionDeniedError("the Label Studio webhook secret is not valid")


@router.post(
    "/webhook",
    response_model=None,
    responses={
        200: {"description": "what the annotation changed"},
        **error_responses(400, 401, 403, 404, 408, 409, 413, 422, 503),
    },
)
async def studio_webhook(request: Request, runtime: RuntimeDep) -> Response:
    """Store an annotation Label Studio reports (``ANNOTATION_CREATED``/``UPDATED``).

    Other actions are acknowledged and ignored. Once the required number of annotators agree
    the label is stored as feedback with them as its provenance; a disagreement waits for
    ``loopml label decide``. 404 for a task whose request id no prediction has, 409 for a label
    the model does not know.
    """
    settings = runtime.settings
    secret = settings.label_studio_webhook_secret
    _check_secret(request, None if secret is None else secret.get_secret_value())
    annotations = webhook_annotations(load_json(await request.body()))
    store = runtime.feedback.store
    results: list[dict[str, Any]] = []
    for annotation in annotations:
        status = await runtime.db.run(
            _record, store, annotation, settings.label_studio_min_annotations
        )
        results.append(
            {
                "request_id": annotation.request_id,
                "annotation_id": annotation.annotation_id,
                "annotator": annotation.annotator,
                "status": status,
            }
        )
    return json_response({"accepted": len(results), "items": results})


def _record(store: Any, annotation: Any, min_annotations: int) -> str:
    return record_annotation(store, annotation, min_annotations=min_annotations)

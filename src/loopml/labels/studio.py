"""Label Studio as the annotators' tool: tasks out, annotations back as feedback.

``push`` sends queue items to a Label Studio project as tasks (the text, our request id in the
task's data) with the model's answer as a pre-annotation (label and score); the project's labelling
config is built from the model's label set. Annotations come back through Label Studio's webhook
(``POST /v1/label-studio/webhook``) or ``pull``; both go through :func:`record_annotation`.

An item's label becomes feedback once it has ``LOOPML_LABEL_STUDIO_MIN_ANNOTATIONS`` annotations
that all agree; its ``key_id`` names the annotators (``labelstudio:<user id>[,<user id>...]``).
Annotations that disagree hold the item back (status ``disagreed``) until someone decides
(:func:`decide`, audited): a disagreement never trains. Label Studio is spoken to over its REST API
with httpx (``label-studio-sdk`` 2.x pins numpy below 2.3 through OpenCV, which clashes with
ours); its token is sent in a header and never logged.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self
from xml.sax.saxutils import quoteattr

import httpx
from sqlalchemy import select

from loopml.errors import (
    AnnotationToolError,
    ConfigError,
    ConflictError,
    NotFoundError,
    RequestError,
)
from loopml.store import Feedback, LabelAnnotation, LabelItem, Prediction, Store, current_actor

if TYPE_CHECKING:
    from pydantic import SecretStr

    from loopml.config import Settings
    from loopml.labels.items import QueueItem

__all__ = [
    "SOURCE",
    "Annotation",
    "PullResult",
    "PushResult",
    "StudioClient",
    "annotations_of_task",
    "decide",
    "disagreements",
    "label_config",
    "provenance",
    "pull",
    "push",
    "record_annotation",
    "webhook_annotations",
]

log = logging.getLogger(__name__)

#: ``label_annotations.source`` and the prefix of the annotators' key ids.
SOURCE = "labelstudio"
#: The names of the labelling config's tags: the choice (``from_name``) on the text (``to_name``).
FROM_NAME, TO_NAME = "label", "text"
#: Webhook actions that carry an annotation.
ANNOTATION_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED"})
_IMPORT_BATCH = 500


@dataclass(frozen=True, kw_only=True)
class Annotation:
    """One annotator's label for one task, as Label Studio reports it."""

    request_id: str
    annotation_id: str
    annotator: str
    label: str
    project_id: str
    task_id: str


@dataclass(kw_only=True)
class PushResult:
    """What ``push`` did: tasks created, items skipped as already sent."""

    project: int
    created: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts and items."""
        return {
            "project": self.project,
            "created": len(self.created),
            "skipped": len(self.skipped),
            "tasks": self.created,
            "skipped_ids": self.skipped,
        }


@dataclass(kw_only=True)
class PullResult:
    """What ``pull`` found: items by status after it, annotations read, those refused (why)."""

    project: int
    annotations: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    refused: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts and refusals."""
        return {
            "project": self.project,
            "annotations": self.annotations,
            "items": dict(self.outcomes),
            "refused": self.refused,
        }


def label_config(labels: list[str]) -> str:
    """Label Studio's labelling config for a text classifier over ``labels`` (one choice)."""
    if not labels:
        raise RequestError("labels: the model's label set is empty")
    choices = "".join(f"<Choice value={quoteattr(lb)}/>" for lb in labels)
    return (
        f'<View><Text name="{TO_NAME}" value="$text"/>'
        f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">'
        f"{choices}</Choices></View>"
    )


class StudioClient:
    """Label Studio's REST API (legacy ``Token`` auth); every failure is an
    ``AnnotationToolError`` naming the URL and what went wrong, never the token."""

    def __init__(self, url: str, token: SecretStr, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Token {token.get_secret_value()}"},
            timeout=timeout,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StudioClient:
        """A client for ``LOOPML_LABEL_STUDIO_URL`` and ``LOOPML_LABEL_STUDIO_TOKEN``."""
        if not settings.label_studio_url or settings.label_studio_token is None:
            raise ConfigError(
                "LOOPML_LABEL_STUDIO_URL and LOOPML_LABEL_STUDIO_TOKEN must be set to use Label"
                " Studio (the token: Label Studio > Account & Settings > Legacy Token)"
            )
        return cls(
            settings.label_studio_url,
            settings.label_studio_token,
            timeout=settings.label_studio_timeout_s,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call: its JSON body, or ``AnnotationToolError``."""
        where = f"Label Studio at {self.url}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            cause = type(exc).__name__
            if isinstance(exc, httpx.ConnectError):
                cause = "connection refused or host unreachable"
            elif isinstance(exc, httpx.TimeoutException):
                cause = "timed out"
            raise AnnotationToolError(
                f"{where} is unreachable ({cause}) on {method} {path}; nothing was changed in"
                " loopml: retry once it answers"
            ) from exc
        if response.status_code in (401, 403):
            raise AnnotationToolError(
                f"{where} refused the token (HTTP {response.status_code}) on {method} {path}:"
                " check LOOPML_LABEL_STUDIO_TOKEN (a legacy token; the organization must allow"
                " legacy tokens)"
            )
        if response.status_code == 404:
            raise AnnotationToolError(f"{where}: {method} {path} found nothing (HTTP 404)")
        if response.status_code >= 400:
            raise AnnotationToolError(
                f"{where} refused {method} {path} (HTTP {response.status_code}):"
                f" {response.text[:300]}"
            )
        return response.json() if response.content else None

    def project(self, project: int) -> dict[str, Any]:
        """The project's settings (404 names it)."""
        try:
            found: dict[str, Any] = self.call("GET", f"/api/projects/{project}")
        except AnnotationToolError as exc:
            if "HTTP 404" in str(exc):
                raise AnnotationToolError(
                    f"Label Studio at {self.url} has no project {project}"
                    " (LOOPML_LABEL_STUDIO_PROJECT or --project)"
                ) from exc
            raise
        return found

    def create_project(self, title: str, config: str, *, overlap: int) -> dict[str, Any]:
        """A new project with ``config``, each task shown to ``overlap`` annotators."""
        body = {"title": title, "label_config": config, "maximum_annotations": overlap}
        created: dict[str, Any] = self.call("POST", "/api/projects/", json=body)
        return created

    def ensure_config(self, project: int, config: str, *, overlap: int) -> bool:
        """Give the project ``config`` and ``overlap`` unless it has them; True if changed."""
        current = self.project(project)
        if current.get("label_config") == config and current.get("maximum_annotations") == overlap:
            return False
        body = {"label_config": config, "maximum_annotations": overlap}
        self.call("PATCH", f"/api/projects/{project}", json=body)
        return True

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Create ``tasks`` (with their predictions); their ids, in order."""
        ids: list[int] = []
        for start in range(0, len(tasks), _IMPORT_BATCH):
            batch = tasks[start : start + _IMPORT_BATCH]
            done = self.call(
                "POST",
                f"/api/projects/{project}/import",
                params={"return_task_ids": "true", "commit_to_project": "true"},
                json=batch,
            )
            got = list(done.get("task_ids") or [])
            if len(got) != len(batch):
                raise AnnotationToolError(
                    f"Label Studio at {self.url} created {len(got)} task ids for {len(batch)}"
                    " tasks; run `loopml label pull` to reconcile"
                )
            ids.extend(int(i) for i in got)
        return ids

    def annotated_tasks(self, project: int) -> list[dict[str, Any]]:
        """Every task of the project that has annotations, with them (Label Studio's JSON
        export)."""
        tasks: list[dict[str, Any]] = self.call(
            "GET", f"/api/projects/{project}/export", params={"exportType": "JSON"}
        )
        return tasks

    def add_webhook(self, project: int, url: str, secret: SecretStr) -> dict[str, Any]:
        """Send the project's annotation events to ``url`` with ``secret`` as bearer token."""
        body = {
            "project": project,
            "url": url,
            "send_payload": True,
            "send_for_all_actions": False,
            "actions": sorted(ANNOTATION_ACTIONS),
            "headers": {"Authorization": f"Bearer {secret.get_secret_value()}"},
            "is_active": True,
        }
        created: dict[str, Any] = self.call("POST", "/api/webhooks/", json=body)
        created.pop("headers", None)  # holds the secret
        return created


def provenance(annotators: list[str]) -> str:
    """The feedback ``key_id`` of a label given by ``annotators`` (their sorted ids, or a hash
    of them when they do not fit in 64 characters)."""
    ids = sorted({a.removeprefix(f"{SOURCE}:") for a in annotators})
    key = f"{SOURCE}:{','.join(ids)}"
    if len(key) <= 64:
        return key
    digest = hashlib.sha256(",".join(ids).encode()).hexdigest()[:16]
    return f"{SOURCE}:{len(ids)}-annotators-{digest}"


def _task(item: QueueItem) -> dict[str, Any]:
    result = {
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "choices",
        "value": {"choices": [item.label]},
    }
    return {
        "data": {
            "text": item.text,
            "request_id": item.request_id,
            "model_version": item.model_version,
        },
        "predictions": [
            {
                "model_version": f"{item.model_name}:{item.model_version}",
                "score": round(float(item.score), 6),
                "result": [result],
            }
        ],
    }


def project_for(settings: Settings, client: StudioClient, project: int | None) -> int:
    """The project to use: ``project``, else ``LOOPML_LABEL_STUDIO_PROJECT``, else a new one."""
    chosen = project or settings.label_studio_project
    if chosen is not None:
        return chosen
    created = client.create_project(
        f"loopml {settings.model_name}",
        '<View><Text name="text" value="$text"/></View>',
        overlap=settings.label_studio_min_annotations,
    )
    return int(created["id"])


def push(
    settings: Settings,
    store: Store,
    client: StudioClient,
    items: list[QueueItem],
    *,
    project: int,
) -> PushResult:
    """Create one task per item not sent before, with the model's answer as pre-annotation.

    The project's labelling config becomes the model's label set first. Items already sent are
    skipped; an item whose task was created is recorded at once (``label_items``).
    """
    result = PushResult(project=project)
    if not items:
        return result
    labels = sorted({lb for item in items for lb in item.probabilities} | {items[0].label})
    client.ensure_config(
        project, label_config(labels), overlap=settings.label_studio_min_annotations
    )
    with store.session() as session:
        ids = [item.request_id for item in items]
        sent = set(
            session.scalars(select(LabelItem.request_id).where(LabelItem.request_id.in_(ids)))
        )
    fresh = [item for item in items if item.request_id not in sent]
    result.skipped = [item.request_id for item in items if item.request_id in sent]
    if not fresh:
        return result
    task_ids = client.import_tasks(project, [_task(item) for item in fresh])
    now = datetime.now(UTC)
    with store.session() as session:
        for item, task_id in zip(fresh, task_ids, strict=True):
            session.add(
                LabelItem(
                    request_id=item.request_id,
                    model_name=item.model_name,
                    project_id=str(project),
                    task_id=str(task_id),
                    status="pushed",
                    annotations=0,
                    pushed_at=now,
                    updated_at=now,
                )
            )
            result.created.append(
                {"request_id": item.request_id, "task_id": task_id, "label": item.label}
            )
    return result


def _choice(result: Any) -> str | None:
    """The chosen label of an annotation's ``result`` (None when there is none)."""
    for region in result or []:
        if not isinstance(region, dict) or region.get("from_name") != FROM_NAME:
            continue
        choices = (region.get("value") or {}).get("choices") or []
        if choices and isinstance(choices[0], str):
            return choices[0]
    return None


def _annotation(raw: dict[str, Any], task: dict[str, Any], project: Any) -> Annotation | None:
    if raw.get("was_cancelled") or raw.get("id") is None:
        return None  # skipped by the annotator: no label
    data = task.get("data") or {}
    request_id, label = data.get("request_id"), _choice(raw.get("result"))
    if not isinstance(request_id, str) or label is None:
        return None
    user = raw.get("completed_by")
    if isinstance(user, dict):
        user = user.get("id")
    return Annotation(
        request_id=request_id,
        annotation_id=str(raw["id"]),
        annotator=f"{SOURCE}:{user}",
        label=label,
        project_id=str(project if project is not None else task.get("project")),
        task_id=str(task.get("id")),
    )


def annotations_of_task(task: dict[str, Any]) -> list[Annotation]:
    """The labelled, not cancelled annotations of one exported task."""
    found = [_annotation(raw, task, task.get("project")) for raw in task.get("annotations") or []]
    return [a for a in found if a is not None]


def webhook_annotations(payload: Any) -> list[Annotation]:
    """The annotation of an ``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` webhook payload
    (none for other actions); ``RequestError`` names what is missing."""
    if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
        raise RequestError("body: a Label Studio webhook payload has an 'action'")
    if payload["action"] not in ANNOTATION_ACTIONS:
        return []
    raw, task = payload.get("annotation"), payload.get("task")
    if not isinstance(raw, dict) or not isinstance(task, dict):
        raise RequestError(
            "body: an annotation webhook needs 'annotation' and 'task' objects"
            " (turn on 'send payload' in the webhook's settings)"
        )
    project = payload.get("project")
    project_id = project.get("id") if isinstance(project, dict) else raw.get("project")
    one = _annotation(raw, task, project_id)
    if one is None and not raw.get("was_cancelled"):
        raise RequestError(
            f"body.task.data.request_id or the annotation's '{FROM_NAME}' choice is missing"
            " (tasks come from `loopml label push`)"
        )
    return [one] if one is not None else []


def _classes(session: Any, request_id: str) -> tuple[str, list[str]]:
    row = session.execute(
        select(Prediction.model_name, Prediction.probabilities).where(
            Prediction.request_id == request_id
        )
    ).first()
    if row is None:
        raise NotFoundError(f"request_id {request_id}: no logged prediction has it")
    return row[0], list(row[1])


def record_annotation(store: Store, annotation: Annotation, *, min_annotations: int) -> str:
    """Store one annotation and what follows from it, in one transaction; the item's status.

    A repeated delivery changes nothing. Once ``min_annotations`` annotations agree, the label
    is stored as feedback with the annotators as ``key_id``; annotations that disagree hold the
    item (``disagreed``) until :func:`decide`. ``NotFoundError`` for an unknown request id,
    ``ConflictError`` for a label the model does not know.
    """
    now = datetime.now(UTC)
    with store.session() as session:
        model_name, classes = _classes(session, annotation.request_id)
        if annotation.label not in classes:
            raise ConflictError(
                f"label {annotation.label!r} for request_id {annotation.request_id} is not one"
                f" of the model's classes {sorted(classes)}"
            )
        item = session.get(LabelItem, annotation.request_id, with_for_update=True)
        if item is None:  # a task created by push whose row was not recorded: adopt it
            item = LabelItem(
                request_id=annotation.request_id,
                model_name=model_name,
                project_id=annotation.project_id,
                task_id=annotation.task_id,
                status="pushed",
                annotations=0,
                pushed_at=now,
                updated_at=now,
            )
            session.add(item)
        key = (SOURCE, annotation.annotation_id)
        row = session.get(LabelAnnotation, key)
        if row is not None and (row.label, row.annotator) == (
            annotation.label,
            annotation.annotator,
        ):
            return item.status  # the same delivery again
        if row is None:
            session.add(
                LabelAnnotation(
                    source=SOURCE,
                    annotation_id=annotation.annotation_id,
                    request_id=annotation.request_id,
                    annotator=annotation.annotator,
                    label=annotation.label,
                    ts=now,
                )
            )
        else:
            row.label, row.annotator, row.ts = annotation.label, annotation.annotator, now
        session.flush()
        _settle(session, item, min_annotations, now)
        return item.status


def _settle(session: Any, item: LabelItem, min_annotations: int, now: datetime) -> None:
    """Recount the item's annotations; store agreed labels as feedback."""
    rows = list(
        session.scalars(
            select(LabelAnnotation).where(LabelAnnotation.request_id == item.request_id)
        )
    )
    counts = Counter(r.label for r in rows)
    top, top_n = counts.most_common(1)[0]
    item.annotations, item.agreement, item.updated_at = len(rows), top_n / len(rows), now
    if item.status == "decided":
        return  # a decision stands; later annotations are recorded only
    feedback = session.get(Feedback, item.request_id)
    if len(counts) > 1 or (feedback is not None and feedback.label != top):
        item.status, item.label = "disagreed", None
        return
    if len(rows) < min_annotations:
        item.status, item.label = "waiting", None
        return
    item.status, item.label = "agreed", top
    if feedback is None:
        key_id = provenance([r.annotator for r in rows])
        session.add(Feedback(request_id=item.request_id, ts=now, label=top, key_id=key_id))


def pull(settings: Settings, store: Store, client: StudioClient, *, project: int) -> PullResult:
    """Fetch the project's annotations and record each (what the webhook would have sent)."""
    result = PullResult(project=project)
    statuses: dict[str, str] = {}
    for task in client.annotated_tasks(project):
        for annotation in annotations_of_task({"project": project, **task}):
            try:
                statuses[annotation.request_id] = record_annotation(
                    store, annotation, min_annotations=settings.label_studio_min_annotations
                )
            except (NotFoundError, ConflictError) as exc:
                result.refused.append(
                    {"annotation_id": annotation.annotation_id, "error": str(exc)}
                )
            else:
                result.annotations += 1
    result.outcomes.update(statuses.values())
    return result


def decide(
    store: Store, *, request_id: str, label: str, by: str, reason: str = ""
) -> dict[str, Any]:
    """Settle a disagreement (or an item still waiting) with ``label``: stored as feedback
    (``key_id`` ``decided:<by>``) and audited. ``ConflictError`` for an agreed or decided item."""
    if not by.strip():
        raise RequestError("--by: required (who decides, for the audit log)")
    with store.session() as session:
        item = session.get(LabelItem, request_id, with_for_update=True)
        if item is None:
            raise NotFoundError(f"request_id {request_id} was never sent to Label Studio")
        if item.status in ("agreed", "decided"):
            raise ConflictError(
                f"request_id {request_id} is {item.status} (label {item.label!r}); correct a"
                " stored label with `loopml feedback relabel`"
            )
        _, classes = _classes(session, request_id)
        if label not in classes:
            raise ConflictError(
                f"label {label!r} for request_id {request_id} is not one of the model's"
                f" classes {sorted(classes)}"
            )
        votes = {
            a.annotator: a.label
            for a in session.scalars(
                select(LabelAnnotation).where(LabelAnnotation.request_id == request_id)
            )
        }
        now, key_id = datetime.now(UTC), f"decided:{by}"[:64]
        feedback = session.get(Feedback, request_id)
        previous = None if feedback is None else feedback.label
        if feedback is None:
            session.add(Feedback(request_id=request_id, ts=now, label=label, key_id=key_id))
        else:
            feedback.label, feedback.key_id, feedback.ts = label, key_id, now
        before = item.status
        item.status, item.label, item.decided_by, item.updated_at = "decided", label, by, now
        store.audit(
            actor=current_actor(),
            action="label_decide",
            model_name=item.model_name,
            from_version=None,
            to_version=None,
            reason=reason or f"decided by {by}",
            details={
                "request_id": request_id,
                "label": label,
                "by": by,
                "status_before": before,
                "annotations": votes,
                "previous_feedback_label": previous,
            },
            session=session,
        )
    return {"request_id": request_id, "label": label, "by": by, "annotations": votes}


def disagreements(store: Store, *, model_name: str | None = None) -> list[dict[str, Any]]:
    """Items whose annotators disagree and that nobody has decided yet, oldest first."""
    with store.session() as session:
        query = select(LabelItem).where(LabelItem.status == "disagreed")
        if model_name:
            query = query.where(LabelItem.model_name == model_name)
        items = list(session.scalars(query.order_by(LabelItem.updated_at)))
        out = []
        for item in items:
            votes = session.scalars(
                select(LabelAnnotation).where(LabelAnnotation.request_id == item.request_id)
            )
            out.append(
                {
                    "request_id": item.request_id,
                    "model_name": item.model_name,
                    "task_id": item.task_id,
                    "agreement": item.agreement,
                    "annotations": {a.annotator: a.label for a in votes},
                }
            )
    return out

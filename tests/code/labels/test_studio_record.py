"""What annotations become: agreed labels stored as feedback with their annotators, disagreements
held until decided (audited), repeated deliveries changing nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from loopml.config import Settings
from loopml.errors import ConflictError, NotFoundError, RequestError
from loopml.labels.studio import (
    Annotation,
    annotations_of_task,
    decide,
    disagreements,
    label_config,
    provenance,
    record_annotation,
    webhook_annotations,
)
from loopml.store import Feedback, LabelAnnotation, LabelItem, Prediction, Store, open_store

CLASSES = {"negative": 0.2, "neutral": 0.3, "positive": 0.5}


def add_predictions(store: Store, n: int, model_name: str = "sentiment") -> list[str]:
    """``n`` logged predictions (answer ``positive``); their request ids."""
    ids = [f"req-{i:03d}" for i in range(n)]
    with store.session() as session:
        for rid in ids:
            session.add(
                Prediction(
                    request_id=rid,
                    ts=datetime.now(UTC),
                    model_name=model_name,
                    model_version="1",
                    variant="champion",
                    text=f"text of {rid}",
                    text_hash="0" * 64,
                    text_length=10,
                    label="positive",
                    probabilities=CLASSES,
                    latency_ms=1.0,
                )
            )
    return ids


def ann(rid: str, annotation_id: int, user: int, label: str) -> Annotation:
    return Annotation(
        request_id=rid,
        annotation_id=str(annotation_id),
        annotator=f"labelstudio:{user}",
        label=label,
        project_id="1",
        task_id=f"t-{rid}",
    )


@pytest.fixture
def store(backend_settings: Settings) -> Store:
    return open_store(backend_settings.db_url)


def feedback(store: Store, rid: str) -> tuple[str, str | None] | None:
    with store.session() as session:
        row = session.get(Feedback, rid)
        return None if row is None else (row.label, row.key_id)


def item(store: Store, rid: str) -> LabelItem:
    with store.session() as session:
        found = session.get(LabelItem, rid)
        assert found is not None
        session.expunge(found)
        return found


def test_two_agreeing_annotators_give_feedback_with_both_as_provenance(store: Store) -> None:
    (rid,) = add_predictions(store, 1)
    assert record_annotation(store, ann(rid, 1, 7, "negative"), min_annotations=2) == "waiting"
    assert feedback(store, rid) is None  # one annotation of two: not yet
    assert record_annotation(store, ann(rid, 2, 3, "negative"), min_annotations=2) == "agreed"
    assert feedback(store, rid) == ("negative", "labelstudio:3,7")
    got = item(store, rid)
    assert (got.status, got.label, got.agreement, got.annotations) == ("agreed", "negative", 1.0, 2)
    store.dispose()


def test_a_disagreement_never_becomes_feedback_until_decided_and_audited(store: Store) -> None:
    (rid,) = add_predictions(store, 1)
    record_annotation(store, ann(rid, 1, 7, "negative"), min_annotations=2)
    assert record_annotation(store, ann(rid, 2, 3, "neutral"), min_annotations=2) == "disagreed"
    assert feedback(store, rid) is None
    assert item(store, rid).agreement == 0.5
    pending = disagreements(store)
    assert [p["request_id"] for p in pending] == [rid]
    assert pending[0]["annotations"] == {"labelstudio:7": "negative", "labelstudio:3": "neutral"}
    # a third annotation is recorded; the item still waits for a decision
    assert record_annotation(store, ann(rid, 3, 9, "negative"), min_annotations=2) == "disagreed"
    assert feedback(store, rid) is None
    with pytest.raises(ConflictError, match="not one of the model's classes"):
        decide(store, request_id=rid, label="angry", by="lead")
    with pytest.raises(RequestError, match="--by"):
        decide(store, request_id=rid, label="negative", by=" ")
    decided = decide(store, request_id=rid, label="negative", by="lead", reason="2 of 3")
    assert decided["annotations"]["labelstudio:3"] == "neutral"
    assert feedback(store, rid) == ("negative", "decided:lead")
    assert disagreements(store) == []
    audit = store.history("sentiment", limit=1)[0]
    assert audit.action == "label_decide" and audit.reason == "2 of 3"
    assert audit.details["status_before"] == "disagreed" and audit.details["by"] == "lead"
    with pytest.raises(ConflictError, match="is decided"):
        decide(store, request_id=rid, label="neutral", by="lead")
    # a late annotation changes nothing that was decided
    assert record_annotation(store, ann(rid, 4, 11, "positive"), min_annotations=2) == "decided"
    assert feedback(store, rid) == ("negative", "decided:lead")
    store.dispose()


def test_repeated_deliveries_change_nothing_and_an_update_is_followed(store: Store) -> None:
    rid, other = add_predictions(store, 2)
    for _ in range(3):
        assert record_annotation(store, ann(rid, 1, 7, "neutral"), min_annotations=1) == "agreed"
    with store.session() as session:
        rows = session.scalars(select(LabelAnnotation).where(LabelAnnotation.request_id == rid))
        assert len(list(rows)) == 1
    assert feedback(store, rid) == ("neutral", "labelstudio:7")
    # the annotator changes their mind after the label was stored: held for a decision
    assert record_annotation(store, ann(rid, 1, 7, "positive"), min_annotations=1) == "disagreed"
    assert feedback(store, rid) == ("neutral", "labelstudio:7")  # a given label only changes
    decide(store, request_id=rid, label="positive", by="lead")  # by a decision, audited
    assert feedback(store, rid) == ("positive", "decided:lead")
    # an annotation for a prediction nobody logged, or a label the model does not know
    with pytest.raises(NotFoundError, match="no logged prediction"):
        record_annotation(store, ann("nope", 9, 7, "neutral"), min_annotations=1)
    with pytest.raises(ConflictError, match="classes"):
        record_annotation(store, ann(other, 10, 7, "angry"), min_annotations=1)
    assert feedback(store, other) is None
    store.dispose()


def test_provenance_names_the_annotators_and_fits_the_key_column() -> None:
    assert provenance(["labelstudio:12", "labelstudio:3", "labelstudio:12"]) == "labelstudio:12,3"
    many = provenance([f"labelstudio:{i}" for i in range(100, 130)])
    assert len(many) <= 64 and many.startswith("labelstudio:30-annotators-")


def test_payloads_of_label_studio_are_read_and_bad_ones_named() -> None:
    task = {"id": 5, "data": {"text": "t", "request_id": "r1"}, "project": 2}
    raw = {
        "id": 11,
        "completed_by": 4,
        "result": [{"from_name": "label", "type": "choices", "value": {"choices": ["neutral"]}}],
    }
    cancelled = {**raw, "id": 12, "was_cancelled": True}
    got = annotations_of_task({**task, "annotations": [raw, cancelled]})
    assert got == [
        Annotation(
            request_id="r1",
            annotation_id="11",
            annotator="labelstudio:4",
            label="neutral",
            project_id="2",
            task_id="5",
        )
    ]
    hook = {"action": "ANNOTATION_CREATED", "annotation": raw, "task": task, "project": {"id": 2}}
    assert webhook_annotations(hook) == got
    assert webhook_annotations({"action": "PROJECT_UPDATED"}) == []
    with pytest.raises(RequestError, match="'action'"):
        webhook_annotations([1])
    with pytest.raises(RequestError, match="send payload"):
        webhook_annotations({"action": "ANNOTATION_UPDATED"})
    with pytest.raises(RequestError, match="request_id"):
        webhook_annotations({**hook, "task": {"id": 5, "data": {"text": "t"}}})
    assert 'value="a &amp; b"' in label_config(["a & b", "c"])
    with pytest.raises(RequestError, match="empty"):
        label_config([])

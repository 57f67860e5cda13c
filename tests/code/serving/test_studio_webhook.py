"""``POST /v1/label-studio/webhook`` on the real app: off without a secret, 401/403 for a missing or
wrong token, 4xx naming what is wrong in a payload, and a repeated delivery stored once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from loopml.config import Settings
from loopml.serving.app import create_app
from loopml.store import Feedback, LabelAnnotation, Prediction, open_store

SECRET = "webhook-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def payload(rid: str, label: str, annotation_id: int = 1, user: int = 4) -> dict[str, object]:
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {
            "id": annotation_id,
            "completed_by": user,
            "result": [{"from_name": "label", "type": "choices", "value": {"choices": [label]}}],
        },
        "task": {"id": 9, "data": {"text": "t", "request_id": rid}},
        "project": {"id": 2},
    }


@pytest.mark.slow  # the app starts a runtime (MLflow store and all): ~10-20 s on 2 busy cores
def test_the_webhook_is_guarded_and_stores_each_annotation_once(settings: Settings) -> None:
    with open_store(settings.db_url) as store, store.session() as session:
        session.add(
            Prediction(
                request_id="r1",
                ts=datetime.now(UTC),
                model_name="sentiment",
                model_version="1",
                variant="champion",
                text="t",
                text_hash="0" * 64,
                text_length=1,
                label="positive",
                probabilities={"negative": 0.4, "positive": 0.6},
                latency_ms=1.0,
            )
        )
    with TestClient(create_app(settings)) as off:
        answer = off.post("/v1/label-studio/webhook", json=payload("r1", "negative"), headers=AUTH)
        assert answer.status_code == 404 and "LABEL_STUDIO_WEBHOOK_SECRET" in answer.json()["error"]
    on = settings.model_copy(update={"label_studio_webhook_secret": SecretStr(SECRET)})
    with TestClient(create_app(on)) as client:
        url = "/v1/label-studio/webhook"
        assert client.post(url, json=payload("r1", "negative")).status_code == 401
        bad = client.post(
            url, json=payload("r1", "negative"), headers={"Authorization": "Bearer x"}
        )
        assert bad.status_code == 403
        assert client.post(url, content=b"{", headers=AUTH).status_code == 400
        assert client.post(url, json={"no": "action"}, headers=AUTH).status_code == 422
        assert client.post(url, json=payload("nope", "negative"), headers=AUTH).status_code == 404
        angry = client.post(url, json=payload("r1", "angry"), headers=AUTH)
        assert angry.status_code == 409 and "classes" in angry.json()["error"]
        ignored = client.post(url, json={"action": "PROJECT_UPDATED"}, headers=AUTH)
        assert ignored.status_code == 200 and ignored.json()["accepted"] == 0
        for _ in range(3):
            ok = client.post(url, json=payload("r1", "negative"), headers=AUTH)
            assert ok.status_code == 200, ok.text
            assert ok.json()["items"] == [
                {
                    "request_id": "r1",
                    "annotation_id": "1",
                    "annotator": "labelstudio:4",
                    "status": "agreed",
                }
            ]
    with open_store(settings.db_url) as store, store.session() as session:
        assert session.scalar(select(func.count()).select_from(LabelAnnotation)) == 1
        row = session.get(Feedback, "r1")
        assert row is not None and (row.label, row.key_id) == ("negative", "labelstudio:4")

"""Feedback as a privileged channel on a real server: roles per route, the per-key label rate
limit, labels given once, the audited admin relabel, and the server-chosen canary variant."""

from __future__ import annotations

from typing import Any

import httpx
from serving_helpers import (
    ADMIN_TOKEN,
    AUTH,
    TrainedRegistry,
    query,
    start_rollout,
    wait_obeying,
)

from loopml.routing import Routing
from loopml.serving.auth import key_id
from loopml.serving.router import choose_variant

PRED = "predict-only-key-0123456789"
FEED = "feedback-key-0123456789abc"
LABELER = "labeler-only-key-012345678"
SECRET = "trust-test-routing-secret"


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_roles_rate_limit_no_overwrite_and_audited_relabel(
    trained: TrainedRegistry, make_server: Any
) -> None:
    server = make_server(
        api_keys=f"{PRED},{FEED}:predict+feedback,{LABELER}:feedback",
        admin_token=ADMIN_TOKEN,
        feedback_rate_per_min=30,
        predlog_flush_interval_s=0.05,
    )
    url = server.url
    name = server.env["LOOPML_MODEL_NAME"]
    infer = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok"]}]}
    with httpx.Client(base_url=url, timeout=30) as http:
        texts = {"texts": [f"the crew was great {i}" for i in range(40)]}
        preds = http.post("/v1/predict", json=texts, headers=h(PRED)).json()["predictions"]
        ids = [p["request_id"] for p in preds]
        one = {"request_id": ids[0], "label": "negative"}

        # Who may do what, per route.
        codes = {
            "predict": [
                http.post("/v1/predict", json={"text": "x"}, headers=h(k)).status_code
                for k in (PRED, FEED, LABELER)
            ],
            "infer": [
                http.post(f"/v2/models/{name}/infer", json=infer, headers=h(k)).status_code
                for k in (PRED, FEED, LABELER)
            ],
            "feedback": [
                http.post("/v1/feedback", json=one, headers=hd).status_code
                for hd in ({}, h("wrong-key"), h(PRED))
            ],
            "relabel": [
                http.post("/v1/admin/feedback/relabel", json={**one, "reason": "r"}, headers=hd)
                for hd in ({}, h(FEED) | {"Authorization": f"Bearer {FEED}"})
            ],
        }
        assert codes["predict"] == [200, 200, 403]
        assert codes["infer"] == [200, 200, 403]
        assert codes["feedback"] == [401, 403, 403]
        assert [r.status_code for r in codes["relabel"]] == [401, 403]

        # A label from the feedback key: stored with its key id; a second one is refused (409).
        ok = http.post("/v1/feedback", json=one, headers=h(FEED))
        assert ok.status_code == 200, ok.text
        again = http.post("/v1/feedback", json={**one, "label": "positive"}, headers=h(LABELER))
        assert again.status_code == 409 and "already labelled" in again.json()["error"]

        # Rate limit: 30 labels a minute per key; 29 more pass, the 31st label is refused.
        batch = [{"request_id": rid, "label": "negative"} for rid in ids[1:30]]
        assert http.post("/v1/feedback", json=batch, headers=h(FEED)).status_code == 200
        over = http.post(
            "/v1/feedback", json={"request_id": ids[30], "label": "neutral"}, headers=h(FEED)
        )
        assert over.status_code == 429 and "LOOPML_FEEDBACK_RATE_PER_MIN" in over.json()["error"]
        assert int(over.headers["retry-after"]) >= 1
        # Another key has its own bucket.
        other = {"request_id": ids[30], "label": "neutral"}
        assert http.post("/v1/feedback", json=other, headers=h(LABELER)).status_code == 200

        # The admin corrects a label: the only way it changes, and it is audited.
        bad = http.post("/v1/admin/feedback/relabel", json=one, headers=AUTH)
        assert bad.status_code == 422 and "reason" in bad.text
        fixed = http.post(
            "/v1/admin/feedback/relabel",
            json={**one, "label": "positive", "reason": "poisoned by a client"},
            headers=AUTH,
        )
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["previous"] == {"label": "negative", "key_id": key_id(FEED)}
        missing = {"request_id": ids[35], "label": "positive", "reason": "x"}
        unlabeled = http.post("/v1/admin/feedback/relabel", json=missing, headers=AUTH)
        assert unlabeled.status_code == 404

    db = f"sqlite:///{server.home / 'loopml.db'}"
    rows = query(db, "select key_id, count(*) from feedback group by key_id order by key_id")
    assert dict(rows) == {"admin": 1, key_id(FEED): 29, key_id(LABELER): 1}
    audit = query(db, "select actor, action, reason, details from audit_log")
    assert len(audit) == 1
    actor, action, reason, details = audit[0]
    assert actor.startswith("http:admin@") and action == "feedback_relabel"
    assert reason == "poisoned by a client" and '"from_key_id"' in details
    server.stop()
    for secret in (PRED, FEED, LABELER):
        assert secret not in server.logs()


def test_the_server_chooses_the_canary_variant(trained: TrainedRegistry, make_server: Any) -> None:
    server = make_server(admin_token=ADMIN_TOKEN, routing_secret=SECRET, routing_poll_s=0.2)
    name = server.env["LOOPML_MODEL_NAME"]
    start_rollout(server.url, "2", "canary", 0.5)
    wait_obeying(server.url, "canary", "2")
    routing = Routing(name, "1", "2", "canary", 0.5)
    keys = [f"user-{i}" for i in range(120)]
    with httpx.Client(base_url=server.url, timeout=30) as http:

        def variant(key: str) -> str:
            resp = http.post("/v1/predict", json={"text": "hi"}, headers={"X-Request-Key": key})
            assert resp.status_code == 200
            out: str = resp.json()["variant"]
            return out

        first = {k: variant(k) for k in keys}
        assert first == {k: variant(k) for k in keys}  # a client keeps its variant
    assert first == {k: choose_variant(routing, k, secret=SECRET.encode()) for k in keys}
    # The keys main's unkeyed hash sends to the challenger are not the ones this server does.
    unkeyed = {k: choose_variant(routing, k, secret=b"") for k in keys}
    assert sum(first[k] == unkeyed[k] for k in keys) < 0.7 * len(keys)
    assert 0.3 < sum(v == "challenger" for v in first.values()) / len(keys) < 0.7
    assert not (server.home / "routing_secret").exists()  # the setting wins over the file

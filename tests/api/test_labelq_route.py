"""``GET /v1/label-queue`` on a real server: the feedback role only, leases per key and holder,
a label ends the lease, bad parameters are 422s naming the parameter."""

from __future__ import annotations

from typing import Any

import httpx
from serving_helpers import wait_for

PRED = "labelq-predict-key-0123456789"
FEED = "labelq-feedback-key-012345678"
LABELER = "labelq-labeler-key-0123456789"


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_label_queue_route(make_server: Any) -> None:
    server = make_server(
        api_keys=f"{PRED},{FEED}:predict+feedback,{LABELER}:feedback",
        predlog_flush_interval_s=0.05,
        label_budget_per_day=30,
    )
    with httpx.Client(base_url=server.url, timeout=60) as http:
        texts = {"texts": [f"the crew on flight {i} was {'rude' if i % 3 else 'kind'}"
                           for i in range(40)]}  # fmt: skip
        preds = http.post("/v1/predict", json=texts, headers=h(PRED)).json()["predictions"]
        ids = {p["request_id"] for p in preds}

        # who may ask: no key 401, a predict-only key 403
        assert http.get("/v1/label-queue").status_code == 401
        refused = http.get("/v1/label-queue", headers=h(PRED))
        assert refused.status_code == 403 and "feedback" in refused.json()["error"]

        def first() -> Any:
            doc = http.get("/v1/label-queue?limit=10&holder=ann", headers=h(FEED)).json()
            return doc if doc.get("items") else None

        doc = wait_for(first, 30, "logged predictions to queue")  # the log is written async
        assert doc["strategy"] == "diverse" and doc["holder"].endswith(":ann")
        mine = [i["request_id"] for i in doc["items"]]
        assert len(mine) == 10 and set(mine) <= ids
        item = doc["items"][0]
        assert {"text", "label", "score", "probabilities", "priority", "lease_expires"} <= set(item)

        other = http.get("/v1/label-queue?limit=10&strategy=uncertainty", headers=h(LABELER))
        assert other.status_code == 200
        theirs = [i["request_id"] for i in other.json()["items"]]
        assert len(theirs) == 10 and not set(theirs) & set(mine)

        # a label ends the lease; the budget counts it as received
        body = {"request_id": mine[0], "label": "negative"}
        assert http.post("/v1/feedback", json=body, headers=h(FEED)).status_code == 200
        rest = http.get("/v1/label-queue?limit=100&strategy=random", headers=h(FEED)).json()
        assert rest["budget"] == {"per_day": 30, "received": 1, "handed_out": 29, "used": 30,
                                  "left": 0}  # fmt: skip
        assert len(rest["items"]) == 10  # 30 - 1 received - 19 still leased
        assert not {i["request_id"] for i in rest["items"]} & (set(mine) | set(theirs))

        for query, field in (
            ("limit=0", "limit"),
            ("limit=abc", "limit"),
            ("strategy=loudest", "strategy"),
            ("colour=red", "unknown parameter"),
        ):
            bad = http.get(f"/v1/label-queue?{query}", headers=h(FEED))
            assert bad.status_code == 422, query
            assert field in bad.json()["error"], bad.json()

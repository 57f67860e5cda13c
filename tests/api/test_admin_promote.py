"""``POST /v1/admin/promote`` on a real server: a canary by default, a reasoned direct promotion
on request, both in the audit log with the HTTP actor."""

from __future__ import annotations

from typing import Any

import httpx
from serving_helpers import ADMIN_TOKEN, AUTH, TrainedRegistry, query


def test_admin_promote_starts_a_canary_or_promotes_directly(
    trained: TrainedRegistry, make_server: Any
) -> None:
    from loopml.tracking import configure_mlflow

    server = make_server(admin_token=ADMIN_TOKEN, routing_poll_s=0.2)
    name = server.env["LOOPML_MODEL_NAME"]
    # version 2 passed its gate against today's champion (the clones carry no gate tags)
    client = configure_mlflow(trained.settings)
    client.set_model_version_tag(name, "2", "loopml.gate", "passed")
    client.set_model_version_tag(name, "2", "loopml.gate.champion", "1")
    url = server.url + "/v1/admin"

    def promote(body: Any, auth: bool = True) -> httpx.Response:
        return httpx.post(url + "/promote", json=body, headers=AUTH if auth else {}, timeout=60)

    assert promote({"version": "2"}, auth=False).status_code == 401
    refused = promote({"version": "2", "direct": True, "reason": " "})
    assert refused.status_code == 422 and "reason" in refused.json()["error"]
    assert promote({"version": "99"}).status_code == 404
    assert promote({"version": "1"}).status_code == 409  # already the champion

    canary = promote({"version": "2", "reason": "ship v2"})
    assert canary.status_code == 200, canary.text
    assert canary.json()["how"] == "canary" and canary.json()["promotion"] is None
    status = httpx.get(url + "/rollout", headers=AUTH, timeout=60).json()["routing"]
    assert (status["champion"], status["challenger"], status["mode"]) == ("1", "2", "canary")
    assert status["weight"] == 0.1

    direct = promote({"version": "2", "direct": True, "reason": "incident 9: ship now"})
    assert direct.status_code == 200, direct.text
    assert direct.json()["how"] == "direct"
    assert direct.json()["promotion"]["to_version"] == "2"
    status = httpx.get(url + "/rollout", headers=AUTH, timeout=60).json()["routing"]
    assert (status["champion"], status["challenger"], status["mode"]) == ("2", None, "none")

    audit = query(
        f"sqlite:///{server.home / 'loopml.db'}",
        "select actor, action, reason, details from audit_log order by id",
    )
    assert [(a[1], a[2]) for a in audit] == [
        ("rollout_start_canary", "ship v2"),
        ("force_promote", "incident 9: ship now"),
    ]
    assert {a[0] for a in audit} == {"http:admin@127.0.0.1"}
    assert '"direct": true' in audit[1][3]


def test_admin_approve_records_the_reviewer_before_changed_params_ship(
    trained: TrainedRegistry, make_server: Any
) -> None:
    from loopml.registry import RECIPE_PARAMS_TAG, RECIPE_TAG
    from loopml.tracking import configure_mlflow

    server = make_server(admin_token=ADMIN_TOKEN, routing_poll_s=0.2)
    name = server.env["LOOPML_MODEL_NAME"]
    client = configure_mlflow(trained.settings)
    for version, c in (("1", 4.0), ("2", 0.5)):  # version 2: a parameter the champion lacks
        client.set_model_version_tag(name, version, RECIPE_TAG, "tfidf-logreg")
        client.set_model_version_tag(name, version, RECIPE_PARAMS_TAG, f'{{"C": {c}}}')
    client.set_model_version_tag(name, "2", "loopml.gate", "passed")
    client.set_model_version_tag(name, "2", "loopml.gate.champion", "1")
    url = server.url + "/v1/admin"

    def post(path: str, body: Any, auth: bool = True) -> httpx.Response:
        return httpx.post(url + path, json=body, headers=AUTH if auth else {}, timeout=60)

    refused = post("/promote", {"version": "2", "reason": "ship v2"})
    assert refused.status_code == 409 and "approve 2 --by" in refused.json()["error"]
    assert post("/approve", {"version": "2", "by": "alice"}, auth=False).status_code == 401
    assert post("/approve", {"version": "2", "by": ""}).status_code == 422
    assert post("/approve", {"version": "99", "by": "alice"}).status_code == 404
    approved = post("/approve", {"version": "2", "by": "alice"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["change"]["params"]["C"] == [4.0, 0.5]
    assert client.get_model_version(name, "2").tags["loopml.approved_by"] == "alice"
    assert post("/promote", {"version": "2", "reason": "ship v2"}).status_code == 200

    audit = query(
        f"sqlite:///{server.home / 'loopml.db'}",
        "select actor, action, reason from audit_log order by id",
    )
    assert audit[0] == (
        "http:admin@127.0.0.1",
        "approve",
        "recipe and parameters reviewed and approved by alice",
    )
    assert audit[1][1] == "rollout_start_canary"

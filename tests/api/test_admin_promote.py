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

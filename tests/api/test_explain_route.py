"""``POST /v1/explain`` on real servers: the served model explains itself, behind the predict
role, with the limits of predict, and is no prediction (nothing logged)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from serving_helpers import TrainedRegistry, query

KEY = "explain-key-0123456789abcdef"
LABELLER = "labeller-key-0123456789abcdef"


def error(resp: httpx.Response, status: int, *words: str) -> None:
    assert resp.status_code == status, resp.text
    assert set(resp.json()) == {"error"}
    for word in words:
        assert word in resp.json()["error"], resp.json()


def test_explain_names_the_token_that_drove_the_answer(client: httpx.Client) -> None:
    resp = client.post("/v1/explain", json={"text": "the crew was great", "top": 2})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert (doc["model_version"], doc["variant"], doc["method"]) == ("1", "champion", "occlusion")
    assert doc["label"] == "positive"
    assert set(doc["probabilities"]) == set(doc["classes"]) == {"negative", "neutral", "positive"}
    assert [t["token"] for t in doc["tokens"]] == ["the", "crew", "was", "great"]
    assert doc["classes"]["positive"]["towards"][0]["token"] == "great"
    assert len(doc["classes"]["positive"]["towards"]) <= 2
    assert doc["linear"]["positive"]["towards"], "tfidf-logreg shows its term weights too"
    same = client.post("/v1/explain", json={"text": "the crew was great", "version": "1", "top": 2})
    assert same.json() == doc, "deterministic, and version 1 is the champion served"


def test_explain_refuses_what_predict_refuses(client: Any) -> None:
    error(client.post("/v1/explain", json={"text": ""}), 422, "text", "empty")
    error(client.post("/v1/explain", json={"text": "   "}), 422, "empty")
    error(client.post("/v1/explain", json={"text": "x" * 5001}), 422, "LOOPML_MAX_TEXT_CHARS")
    error(client.post("/v1/explain", json={"text": "a " * 300}), 422, "256 tokens")
    error(client.post("/v1/explain", json={}), 422, "text")
    error(client.post("/v1/explain", json={"text": "ok", "top": 0}), 422, "top")
    error(client.post("/v1/explain", json={"text": "ok", "colour": 1}), 422, "colour")
    error(client.post("/v1/explain", json={"text": "ok", "version": "2"}), 404, "not served")
    error(client.post("/v1/explain", json={"text": "ok", "version": "v1"}), 422, "version")
    as_json = {"content-type": "application/json"}
    error(client.post("/v1/explain", content=b"{no json", headers=as_json), 400, "not valid JSON")
    bad_utf8 = client.post("/v1/explain", content=b'{"text": "\xff"}', headers=as_json)
    error(bad_utf8, 400, "not valid UTF-8")


def test_explain_needs_the_predict_role_and_logs_no_prediction(
    trained: TrainedRegistry, make_server: Any
) -> None:
    server = make_server(api_keys=f"{KEY},{LABELLER}:feedback", predlog_flush_interval_s=0.05)
    url, body = server.url + "/v1/explain", {"text": "awful delay"}
    error(httpx.post(url, json=body), 401, "API key")
    error(httpx.post(url, json=body, headers={"X-API-Key": "nope"}), 403)
    error(httpx.post(url, json=body, headers={"X-API-Key": LABELLER}), 403, "'predict' role")
    ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert ok.json()["label"] == "negative"
    time.sleep(0.5)  # ten prediction-log flush intervals
    rows = query(f"sqlite:///{server.home / 'loopml.db'}", "select count(*) from predictions")
    assert rows[0][0] == 0, "an explanation is not served traffic: monitoring never sees it"

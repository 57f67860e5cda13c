"""``POST /v1/explain`` on real servers: the served model explains itself, behind the predict
role, with the limits of predict, and is no prediction (nothing logged)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from serving_helpers import TrainedRegistry, query, wait_for

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


HAMMER = "hammer-key-0123456789abcdef"


def _long_text(texts: list[str]) -> str:
    """250 tokens, about 5,000 characters (the explain limits' worst case)."""
    words = [w for t in texts for w in t.split() if w.isalpha() and len(w) > 3]
    tokens = ["-".join(words[(3 * i + j) % len(words)] for j in range(3)) for i in range(250)]
    return " ".join(tokens)[:5000].rsplit(" ", 1)[0]


def test_one_key_looping_long_explains_starves_no_other_key(
    trained: TrainedRegistry, make_server: Any
) -> None:
    """Issue 19 row 4: one key looping 256-token explains of 5,000-character texts on two
    connections; another key's explains got 429 (18 of 20). Now turns go round the keys: the
    other key's explains and predictions are all answered."""
    import threading

    server = make_server(api_keys=f"{HAMMER},{KEY}")
    heavy = _long_text(trained.texts)
    assert 200 <= len(heavy.split()) <= 256 and len(heavy) > 4000
    stop = threading.Event()
    hammered: dict[int, int] = {}

    def hammer() -> None:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": HAMMER}, timeout=120) as h:
            while not stop.is_set():
                status = h.post("/v1/explain", json={"text": heavy}).status_code
                hammered[status] = hammered.get(status, 0) + 1

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=120) as other:
            # the hammer is at work before the other key comes
            wait_for(lambda: hammered.get(200, 0) >= 2, 120, "the hammer's first explains")
            for text in trained.texts[:10]:
                resp = other.post("/v1/explain", json={"text": text})
                assert resp.status_code == 200, resp.text
                predicted = other.post("/v1/predict", json={"texts": [text] * 8})
                assert predicted.status_code == 200, predicted.text
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    assert hammered.get(200, 0) >= 2, hammered  # the hammer is served too, in its turns
    assert set(hammered) <= {200, 429}, hammered

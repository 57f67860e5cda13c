"""Every endpoint of a real server on loopback, and every client error it must answer in 4xx."""

from __future__ import annotations

import httpx
import pytest
from serving_helpers import ADMIN_TOKEN, Server, wait_for

CLASSES = ["negative", "neutral", "positive"]


def predict(client: httpx.Client, *texts: str) -> dict:
    resp = client.post("/v1/predict", json={"texts": list(texts)})
    assert resp.status_code == 200, resp.text
    return resp.json()


def assert_error(resp: httpx.Response, status: int, *words: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    for word in words:
        assert word in body["error"], body


# -- health, status, docs, metrics ----------------------------------------------------------------


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_status_reports_model_and_predlog(client: httpx.Client) -> None:
    status = client.get("/v1/status").json()
    assert status["ready"] is True
    assert status["models"]["champion"]["version"] == "1"
    assert status["models"]["champion"]["classes"] == CLASSES
    assert {"served", "written", "backlog", "spooled", "dropped"} <= set(status["predlog"])
    assert status["limits"]["max_batch_size"] == 64


def test_docs_and_openapi(client: httpx.Client) -> None:
    assert "swagger" in client.get("/docs").text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/predict",
        "/v1/feedback",
        "/v2/models/{name}/infer",
        "/v1/admin/reload",
        "/healthz",
        "/readyz",
        "/v1/status",
        "/metrics",
    ):
        assert path in paths


def test_metrics_exposes_the_contract_names(client: httpx.Client) -> None:
    predict(client, "metrics please")
    text = client.get("/metrics").text
    for name in (
        "loopml_http_requests_total",
        "loopml_http_request_duration_seconds_bucket",
        "loopml_predictions_total",
        "loopml_batch_size_bucket",
        "loopml_model_call_duration_seconds_bucket",
        "loopml_queue_depth",
        "loopml_predlog_served_total",
        "loopml_predlog_written_total",
        "loopml_predlog_backlog",
        "loopml_predlog_spooled_total",
        "loopml_predlog_dropped_total",
        "loopml_model_info",
        "loopml_model_loaded_timestamp_seconds",
        "loopml_model_reloads_total",
        "loopml_feedback_total",
    ):
        assert name in text, name
    assert 'route="/v1/predict"' in text and 'variant="champion"' in text
    assert "_created" not in text


# -- /v1/predict -------------------------------------------------------------------------------


def test_predict_one_text(client: httpx.Client) -> None:
    resp = client.post("/v1/predict", json={"text": "I love this airline, great crew"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["model_version"] == "1" and body["variant"] == "champion"
    [pred] = body["predictions"]
    assert pred["label"] in CLASSES and len(pred["request_id"]) == 32
    assert list(pred["probabilities"]) == CLASSES
    assert abs(sum(pred["probabilities"].values()) - 1) < 1e-6
    assert pred["label"] == max(pred["probabilities"], key=pred["probabilities"].get)


def test_predict_many_texts_keeps_order(client: httpx.Client) -> None:
    texts = [f"text number {i} about a delayed flight" for i in range(150)]  # > max batch size
    preds = predict(client, *texts)["predictions"]
    assert len(preds) == 150
    assert len({p["request_id"] for p in preds}) == 150
    single = predict(client, texts[77])["predictions"][0]
    assert single["probabilities"] == preds[77]["probabilities"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 400, ["empty"]),
        (b"{not json", 400, ["not valid JSON"]),
        (b'{"text": "caf\xe9 \xff"}', 400, ["UTF-8"]),
        (b'{"text": "\\ud800"}', 400, []),
        (b"[1, 2]", 422, ["body", "object"]),
        (b'{"text": 3}', 422, ["text", "string"]),
        (b'{"text": ""}', 422, ["text", "empty"]),
        (b'{"text": "   "}', 422, ["text", "blank"]),
        (b'{"texts": []}', 422, ["texts", "at least one"]),
        (b'{"texts": ["ok", 5]}', 422, ["texts[1]", "string"]),
        (b'{"texts": ["ok", ""]}', 422, ["texts[1]"]),
        (b'{"texts": "not a list"}', 422, ["texts", "list"]),
        (b'{"text": "a", "texts": ["b"]}', 422, ["exactly one"]),
        (b"{}", 422, ["exactly one"]),
        (b'{"text": "a", "extra": 1}', 422, ["unknown field", "extra"]),
    ],
)
def test_predict_rejects_bad_input(
    client: httpx.Client, body: bytes, status: int, words: list[str]
) -> None:
    resp = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert_error(resp, status, *words)


def test_predict_limits(client: httpx.Client) -> None:
    assert_error(
        client.post("/v1/predict", json={"text": "x" * 5001}), 422, "5000", "LOOPML_MAX_TEXT_CHARS"
    )
    assert_error(client.post("/v1/predict", json={"texts": ["x"] * 257}), 422, "256")
    big = b'{"text": "' + b"a" * (1_048_576 + 10) + b'"}'
    assert_error(client.post("/v1/predict", content=big), 413, "LOOPML_MAX_BODY_BYTES")


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks():  # no content-length: the limit is enforced while reading
        yield b'{"text": "'
        for _ in range(20):
            yield b"a" * 65536
        yield b'"}'

    assert_error(client.post("/v1/predict", content=chunks()), 413)


def test_unknown_route_and_method_are_json(client: httpx.Client) -> None:
    assert_error(client.get("/nope"), 404)
    assert_error(client.get("/v1/predict"), 405)


# -- Open Inference Protocol V2 ------------------------------------------------------------------


def test_v2_metadata_and_ready(client: httpx.Client, main_server: Server) -> None:
    name = main_server.env["LOOPML_MODEL_NAME"]
    meta = client.get(f"/v2/models/{name}").json()
    assert meta["name"] == name and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities", "request_id"]
    assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    assert client.get(f"/v2/models/{name}/versions/1/ready").json()["ready"] is True
    assert_error(client.get(f"/v2/models/{name}/versions/9"), 404, "not served")
    assert_error(client.get("/v2/models/other"), 404, "unknown model")


def test_v2_infer_matches_the_protocol(client: httpx.Client, main_server: Server) -> None:
    name = main_server.env["LOOPML_MODEL_NAME"]
    req = {
        "id": "42",
        "inputs": [
            {
                "name": "text",
                "shape": [2],
                "datatype": "BYTES",
                "data": ["great movie", "awful plot"],
            }
        ],
    }
    body = client.post(f"/v2/models/{name}/infer", json=req).json()
    assert body["id"] == "42" and body["model_name"] == name and body["model_version"] == "1"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["label"]["shape"] == [2] and out["label"]["datatype"] == "BYTES"
    assert out["probabilities"]["shape"] == [2, 3] and out["probabilities"]["datatype"] == "FP32"
    assert len(out["probabilities"]["data"]) == 6
    v1 = client.post("/v1/predict", json={"texts": ["great movie", "awful plot"]}).json()
    assert [p["label"] for p in v1["predictions"]] == out["label"]["data"]
    versioned = client.post(f"/v2/models/{name}/versions/1/infer", json=req)
    assert versioned.status_code == 200


def test_v2_infer_options_and_errors(client: httpx.Client, main_server: Server) -> None:
    url = f"/v2/models/{main_server.env['LOOPML_MODEL_NAME']}/infer"
    tensor = {"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [["fine"]]}
    body = client.post(url, json={"inputs": [tensor], "outputs": [{"name": "label"}]}).json()
    assert [o["name"] for o in body["outputs"]] == ["label"] and "id" not in body
    bad = [
        ({"inputs": []}, "inputs"),
        ({"inputs": [{**tensor, "datatype": "FP32"}]}, "BYTES"),
        ({"inputs": [{**tensor, "shape": [3]}]}, "does not match"),
        ({"inputs": [{**tensor, "data": [""], "shape": [1]}]}, "empty"),
        ({"inputs": [tensor], "outputs": [{"name": "logits"}]}, "logits"),
        ({"id": 5, "inputs": [tensor]}, "id"),
        ({"inputs": [{**tensor, "name": "a"}, {**tensor, "name": "b"}]}, "named 'text'"),
    ]
    for req, word in bad:
        assert_error(client.post(url, json=req), 422, word)
    assert_error(client.post("/v2/models/other/infer", json={"inputs": [tensor]}), 404)
    assert_error(
        client.post(url.replace("/infer", "/versions/7/infer"), json={"inputs": [tensor]}), 404
    )


# -- /v1/feedback --------------------------------------------------------------------------------


def test_feedback_for_a_fresh_prediction_and_a_list(client: httpx.Client) -> None:
    preds = predict(client, "thank you for the upgrade", "lost my bag again")["predictions"]
    # Immediately: the prediction may still be in the writer's backlog; it counts as known.
    first = client.post(
        "/v1/feedback", json={"request_id": preds[0]["request_id"], "label": "positive"}
    )
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 1
    # A label is given once: a list repeating the first id is refused whole (409)...
    items = [{"request_id": p["request_id"], "label": "negative"} for p in preds]
    assert_error(client.post("/v1/feedback", json=items), 409, "already labelled")
    # ...and nothing of it was stored: the second id still takes its label.
    resp = client.post("/v1/feedback", json=items[1:])
    assert resp.status_code == 200 and resp.json()["accepted"] == 1
    assert [i["label"] for i in resp.json()["items"]] == ["negative"]


def test_feedback_errors(client: httpx.Client) -> None:
    rid = predict(client, "meh")["predictions"][0]["request_id"]
    assert_error(
        client.post("/v1/feedback", json={"request_id": "f" * 32, "label": "neutral"}),
        404,
        "unknown request_id",
    )
    assert_error(
        client.post("/v1/feedback", json={"request_id": rid, "label": "angry"}),
        409,  # the body is well formed: the model that answered it has no such class
        "angry",
        "negative",
    )
    assert_error(
        client.post(
            "/v1/feedback",
            json=[
                {"request_id": rid, "label": "neutral"},
                {"request_id": "nope", "label": "neutral"},
            ],
        ),
        404,
        "nope",
    )
    assert_error(
        client.post("/v1/feedback", json=[{"request_id": rid, "label": "neutral"}] * 2),
        409,
        "given twice",
    )
    assert_error(client.post("/v1/feedback", json={"request_id": rid}), 422, "label")
    assert_error(
        client.post("/v1/feedback", json={"request_id": rid, "label": "neutral", "x": 1}),
        422,
        "unknown field",
    )
    assert_error(client.post("/v1/feedback", json=[]), 422)
    assert_error(client.post("/v1/feedback", content=b"\xff\xfe"), 400)


# -- admin ---------------------------------------------------------------------------------------


def test_admin_reload_needs_the_token(client: httpx.Client) -> None:
    assert_error(client.post("/v1/admin/reload"), 401, "Bearer")
    assert_error(client.post("/v1/admin/reload", headers={"Authorization": "Bearer wrong"}), 403)
    resp = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status_code == 200
    assert resp.json()["result"] == "unchanged" and resp.json()["version"] == "1"


def test_predictions_reach_the_database(client: httpx.Client, main_server: Server) -> None:
    import sqlalchemy as sa

    preds = predict(client, "check the database", "and this one")["predictions"]
    engine = sa.create_engine(f"sqlite:///{main_server.home / 'loopml.db'}")
    ids = [p["request_id"] for p in preds]

    def stored() -> list[tuple]:
        with engine.connect() as conn:
            q = sa.text(
                "select request_id, text, label, model_version, variant, text_hash"
                " from predictions where request_id in (:a, :b)"
            )
            return list(conn.execute(q, {"a": ids[0], "b": ids[1]}))

    rows = wait_for(lambda: len(stored()) == 2 and stored(), 10, "records in the database")
    engine.dispose()
    by_id = {r[0]: r for r in rows}
    assert by_id[ids[0]][1] == "check the database"
    assert by_id[ids[0]][2] == preds[0]["label"]
    assert by_id[ids[0]][3:5] == ("1", "champion")
    assert len(by_id[ids[0]][5]) == 64

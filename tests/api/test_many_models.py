"""One server serving many models (LOOPML_MODELS): each answers by name in its own label set,
keeps its own routing (a canary or a rollback of one leaves the other untouched), is told apart
in the metrics and the prediction log, is guarded by keys scoped to models on every protocol, and
is unloaded and loaded again under LOOPML_MAX_LOADED_MODEL_BYTES."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from serving_helpers import (
    ADMIN_TOKEN,
    Server,
    TrainedRegistry,
    abort_rollout,
    free_port,
    query,
    server_env,
    start_rollout,
    wait_for,
)
from test_variants import metric_value
from tritonclient.utils import InferenceServerException

SENTIMENT = {"negative", "neutral", "positive"}
TOPICS = {"airline", "apple", "cars", "other"}
SCOPED = "scoped-key-0123456789abcdef"  # predict + feedback on the default model only
FULL = "full-key-0123456789abcdef01"  # predict + feedback on every model
TOPIC_ONLY = "topic-key-0123456789abcdef"  # predict + feedback on the topic model only
TEXTS = ["@united lost my bag again, worst flight", "the new iphone camera is great"]
TIMEOUT = 60


def _topic_model(trained: TrainedRegistry) -> tuple[str, str]:
    """A second registered model: tweets labelled by their domain (a user's own 4-class topic
    set), trained for real and made champion; (name, version)."""
    from loopml.control.promotion import promote
    from loopml.data import Dataset, content_version, load_dataset
    from loopml.pipeline.train import train
    from loopml.registry import Registry
    from loopml.store import open_store

    tweets = load_dataset("builtin:tweets").frame
    frame = tweets.groupby("domain").sample(500, random_state=0).reset_index(drop=True)
    frame = frame.assign(label=frame["domain"])
    data = Dataset(source="topics.csv", frame=frame, version=content_version(frame))
    name = f"topic-{uuid.uuid4().hex[:6]}"
    settings = trained.settings.model_copy(update={"model_name": name})
    version = train(settings, dataset=data).version
    store = open_store(settings.db_url)
    promote(store, Registry(settings), version, force=True, reason="many-models tests")
    store.dispose()
    return name, str(version)


@pytest.fixture(scope="module")
def topic(trained: TrainedRegistry) -> tuple[str, str]:
    return _topic_model(trained)


@pytest.fixture(scope="module")
def two(
    trained: TrainedRegistry, topic: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server serving a sentiment model (the default) and the topic model, gRPC on."""
    home = tmp_path_factory.mktemp("many-models")
    name, _ = trained.clone()
    keys = (
        f"{SCOPED}:predict+feedback@{name},{FULL}:predict+feedback,"
        f"{TOPIC_ONLY}:predict+feedback@{topic[0]}"
    )
    env = server_env(
        trained,
        home,
        name,
        models=f"{name},{topic[0]}",
        admin_token=ADMIN_TOKEN,
        api_keys=keys,
        predlog_flush_interval_s=0.05,
        routing_poll_s=0.2,
        grpc_port=free_port(),
    )
    server = Server(home, env).start()
    wait_for(lambda: _status(server, topic[0])["ready"], TIMEOUT, "the topic model to load")
    yield server
    server.stop()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _status(server: Server, name: str) -> dict[str, Any]:
    resp = httpx.get(f"{server.url}/v1/models/{name}/status", headers=_auth(ADMIN_TOKEN))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _wait_mode(server: Server, mode: str, challenger: str | None) -> None:
    """Wait until the default model obeys ``mode`` with ``challenger`` loaded."""
    name = server.env["LOOPML_MODEL_NAME"]

    def obeying() -> bool:
        routing = _status(server, name)["routing"]
        return bool(
            routing["effective_mode"] == mode and routing["serving"]["challenger"] == challenger
        )

    wait_for(obeying, TIMEOUT, f"mode {mode}")


def _predict(server: Server, name: str | None, key: str = FULL, **headers: str) -> httpx.Response:
    path = "/v1/predict" if name is None else f"/v1/models/{name}/predict"
    return httpx.post(
        server.url + path,
        json={"texts": TEXTS},
        headers={**_auth(key), **headers},
        timeout=TIMEOUT,
    )


def _infer(server: Server, name: str, key: str = FULL) -> httpx.Response:
    tensor = {"name": "text", "shape": [len(TEXTS)], "datatype": "BYTES", "data": TEXTS}
    return httpx.post(
        f"{server.url}/v2/models/{name}/infer",
        json={"inputs": [tensor]},
        headers=_auth(key),
        timeout=TIMEOUT,
    )


def test_each_model_answers_by_name_in_its_own_labels(two: Server, topic: tuple[str, str]) -> None:
    default = two.env["LOOPML_MODEL_NAME"]
    by_default = _predict(two, None)
    by_name = _predict(two, default)
    by_topic = _predict(two, topic[0])
    for resp in (by_default, by_name, by_topic):
        assert resp.status_code == 200, resp.text
    assert by_default.json()["model_name"] == by_name.json()["model_name"] == default
    assert by_topic.json()["model_name"] == topic[0]
    assert by_topic.json()["model_version"] == topic[1]
    for pred in by_default.json()["predictions"]:
        assert pred["label"] in SENTIMENT and set(pred["probabilities"]) == SENTIMENT
    for pred in by_topic.json()["predictions"]:
        assert pred["label"] in TOPICS and set(pred["probabilities"]) == TOPICS
    # OIP: the same answers by name, metadata in each model's classes, the repository index
    infer = _infer(two, topic[0])
    assert infer.status_code == 200, infer.text
    labels = {o["name"]: o for o in infer.json()["outputs"]}["label"]["data"]
    assert labels == [p["label"] for p in by_topic.json()["predictions"]]
    meta = httpx.get(f"{two.url}/v2/models/{topic[0]}", headers=_auth(FULL)).json()
    assert set(meta["parameters"]["classes"].split(",")) == TOPICS
    index = httpx.post(f"{two.url}/v2/repository/index", headers=_auth(FULL))
    assert index.status_code == 200, index.text
    assert {(m["name"], m["state"]) for m in index.json()} == {
        (default, "READY"),
        (topic[0], "READY"),
    }
    # a name not served: 404 naming the served models, on every route
    for resp in (
        _predict(two, "toxicity"),
        _infer(two, "toxicity"),
        httpx.post(f"{two.url}/v1/models/toxicity/feedback", json=[], headers=_auth(FULL)),
    ):
        assert resp.status_code == 404, resp.text
        error = resp.json()["error"]
        assert "unknown model 'toxicity'" in error
        assert repr(default) in error and repr(topic[0]) in error


def test_canary_and_rollback_of_one_leave_the_other_untouched(
    two: Server, topic: tuple[str, str]
) -> None:
    before = _predict(two, topic[0]).json()["predictions"]
    champion = _predict(two, None).json()["model_version"]
    challenger = str(int(champion) + 1)
    start_rollout(two.url, challenger, "canary", weight=0.99)
    _wait_mode(two, "canary", challenger)
    # the default model's canary answers with its challenger; the topic model is as it was
    keys = [f"client-{k}" for k in range(20)]
    canary = [_predict(two, None, **{"X-Request-Key": k}).json() for k in keys]
    on_challenger = [k for k, c in zip(keys, canary, strict=True) if c["variant"] == "challenger"]
    assert len(on_challenger) >= 15
    assert {c["model_version"] for c in canary if c["variant"] == "challenger"} == {challenger}
    during = _predict(two, topic[0], **{"X-Request-Key": on_challenger[0]}).json()
    assert (during["model_version"], during["variant"]) == (topic[1], "champion")
    assert [p["probabilities"] for p in during["predictions"]] == [
        p["probabilities"] for p in before
    ]
    routing = _status(two, topic[0])["routing"]
    assert (routing["effective_mode"], routing["serving"]["challenger"]) == ("none", None)
    # a rollback of the default model leaves the topic model as it was too
    abort_rollout(two.url)
    _wait_mode(two, "none", None)
    after = _predict(two, topic[0]).json()
    assert (after["model_version"], after["variant"]) == (topic[1], "champion")
    assert _status(two, topic[0])["routing"]["serving"]["champion"] == topic[1]
    assert _predict(two, None).json()["model_version"] == champion


def test_metrics_and_prediction_log_tell_the_models_apart(
    two: Server, topic: tuple[str, str]
) -> None:
    default = two.env["LOOPML_MODEL_NAME"]
    route = "/v1/models/{name}/predict"
    counted = {
        name: metric_value(two.url, "loopml_http_requests_total", route=route, model=name)
        for name in (default, topic[0])
    }
    ids = {
        name: [p["request_id"] for p in _predict(two, name).json()["predictions"]]
        for name in (default, topic[0], topic[0])
    }
    after = {
        name: metric_value(two.url, "loopml_http_requests_total", route=route, model=name)
        for name in (default, topic[0])
    }
    assert after[default] - counted[default] == 1
    assert after[topic[0]] - counted[topic[0]] == 2
    topic_labels = metric_value(two.url, "loopml_predictions_total", model=topic[0])
    assert topic_labels >= 4
    assert metric_value(two.url, "loopml_models_loaded") == 2
    db = f"sqlite:///{two.home / 'loopml.db'}"
    wanted = [rid for rids in ids.values() for rid in rids]

    def logged() -> dict[str, str] | None:
        rows = query(db, "select request_id, model_name from predictions")
        found = {rid: name for rid, name in rows if rid in wanted}
        return found if len(found) == len(wanted) else None

    found = wait_for(logged, TIMEOUT, "the predictions to be logged")
    for name, rids in ids.items():
        assert {found[rid] for rid in rids} == {name}


def test_a_key_scoped_to_one_model_is_refused_on_the_other(
    two: Server, topic: tuple[str, str]
) -> None:
    default = two.env["LOOPML_MODEL_NAME"]
    assert _predict(two, default, SCOPED).status_code == 200
    assert _predict(two, None, SCOPED).status_code == 200
    for resp in (_predict(two, topic[0], SCOPED), _infer(two, topic[0], SCOPED)):
        assert resp.status_code == 403, resp.text
        assert f"may not predict on model {topic[0]!r}" in resp.json()["error"]
        assert f"scoped to {default}" in resp.json()["error"]
    # gRPC: the same refusal from the same check
    client = triton_grpc.InferenceServerClient(url=f"127.0.0.1:{two.env['LOOPML_GRPC_PORT']}")
    try:
        tensor = triton_grpc.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array(TEXTS[:1], dtype=object))
        ok = client.infer(default, [tensor], headers={"authorization": f"Bearer {SCOPED}"})
        assert ok.as_numpy("label")[0].decode() in SENTIMENT
        with pytest.raises(InferenceServerException) as info:
            client.infer(topic[0], [tensor], headers={"x-api-key": SCOPED})
        assert info.value.status() == str(grpc.StatusCode.PERMISSION_DENIED)
        assert "may not predict on model" in info.value.message()
        full = client.infer(topic[0], [tensor], headers={"x-api-key": FULL})
        assert full.as_numpy("label")[0].decode() in TOPICS
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata(topic[0], headers={"x-api-key": SCOPED})
        assert info.value.status() == str(grpc.StatusCode.PERMISSION_DENIED)
        with pytest.raises(InferenceServerException) as info:  # not a 404 naming its version
            client.infer(topic[0], [tensor], model_version="99", headers={"x-api-key": SCOPED})
        assert info.value.status() == str(grpc.StatusCode.PERMISSION_DENIED)
    finally:
        client.close()
    # nor may it read the other model's metadata, versions or repository entry
    scoped = _auth(SCOPED)
    for path in (f"/v2/models/{topic[0]}", f"/v2/models/{topic[0]}/versions/{topic[1]}"):
        assert httpx.get(two.url + path, headers=scoped).status_code == 403, path
    tensor_body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    pinned = httpx.post(
        f"{two.url}/v2/models/{topic[0]}/versions/99/infer", json=tensor_body, headers=scoped
    )
    assert pinned.status_code == 403, pinned.text
    index = httpx.post(two.url + "/v2/repository/index", headers=scoped).json()
    assert [m["name"] for m in index] == [default]
    everything = httpx.post(two.url + "/v2/repository/index", headers=_auth(FULL)).json()
    assert {m["name"] for m in everything} == {default, topic[0]}
    # feedback: scoped per model; an id of another model's prediction is refused
    topic_id = _predict(two, topic[0]).json()["predictions"][0]["request_id"]
    sent_id = _predict(two, default).json()["predictions"][0]["request_id"]
    url = f"{two.url}/v1/models/{topic[0]}/feedback"
    refused = httpx.post(
        url, json={"request_id": topic_id, "label": "apple"}, headers=_auth(SCOPED)
    )
    assert refused.status_code == 403, refused.text
    assert "may not feedback on model" in refused.json()["error"]
    via_v1 = httpx.post(
        f"{two.url}/v1/feedback",
        json={"request_id": topic_id, "label": "apple"},
        headers=_auth(SCOPED),
    )
    assert via_v1.status_code == 403, via_v1.text
    wrong = httpx.post(url, json={"request_id": sent_id, "label": "apple"}, headers=_auth(FULL))
    assert wrong.status_code == 409, wrong.text
    assert f"prediction of model {default!r}" in wrong.json()["error"]
    stored = httpx.post(url, json={"request_id": topic_id, "label": "apple"}, headers=_auth(FULL))
    assert stored.status_code == 200, stored.text
    assert stored.json()["items"][0]["label"] == "apple"
    # the label queue hands out a model's logged texts: only to keys scoped to it
    queue = f"{two.url}/v1/label-queue?limit=1&model="
    assert httpx.get(queue + topic[0], headers=_auth(SCOPED)).status_code == 403
    assert httpx.get(queue + default, headers=_auth(SCOPED)).status_code == 200
    assert httpx.get(queue + topic[0], headers=_auth(TOPIC_ONLY)).status_code == 200
    # /v1/explain explains the default model: not for a key scoped to the topic model, which
    # explains its own model on /v1/models/{name}/explain
    body = {"text": TEXTS[0]}
    explain = httpx.post(f"{two.url}/v1/explain", json=body, headers=_auth(TOPIC_ONLY))
    assert explain.status_code == 403, explain.text
    named = f"{two.url}/v1/models/{{}}/explain"
    refused = httpx.post(named.format(default), json=body, headers=_auth(TOPIC_ONLY))
    assert refused.status_code == 403, refused.text
    own = httpx.post(named.format(topic[0]), json=body, headers=_auth(TOPIC_ONLY), timeout=TIMEOUT)
    assert own.status_code == 200, own.text
    assert (own.json()["model_name"], own.json()["model_version"]) == topic
    assert set(own.json()["probabilities"]) == TOPICS
    unserved = httpx.post(named.format("toxicity"), json=body, headers=_auth(FULL))
    assert unserved.status_code == 404, unserved.text


def test_status_lists_every_served_model(two: Server, topic: tuple[str, str]) -> None:
    default = two.env["LOOPML_MODEL_NAME"]
    status = httpx.get(two.url + "/v1/status", headers=_auth(ADMIN_TOKEN)).json()
    served = status["served_models"]
    assert list(served) == [default, topic[0]]
    assert served[default]["default"] and not served[topic[0]]["default"]
    assert set(served[topic[0]]["classes"]) == TOPICS
    assert served[topic[0]]["routing"]["serving"]["champion"] == topic[1]
    assert served[topic[0]]["bytes"] > 0
    assert status["loaded_model_bytes"] == sum(m["bytes"] for m in served.values())
    page = httpx.get(two.url + "/", headers=_auth(ADMIN_TOKEN))
    assert page.status_code == 200
    assert topic[0] in page.text and "airline" in page.text
    missing = httpx.get(two.url + "/v1/models/toxicity/status", headers=_auth(ADMIN_TOKEN))
    assert missing.status_code == 404
    assert httpx.get(f"{two.url}/v1/models/{topic[0]}/status").status_code == 401


def test_star_serves_every_model_with_a_champion(
    trained: TrainedRegistry, two: Server, topic: tuple[str, str]
) -> None:
    """``LOOPML_MODELS=*``: what the server resolves at start (a registered model without a
    champion is left out)."""
    from loopml.serving.models import resolve_all
    from loopml.tracking import configure_mlflow

    bare = f"bare-{uuid.uuid4().hex[:6]}"
    configure_mlflow(trained.settings).create_registered_model(bare)
    names = resolve_all(trained.settings)
    assert {two.env["LOOPML_MODEL_NAME"], topic[0]} <= set(names)
    assert bare not in names and names == sorted(names)


def test_metrics_carry_each_models_monitoring_result(two: Server, topic: tuple[str, str]) -> None:
    from datetime import UTC, datetime

    from loopml.store import MonitorResult, open_store

    with open_store(f"sqlite:///{two.home / 'loopml.db'}") as store, store.session() as session:
        session.add(
            MonitorResult(
                ts=datetime.now(UTC),
                model_name=topic[0],
                model_version=topic[1],
                window_size=500,
                verdict="drift",
                summary={"verdict": "drift", "drift_detected": True, "window": {"rows": 500}},
                report_path=None,
            )
        )

    def drift_of_topic() -> float:
        return metric_value(two.url, "loopml_drift_detected", model=topic[0])

    # the gauges are read at most every 15 s: the first scrape after that shows the topic's
    assert wait_for(drift_of_topic, TIMEOUT, "the topic model's drift gauge") == 1.0


def test_admin_actions_act_on_the_model_named(two: Server, topic: tuple[str, str]) -> None:
    default = two.env["LOOPML_MODEL_NAME"]
    admin = _auth(ADMIN_TOKEN)
    status = httpx.get(f"{two.url}/v1/admin/rollout?model={topic[0]}", headers=admin)
    assert status.status_code == 200, status.text
    assert status.json()["routing"]["model_name"] == topic[0]
    # version 2 is the default model's, not the topic model's (it has only version 1)
    start = {"version": "2", "mode": "shadow", "force": True, "reason": "test"}
    unknown = httpx.post(
        f"{two.url}/v1/admin/rollout/start?model={topic[0]}", json=start, headers=admin
    )
    assert unknown.status_code == 404, unknown.text
    reload = httpx.post(f"{two.url}/v1/admin/reload?model={topic[0]}", headers=admin)
    assert reload.status_code == 200 and reload.json()["version"] == topic[1], reload.text
    missing = httpx.get(f"{two.url}/v1/admin/rollout?model=toxicity", headers=admin)
    assert missing.status_code == 404 and repr(topic[0]) in missing.json()["error"]

    # a topic prediction's label is corrected as the topic model's, in its own labels
    rid = _predict(two, topic[0]).json()["predictions"][0]["request_id"]
    feedback = f"{two.url}/v1/models/{topic[0]}/feedback"
    wait_for(
        lambda: (
            httpx.post(
                feedback, json={"request_id": rid, "label": "apple"}, headers=_auth(FULL)
            ).status_code
            == 200
        ),
        TIMEOUT,
        "the topic prediction to be logged",
    )
    fix = {"request_id": rid, "label": "cars", "reason": "a car ad"}
    wrong = httpx.post(f"{two.url}/v1/admin/feedback/relabel", json=fix, headers=admin)
    assert wrong.status_code == 409, wrong.text
    assert f"prediction of model {topic[0]!r}, not {default!r}" in wrong.json()["error"]
    fixed = httpx.post(
        f"{two.url}/v1/admin/feedback/relabel?model={topic[0]}", json=fix, headers=admin
    )
    assert fixed.status_code == 200, fixed.text
    assert (fixed.json()["label"], fixed.json()["previous"]["label"]) == ("cars", "apple")
    audited = query(
        f"sqlite:///{two.home / 'loopml.db'}",
        "SELECT model_name FROM audit_log WHERE action = 'feedback_relabel' AND details LIKE :rid",
        rid=f"%{rid}%",
    )
    assert [row[0] for row in audited] == [topic[0]]


@pytest.mark.slow
def test_least_recently_used_model_is_unloaded_and_loaded_again(
    trained: TrainedRegistry,
    topic: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("many-models-lru")
    name, _ = trained.clone()
    other, _ = trained.clone()
    # 1 byte: every model but the default is unloaded once idle and another one loads
    env = server_env(
        trained,
        home,
        name,
        models=f"{name},{topic[0]},{other}",
        max_loaded_model_bytes=1,
        predlog_flush_interval_s=0.05,
    )
    server = Server(home, env).start()
    try:

        def unloaded(*names: str) -> bool:
            return all(_status_open(server, n)["unloaded"] for n in names)

        wait_for(lambda: unloaded(topic[0], other), TIMEOUT, "both extra models unloaded")
        assert _status_open(server, name)["loaded"]  # the default model is never unloaded
        assert metric_value(server.url, "loopml_models_loaded") == 1
        index = httpx.post(server.url + "/v2/repository/index").json()
        assert {m["name"]: m["state"] for m in index}[topic[0]] == "UNAVAILABLE"
        # metadata keeps the label set of an unloaded model
        meta = httpx.get(f"{server.url}/v2/models/{topic[0]}").json()
        assert set(meta["parameters"]["classes"].split(",")) == TOPICS
        loads = metric_value(server.url, "loopml_model_cold_load_seconds_count")
        # concurrent first requests to an unloaded model: all answered, one load
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _predict_open(server, topic[0]), range(8)))
        assert [a.status_code for a in answers] == [200] * 8, answers[0].text
        assert {a.json()["predictions"][0]["label"] in TOPICS for a in answers} == {True}
        assert metric_value(server.url, "loopml_model_cold_load_seconds_count") == loads + 1
        assert _status_open(server, topic[0])["loaded"]
        # loading the other one unloads the least recently used idle one (the topic model)
        unloads = metric_value(server.url, "loopml_model_unloads_total", model=topic[0])
        assert _predict_open(server, other).status_code == 200
        wait_for(lambda: unloaded(topic[0]), TIMEOUT, "the topic model unloaded again")
        after = metric_value(server.url, "loopml_model_unloads_total", model=topic[0])
        assert after == unloads + 1
        # and the request after an unload is answered (loaded again)
        again = _predict_open(server, topic[0])
        assert again.status_code == 200, again.text
        assert again.json()["model_name"] == topic[0]
        assert _predict_open(server, None).json()["model_name"] == name
    finally:
        server.stop()


def _status_open(server: Server, name: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.url}/v1/models/{name}/status").json()
    return body


def _predict_open(server: Server, name: str | None) -> httpx.Response:
    path = "/v1/predict" if name is None else f"/v1/models/{name}/predict"
    return httpx.post(server.url + path, json={"texts": TEXTS}, timeout=TIMEOUT)

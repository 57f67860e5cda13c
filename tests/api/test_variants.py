"""Serving obeys the routing state: canary split and stickiness, shadow scoring, a failing or
unloadable challenger, the dead-man switch, and the admin rollout API (real servers, real DBs)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_helpers import (
    AUTH,
    LoadResult,
    TrainedRegistry,
    abort_rollout,
    add_monitor_result,
    broken_version,
    db_settings,
    db_url,
    query,
    register_failing_version,
    routing_of,
    run_load,
    start_rollout,
    wait_for,
    wait_obeying,
)

from loopml.routing import SHADOW_SUFFIX, Routing, routing_in, save_routing
from loopml.serving.router import choose_variant
from loopml.store import open_store

SECRET = "variants-test-routing-secret"
FAST = {"routing_poll_s": 0.2, "predlog_flush_interval_s": 0.05, "routing_secret": SECRET}


def fast_server(make_server: Any, name: str | None = None, **settings: Any) -> Any:
    from serving_helpers import ADMIN_TOKEN

    return make_server(name, admin_token=ADMIN_TOKEN, **FAST, **settings)


def post(http: httpx.Client, texts: list[str], key: str | None = None) -> dict[str, Any]:
    headers = {"X-Request-Key": key} if key else {}
    resp = http.post("/v1/predict", json={"texts": texts}, headers=headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def metric_value(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def variant_counts(url: str) -> dict[tuple[str, str], int]:
    rows = query(url, "select variant, model_version, count(*) from predictions group by 1, 2")
    return {(v, m): int(n) for v, m, n in rows}


def error_rows(url: str) -> list[Any]:
    return query(url, "select model_version, variant, errors, error from serving_errors")


# -- canary ---------------------------------------------------------------------------------------


def test_canary_splits_by_key_sticks_and_logs_the_challenger(
    trained: TrainedRegistry, database: dict[str, Any], make_server: Any
) -> None:
    # ``database`` before ``make_server``: the server stops before its database is dropped.
    server = fast_server(make_server, **db_settings(database))
    name = server.env["LOOPML_MODEL_NAME"]
    routing = start_rollout(server.url, "2", "canary", 0.5)
    assert (routing["champion"], routing["challenger"], routing["mode"]) == ("1", "2", "canary")
    assert routing["weight"] == 0.5 and routing["rollout"]["step"] == 0
    status = wait_obeying(server.url, "canary", "2")
    assert status["effective_weight"] == 0.5 and status["rollout"]["steps"][0] == 0.5

    expected = Routing(name, "1", "2", "canary", 0.5)
    keys = [f"user-{i}" for i in range(300)]
    seen: dict[str, set[tuple[str, str]]] = {}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(2):  # every key twice: the same variant both times
            for i, key in enumerate(keys):
                body = post(http, [trained.texts[i]], key)
                seen.setdefault(key, set()).add((body["variant"], body["model_version"]))
        unkeyed = [post(http, [trained.texts[i]])["variant"] for i in range(200)]
    for key in keys:
        want = choose_variant(expected, key, secret=SECRET.encode())
        assert seen[key] == {(want, "2" if want == "challenger" else "1")}, key
    keyed = sum(choose_variant(expected, k, secret=SECRET.encode()) == "challenger" for k in keys)
    keyed_share = keyed / len(keys)
    unkeyed_share = unkeyed.count("challenger") / len(unkeyed)
    print(f"canary 0.5: keyed share {keyed_share:.3f}, unkeyed share {unkeyed_share:.3f}")
    assert 0.4 < keyed_share < 0.6
    assert 0.35 < unkeyed_share < 0.65

    to_challenger = 2 * keyed + unkeyed.count("challenger")
    total = 2 * len(keys) + len(unkeyed)
    url = db_url(database, server)
    counts = wait_for(
        lambda: (c := variant_counts(url)) and sum(c.values()) == total and c,
        30,
        "the prediction log",
    )
    assert counts == {("challenger", "2"): to_challenger, ("champion", "1"): total - to_challenger}
    assert metric_value(
        server.url, "loopml_predictions_total", model_version="2", variant="challenger"
    ) == float(to_challenger)
    assert metric_value(
        server.url, "loopml_http_requests_total", model_version="2", variant="challenger"
    ) == float(to_challenger)
    info = metric_value(
        server.url, "loopml_model_info", model_name=name, model_version="2", variant="challenger"
    )
    assert info == 1.0

    abort_rollout(server.url, "enough")
    wait_obeying(server.url, "none")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        back = {post(http, ["after the abort"], key)["variant"] for key in keys[:50]}
    assert back == {"champion"}
    actors = query(url, "select actor, action from audit_log where action like 'rollout%'")
    assert {a for _, a in actors} == {"rollout_start_canary", "rollout_abort"}
    assert all(actor == "http:admin@127.0.0.1" for actor, _ in actors)


# -- shadow ---------------------------------------------------------------------------------------


def test_shadow_scores_every_answer_and_never_changes_it(
    trained: TrainedRegistry, make_server: Any
) -> None:
    server = fast_server(make_server)
    chunks = [trained.texts[i : i + k] for i, k in ((0, 1), (1, 4), (5, 1), (6, 8), (14, 2))] * 6
    with httpx.Client(base_url=server.url, timeout=30) as http:
        baseline = [post(http, chunk) for chunk in chunks[:5]]
        start_rollout(server.url, "2", "shadow")
        wait_obeying(server.url, "shadow", "2")
        answers = [post(http, chunk, key=f"k{i}") for i, chunk in enumerate(chunks)]
    for i, answer in enumerate(answers):
        assert (answer["variant"], answer["model_version"]) == ("champion", "1")
        before = baseline[i % 5]["predictions"]
        assert [(p["label"], p["probabilities"]) for p in answer["predictions"]] == [
            (p["label"], p["probabilities"]) for p in before
        ]
    ids = [p["request_id"] for a in answers for p in a["predictions"]]
    url = f"sqlite:///{server.home / 'loopml.db'}"

    def shadow_rows() -> list[Any] | None:
        rows = query(
            url,
            "select request_id, variant, model_version from predictions"
            " where request_id like :pattern",
            pattern=f"%{SHADOW_SUFFIX}",
        )
        return rows if len(rows) >= len(ids) else None

    rows = wait_for(shadow_rows, 30, "a shadow record for every answer")
    assert {r[0] for r in rows} == {rid + SHADOW_SUFFIX for rid in ids}
    assert {(r[1], r[2]) for r in rows} == {("shadow", "2")}
    assert metric_value(server.url, "loopml_shadow_skipped_total") == 0.0
    live = httpx.get(server.url + "/v1/status/live").json()
    assert live["routing"]["effective_mode"] == "shadow"
    wait_for(
        lambda: httpx.get(server.url + "/v1/status/live").json()["variants"].get("shadow"),
        5,
        "shadow numbers on /v1/status/live",
    )


# -- a challenger that fails ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_challenger_costs_no_request(trained: TrainedRegistry, make_server: Any) -> None:
    name, _ = trained.clone()
    failing = register_failing_version(trained, name, "2")
    server = fast_server(make_server, name)
    url = f"sqlite:///{server.home / 'loopml.db'}"
    start_rollout(server.url, failing, "canary", 0.5)
    wait_obeying(server.url, "canary", failing)  # it loads and warms up fine

    expected = Routing(name, "1", failing, "canary", 0.5)
    keys = [f"client-{i}" for i in range(200)]
    texts = trained.texts[:200]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answers = [post(http, [texts[i]], key) for i, key in enumerate(keys)]
    assert {(a["variant"], a["model_version"]) for a in answers} == {("champion", "1")}
    routed = sum(choose_variant(expected, k, secret=SECRET.encode()) == "challenger" for k in keys)
    assert routed > 50

    def challenger_errors() -> list[Any] | None:
        rows = [r for r in error_rows(url) if r[1] == "challenger"]
        return rows if sum(r[2] for r in rows) >= routed else None

    rows = wait_for(challenger_errors, 30, "serving_errors rows")
    assert sum(r[2] for r in rows) == routed
    assert {r[0] for r in rows} == {failing}
    for row in rows:
        assert row[3].startswith("RuntimeError: test model refuses to answer"), row[3]
        assert row[3].endswith("answer <text>"), row[3]
        assert not any(t[:20] in row[3] for t in texts)
    assert metric_value(
        server.url, "loopml_model_errors_total", model_version=failing, variant="challenger"
    ) == float(routed)
    assert variant_counts(url).get(("challenger", failing)) is None  # nothing logged as answered

    # The same model in shadow: the champion answers, shadow failures are recorded as such.
    abort_rollout(server.url)
    start_rollout(server.url, failing, "shadow")
    wait_obeying(server.url, "shadow", failing)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        shadowed = [post(http, texts[i : i + 2]) for i in range(0, 60, 2)]
    assert {a["variant"] for a in shadowed} == {"champion"}

    def shadow_errors() -> int | None:
        n = sum(r[2] for r in error_rows(url) if r[1] == "shadow")
        return n if n >= 60 else None

    assert wait_for(shadow_errors, 30, "shadow error rows") == 60


def test_an_unloadable_challenger_is_reported_and_never_serves(
    trained: TrainedRegistry, make_server: Any, tmp_path: Path
) -> None:
    name, _ = trained.clone()
    broken = broken_version(trained, name, "1", tmp_path)
    server = fast_server(make_server, name)
    url = f"sqlite:///{server.home / 'loopml.db'}"
    start_rollout(server.url, broken, "canary", 0.5)
    rows = wait_for(lambda: error_rows(url), 60, "a load-failed row")
    version, variant, errors, error = rows[0]
    assert (version, variant, errors) == (broken, "challenger", 1)
    assert error.startswith("load failed: ")
    routing = routing_of(server.url)
    assert routing["mode"] == "canary" and routing["effective_mode"] == "none"
    assert routing["serving"]["challenger"] is None
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answers = [post(http, ["anyone there?"], f"k{i}") for i in range(30)]
    assert {a["model_version"] for a in answers} == {"1"}


# -- dead-man switch ------------------------------------------------------------------------------


def test_an_expired_lease_sends_all_traffic_to_the_champion(
    trained: TrainedRegistry, make_server: Any
) -> None:
    server = fast_server(make_server, rollout_lease_s=600)
    name = server.env["LOOPML_MODEL_NAME"]
    start_rollout(server.url, "2", "canary", 0.9)
    wait_obeying(server.url, "canary", "2")
    canary = Routing(name, "1", "2", "canary", 0.9)
    keys = [
        k
        for k in (f"k{i}" for i in range(200))
        if choose_variant(canary, k, secret=SECRET.encode()) == "challenger"
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert {post(http, ["to the canary"], k)["variant"] for k in keys[:50]} == {"challenger"}

    # The controller goes silent: its last heartbeat is now older than the lease.
    store = open_store(f"sqlite:///{server.home / 'loopml.db'}")
    with store.session() as session:
        routing = routing_in(session, name, lock=True)
        old = (datetime.now(UTC) - timedelta(seconds=601)).isoformat()
        routing.details = {**routing.details, "rollout": {**routing.details["rollout"]}}
        routing.details["rollout"]["heartbeat_at"] = old
        save_routing(session, routing)
    store.dispose()
    status = wait_obeying(server.url, "none")
    assert status["lease_expired"] is True
    assert (status["mode"], status["challenger"]) == ("canary", "2")  # the row is unchanged
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answers = [post(http, ["the lease ran out"], k) for k in keys[:50]]
    assert {(a["variant"], a["model_version"]) for a in answers} == {("champion", "1")}
    assert "lease expired" in httpx.get(server.url + "/").text


# -- the admin rollout API ------------------------------------------------------------------------


def test_admin_rollout_api_errors_are_4xx(trained: TrainedRegistry, make_server: Any) -> None:
    server = fast_server(make_server)
    base = server.url + "/v1/admin/rollout"

    def call(method: str, path: str, body: Any = None, auth: bool = True, **kw: Any) -> Any:
        headers = dict(AUTH) if auth else {}
        return httpx.request(method, base + path, json=body, headers=headers, timeout=60, **kw)

    def error(resp: httpx.Response, status: int, *words: str) -> None:
        assert resp.status_code == status, resp.text
        assert set(resp.json()) == {"error"}
        for word in words:
            assert word in resp.json()["error"], resp.json()

    good = {"version": "2", "mode": "canary", "weight": 0.1, "force": True, "reason": "t"}
    error(call("POST", "/start", good, auth=False), 401)
    error(httpx.post(base + "/start", json=good, headers={"Authorization": "Bearer nope"}), 403)
    error(call("GET", "", auth=False), 401)
    error(call("POST", "/start", {**good, "version": "99"}), 404, "99")
    error(call("POST", "/start", {**good, "version": "two"}), 422, "version")
    error(call("POST", "/start", {**good, "mode": "blue"}), 422, "mode")
    error(call("POST", "/start", {**good, "weight": 2}), 422, "weight")
    error(call("POST", "/start", {**good, "weight": 1}), 422, "weight")
    error(call("POST", "/start", {**good, "colour": "red"}), 422, "colour")
    error(call("POST", "/start", {**good, "reason": ""}), 422, "reason")
    error(call("POST", "/start", {"mode": "canary"}), 422, "version")
    as_json = {**AUTH, "content-type": "application/json"}
    malformed = httpx.post(base + "/start", content=b"{not json", headers=as_json, timeout=60)
    error(malformed, 400, "not valid JSON")
    error(call("POST", "/start", {**good, "force": False}), 409, "gate")
    error(call("POST", "/start", {**good, "version": "1"}), 409, "already the champion")
    error(call("POST", "/abort", {"reason": "nothing runs"}), 409, "no rollout")

    assert call("POST", "/start", good).status_code == 200
    error(call("POST", "/start", good), 409, "already running")
    status = call("GET", "")
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["routing"]["challenger"] == "2" and body["routing"]["weight"] == 0.1
    assert body["analysis"]["status"] in ("wait", "pass", "fail")
    assert call("POST", "/abort").status_code == 200  # the body is optional
    assert call("GET", "").json()["routing"]["mode"] == "none"
    audit = query(
        f"sqlite:///{server.home / 'loopml.db'}",
        "select actor, action, reason from audit_log order by id",
    )
    assert [a[1] for a in audit] == ["rollout_start_canary", "rollout_abort"]
    assert audit[1][2] == "aborted over HTTP"
    assert {a[0] for a in audit} == {"http:admin@127.0.0.1"}


def test_status_page_and_live_numbers(trained: TrainedRegistry, make_server: Any) -> None:
    server = fast_server(make_server)
    add_monitor_result(f"sqlite:///{server.home / 'loopml.db'}", server.env["LOOPML_MODEL_NAME"])
    start_rollout(server.url, "2", "canary", 0.25, reason="page test")
    wait_obeying(server.url, "canary", "2")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(40):
            post(http, [trained.texts[i]], f"key-{i}")
        page = http.get("/")
        live = http.get("/v1/status/live").json()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    for fragment in (
        "v1",
        "v2",
        "75% champion / 25% challenger",
        "rollout_start_canary",
        "page test",
        "chart-rps",
        "chart-p99",
        'id="drift-verdict" class="pill drift">drift<',
        "domain_classifier_auc",
        "0.912",
        "0.041",
    ):
        assert fragment in html, fragment
    assert "http://" not in html.replace("http:admin@", "")  # nothing loaded from elsewhere
    assert live["routing"]["effective_mode"] == "canary"
    assert live["window_s"] == 60
    variants = live["variants"]
    assert set(variants) <= {"champion", "challenger"}
    assert sum(v["total"] for v in variants.values()) <= 40


@pytest.mark.slow
def test_a_promotion_swaps_the_champion_without_a_failed_request(
    trained: TrainedRegistry, make_server: Any
) -> None:
    import threading

    from loopml.config import load_settings
    from loopml.control.promotion import promote
    from loopml.registry import Registry

    server = fast_server(make_server)
    name = server.env["LOOPML_MODEL_NAME"]
    start_rollout(server.url, "2", "canary", 0.5)
    wait_obeying(server.url, "canary", "2")
    stop, result = threading.Event(), LoadResult()
    load = threading.Thread(
        target=run_load,
        args=(server.url, trained.texts),
        kwargs={"seconds": 60, "concurrency": 8, "stop": stop, "result": result},
    )
    load.start()
    try:
        wait_for(lambda: result.requests > 100, 30, "load to start")
        # What the controller does when the analysis passes: alias + routing in one transaction.
        settings = load_settings(
            home=server.home, tracking_uri=trained.tracking_uri, model_name=name
        )
        store = open_store(settings.db_url)

        def finish(session: Any) -> None:
            state = routing_in(session, name, lock=True)
            state.champion, state.challenger, state.mode, state.weight = "2", None, "none", 0.0
            state.details = {k: v for k, v in state.details.items() if k != "rollout"}
            save_routing(session, state)

        promote(
            store,
            Registry(settings),
            "2",
            force=True,
            reason="promotion test",
            action="rollout_promote",
            routing=finish,
        )
        store.dispose()
        wait_for(
            lambda: routing_of(server.url)["serving"]["champion"] == "2", 10, "the new champion"
        )
        before = result.versions.get("2", 0)
        wait_for(lambda: result.versions.get("2", 0) > before + 100, 30, "answers from v2")
    finally:
        stop.set()
        load.join()
    assert result.failures == []
    status = httpx.get(server.url + "/v1/status").json()
    assert status["models"]["champion"]["version"] == "2"
    assert "challenger" not in status["models"]
    assert status["routing"]["effective_mode"] == "none"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert {post(http, ["new era"], f"k{i}")["model_version"] for i in range(30)} == {"2"}

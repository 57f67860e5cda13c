"""Two serving replicas sharing one loopml database and one MLflow store act as one: a canary
started on replica A is obeyed by both (same request key, same variant everywhere), and an abort
on replica B sends both back to the champion within a few routing polls."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from serving_helpers import (
    ADMIN_TOKEN,
    POSTGRES_ENV,
    Server,
    TrainedRegistry,
    abort_rollout,
    query,
    routing_of,
    server_env,
    start_rollout,
    train_registry,
    wait_obeying,
)

from loopml.routing import Routing
from loopml.serving.router import choose_variant

SECRET = "two-replicas-routing-secret"

POLL_S = 0.5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRegistry:
    return train_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(params=["sqlite", "postgres"])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One loopml database for both replicas: a SQLite file, or a fresh PostgreSQL database
    (when LOOPML_TEST_POSTGRES_URL is set; unreachable fails)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared-loopml.db'}"
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    import psycopg

    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(f"{POSTGRES_ENV} is set but PostgreSQL is unreachable: {exc}")
    name = f"loopml_replicas_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{url.rpartition('/')[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def replicas(
    trained: TrainedRegistry, shared_db: str, tmp_path: Path
) -> Iterator[tuple[Server, Server]]:
    name, _ = trained.clone()
    servers = []
    for label in ("a", "b"):
        home = tmp_path / f"replica-{label}"
        home.mkdir()
        env = server_env(
            trained,
            home,
            name,
            admin_token=ADMIN_TOKEN,
            database_url=shared_db,
            routing_poll_s=POLL_S,
            # Replicas with their own homes must share the canary's hash key.
            routing_secret=SECRET,
        )
        servers.append(Server(home, env))
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            try:
                server.stop(30)
            except AssertionError:
                server.kill()


def variant(http: httpx.Client, url: str, key: str) -> tuple[str, str]:
    resp = http.post(
        url + "/v1/predict", json={"text": f"hello {key}"}, headers={"X-Request-Key": key}
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body["variant"], body["model_version"]


@pytest.mark.slow
def test_two_replicas_follow_one_routing_state(
    replicas: tuple[Server, Server], shared_db: str
) -> None:
    a, b = replicas
    name = a.env["LOOPML_MODEL_NAME"]
    start_rollout(a.url, "2", "canary", 0.5, reason="two replicas")
    for server in (a, b):
        wait_obeying(server.url, "canary", "2")

    expected = Routing(name, "1", "2", "canary", 0.5)
    keys = [f"session-{i}" for i in range(120)]
    with httpx.Client(timeout=30) as http:
        on_a = {k: variant(http, a.url, k) for k in keys}
        on_b = {k: variant(http, b.url, k) for k in keys}
    assert on_a == on_b
    for key in keys:
        want = choose_variant(expected, key, secret=SECRET.encode())
        assert on_a[key] == (want, "2" if want == "challenger" else "1")
    share = sum(v == "challenger" for v, _ in on_a.values()) / len(keys)
    assert 0.35 < share < 0.65

    started = time.monotonic()
    abort_rollout(b.url, "abort on the other replica")
    for server in (a, b):
        wait_obeying(server.url, "none", timeout=10)
    took = time.monotonic() - started
    print(f"both replicas champion-only {took:.2f}s after the abort (poll {POLL_S}s)")
    assert took < 6 * POLL_S
    with httpx.Client(timeout=30) as http:
        for server in (a, b):
            assert {variant(http, server.url, k) for k in keys[:40]} == {("champion", "1")}
    for server in (a, b):
        routing = routing_of(server.url)
        assert (routing["mode"], routing["challenger"], routing["serving"]["challenger"]) == (
            "none",
            None,
            None,
        )
    actions = query(shared_db, "select action from audit_log order by id")
    assert [r[0] for r in actions][-2:] == ["rollout_start_canary", "rollout_abort"]


@pytest.mark.slow
def test_a_label_posted_to_the_other_replica_at_once_is_stored(
    replicas: tuple[Server, Server], shared_db: str
) -> None:
    # Replicas share no journal: B cannot know A's answers until A's writer commits them, so B
    # waits LOOPML_FEEDBACK_PEER_WAIT_S for them instead of refusing a label that is on its way.
    a, b = replicas
    with httpx.Client(timeout=30) as http:
        ids = []
        for n in range(5):
            answer = http.post(a.url + "/v1/predict", json={"text": f"fresh answer {n}"})
            ids.append(answer.json()["predictions"][0]["request_id"])
            fed = http.post(
                b.url + "/v1/feedback", json={"request_id": ids[-1], "label": "negative"}
            )
            assert fed.status_code == 200, fed.text
        started = time.monotonic()
        unknown = http.post(
            b.url + "/v1/feedback", json={"request_id": "0" * 32, "label": "negative"}
        )
        assert unknown.status_code == 404, unknown.text
        assert time.monotonic() - started >= 2.0  # the default wait, then the 404
    stored = query(shared_db, "select request_id from feedback")
    assert {r[0] for r in stored} == set(ids)

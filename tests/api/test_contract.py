"""The HTTP contract beyond what schemathesis checks (``test_schemathesis.py``): every route
answers only the methods it serves, and who may read the status.

Any other method gets 405 with an ``Allow`` header, on the fast lane too (before: ``PUT`` and
``PATCH`` on ``/v1/predict`` and OIP infer were answered 200 and logged as predictions), and
nothing is predicted or logged for it. A key with the admin role, which may act on what the
status shows, may read it (before: 403 on ``/`` and ``/v1/status``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
from serving_helpers import ADMIN_TOKEN, query, wait_for

from loopml.config import load_settings
from loopml.serving.app import create_app

#: a key with every role, so that no gate answers before the router does
KEY = "methods-key-0123456789abcdef"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")


def _routes(routes: Iterable[Any]) -> Iterator[tuple[str, set[str]]]:
    """(path template, methods) of every route, included routers walked."""
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's included router
        if inner is not None:
            yield from _routes(inner.routes)
        elif getattr(route, "methods", None):
            yield route.path, set(route.methods)


def app_routes(home: Path) -> dict[str, set[str]]:
    """path template -> methods, as the app factory builds them (docs and hidden routes too)."""
    settings = load_settings(home=home, database_url=None, tracking_uri=None)
    found: dict[str, set[str]] = {}
    for path, methods in _routes(create_app(settings).routes):
        found.setdefault(path, set()).update(methods)
    return found


def test_every_route_answers_405_for_methods_it_does_not_serve(make_server, tmp_path) -> None:
    server = make_server(
        admin_token=ADMIN_TOKEN,
        api_keys=f"{KEY}:predict+feedback+admin",
        predlog_flush_interval_s=0.05,
    )
    name = server.env["LOOPML_MODEL_NAME"]
    routes = app_routes(tmp_path)
    assert {"/v1/predict", "/v2/models/{name}/infer", "/docs", "/static/{name}"} <= set(routes)
    auth = {"Authorization": f"Bearer {KEY}"}
    wrong = []
    with httpx.Client(base_url=server.url, headers=auth, timeout=60) as http:
        for template, methods in sorted(routes.items()):
            static = template.startswith("/static/")
            path = template.replace("{name}", "status.css" if static else name)
            path = path.replace("{version}", "1")
            for method in METHODS:
                if method in methods or (method == "HEAD" and "GET" in methods):
                    continue
                resp = http.request(method, path, json={"text": "a wrong method"})
                allow = {m.strip() for m in resp.headers.get("allow", "").split(",")}
                if resp.status_code != 405 or not methods <= allow or method in allow:
                    wrong.append(f"{method} {path}: {resp.status_code} Allow={allow}")
                elif method != "HEAD":
                    assert resp.json()["error"]
        assert wrong == [], wrong
        right = http.post("/v1/predict", json={"text": "the one right request"})
        assert right.status_code == 200, right.text
    rid = right.json()["predictions"][0]["request_id"]
    db = f"sqlite:///{server.home / 'loopml.db'}"
    sql = "select request_id from predictions"
    # The journal keeps order: once the right request is stored, any wrong one would be too.
    rows = wait_for(lambda: query(db, sql), 60, "the right prediction to be stored")
    assert [r[0] for r in rows] == [rid]


def test_a_key_with_the_admin_role_reads_the_status(make_server) -> None:
    plain = "predict-only-key-0123456789abcdef"
    server = make_server(api_keys=f"{KEY}:predict+admin,{plain}:predict")
    for path in ("/", "/v1/status", "/v1/status/live"):
        admin = httpx.get(server.url + path, headers={"Authorization": f"Bearer {KEY}"})
        assert admin.status_code == 200, (path, admin.text)
        other = httpx.get(server.url + path, headers={"Authorization": f"Bearer {plain}"})
        assert other.status_code == 403, (path, other.text)
        assert httpx.get(server.url + path).status_code == 401

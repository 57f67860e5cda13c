"""The status page's template, texts and static files (no model, no server: the app unstarted)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loopml.config import load_settings
from loopml.serving.app import create_app
from loopml.serving.routes.page import display, live_snapshot, render, split_text
from loopml.serving.runtime import Runtime

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _canary(**extra: Any) -> dict[str, Any]:
    return {
        "champion": "1",
        "challenger": "2",
        "mode": "canary",
        "effective_mode": "canary",
        "effective_weight": 0.3,
        "serving": {"champion": "1", "challenger": "2"},
        "lease_expired": False,
        "rollout": {"mode": "canary", "step": 0, "steps": [0.1, 0.5, 1.0]},
        **extra,
    }


def test_display_texts() -> None:
    variants = {
        "champion": {"rps": [0, 3, 12, 0], "p99_ms": [None, 2.345, 3.96, None]},
        "challenger": {"rps": [1, 0, 0, 0], "p99_ms": [4.25, None, None, None]},
    }
    texts = display(_canary(), variants)
    assert texts == {
        "champion-version": "v1",
        "challenger-version": "v2",
        "challenger-note": "",
        "mode": "canary",
        "mode-set": "canary",
        "split": "70% champion / 30% challenger",
        "rollout": "canary rollout, step 1 of 3 (10%, 50%, 100%)",
        "latest-rps": "champion 12 \u00b7 challenger 1",
        "latest-p99": "champion 4 \u00b7 challenger 4.2",
    }
    expired = display(
        _canary(effective_mode="champion_only", lease_expired=True, serving={"champion": "1"}), {}
    )
    assert expired["split"].startswith("100% champion (the challenger does not serve")
    assert expired["rollout"].endswith("; controller lease EXPIRED: champion only")
    assert expired["challenger-note"] == " (not serving here)"
    assert expired["latest-rps"] == ""
    idle = display({"mode": "none", "effective_mode": "none", "rollout": None}, {})
    assert (idle["champion-version"], idle["challenger-version"]) == ("none", "none")
    assert idle["rollout"] == "no rollout in progress"
    assert split_text({"effective_mode": "shadow", "mode": "shadow"}).endswith("in shadow")


def test_untrusted_text_is_escaped(tmp_path: Path) -> None:
    runtime = Runtime(load_settings(home=tmp_path, model_name=EVIL))
    live = live_snapshot(runtime)
    live["routing"] = _canary(challenger=EVIL, serving={"champion": "1"})
    live["display"] = display(live["routing"], {})
    drift = {
        "ts": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "verdict": EVIL,
        "model_version": EVIL,
        "window": 1000,
        "checks": [
            {"kind": EVIL, "method": EVIL, "score": 0.5, "threshold": EVIL, "status": EVIL},
            {"kind": "label", "method": "psi", "score": None, "threshold": None, "status": "ok"},
        ],
    }
    audit = [{"ts": None, "actor": EVIL, "action": EVIL, "from": EVIL, "to": None, "reason": EVIL}]
    page = render(runtime, live, drift, audit, EVIL)
    assert "<script>alert" not in page and "<img" not in page
    assert page.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") >= 10
    # The JSON for the script stays valid JSON and cannot close its <script> element.
    initial = re.search(r'<script id="initial" type="application/json">(.*?)</script>', page, re.S)
    assert initial is not None and "<" not in initial.group(1)
    assert json.loads(initial.group(1))["routing"]["challenger"] == EVIL
    assert "None" not in page  # missing values are blank or '-', never Python's None
    assert '<td class="num">-</td>' in page  # no score


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """The app with API keys on and the status made public on purpose (keys alone close it),
    its lifespan not run (no model, no database)."""
    settings = load_settings(home=tmp_path, api_keys="key-0123456789abcdef", public_status=True)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_page_and_static_files_need_no_api_key(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"
    assert "the server is not started" in page.text
    links = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
    assert sorted(u.split("?")[0] for u in links) == ["/static/status.css", "/static/status.js"]
    for url, media_type in zip(sorted(links), ("text/css", "text/javascript"), strict=True):
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"] == f"{media_type}; charset=utf-8"
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert answer.headers["x-content-type-options"] == "nosniff"
        etag = answer.headers["etag"]
        assert etag == f'"{url.split("?v=")[1]}"'
        again = client.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        plain = client.get(url.split("?")[0])
        assert plain.status_code == 200 and plain.headers["cache-control"] == "no-cache"
        assert plain.content == answer.content
    assert "document.getElementById" in client.get("/static/status.js").text
    # The data routes still need the key: the page's assets are as open as the page itself.
    assert client.post("/v1/predict", json={"text": "hi"}).status_code == 401


_NOT_STATIC = ["nope.js", "%2e%2e%2fpage.py", "..%2fapp.py", "status.html", "STATUS.JS"]


@pytest.mark.parametrize("name", _NOT_STATIC)
def test_unknown_static_files_are_404(client: TestClient, name: str) -> None:
    answer = client.get(f"/static/{name}")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/json"


def test_initial_json_takes_what_orjson_takes(tmp_path: Path) -> None:
    runtime = Runtime(load_settings(home=tmp_path))
    live = live_snapshot(runtime)
    live["routing"]["updated_at"] = datetime(2024, 1, 2, tzinfo=UTC)
    page = render(runtime, live, None, [], None)
    initial = re.search(r'<script id="initial" type="application/json">(.*?)</script>', page, re.S)
    assert initial is not None
    assert json.loads(initial.group(1))["routing"]["updated_at"] == "2024-01-02T00:00:00+00:00"

"""``/docs`` (issue 19, row 11): Swagger UI from the package's own files, under a content security
policy. Opened in headless Chromium with the network cut to the server on loopback, it still shows
every operation and runs "Try it out"; its assets are the vendored release, byte for byte."""

from __future__ import annotations

import contextlib
import hashlib
from importlib import resources
from typing import Any

import httpx
import pytest
from browser import chromium, have_chromium, loopback_only
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from serving_helpers import Server

from loopml.serving.routes.apidocs import DOCS_CSP, SWAGGER_UI


def _policy(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy as directive -> sources."""
    parts = (d.split() for d in header.split(";") if d.strip())
    return {d[0]: d[1:] for d in parts}


def test_swagger_ui_files_are_the_vendored_release() -> None:
    static = resources.files("loopml.serving") / "static"
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        digest = hashlib.sha256((static / name).read_bytes()).hexdigest()
        assert digest == SWAGGER_UI[name], f"{name} is not swagger-ui-dist {SWAGGER_UI['version']}"
    assert "Apache License" in (static / "swagger-ui-LICENSE.txt").read_text()


def test_docs_page_has_a_policy_and_no_outside_url(client: httpx.Client) -> None:
    resp = client.get("/docs")
    assert resp.status_code == 200
    policy = _policy(resp.headers["content-security-policy"])
    assert resp.headers["content-security-policy"] == DOCS_CSP
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval, no CDN
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    for sources in policy.values():
        assert not any(s.startswith(("http:", "https:", "*")) or "unsafe" in s for s in sources)
    assert "cdn" not in resp.text and "https://" not in resp.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js"):
        assert f"/static/{asset}?v=" in resp.text
    assert client.get("/docs/oauth2-redirect").status_code == 404  # FastAPI's, with inline script


def _try_healthz(page: Any) -> str:
    """'Try it out' on GET /healthz: the call goes to this server, under connect-src 'self'."""
    health = page.locator("#operations-operations-healthz_healthz_get")
    health.locator(".opblock-summary").click()
    health.get_by_role("button", name="Try it out").click()
    health.get_by_role("button", name="Execute").click()
    body = health.locator(".live-responses-table .response-col_description pre")
    body.first.wait_for(timeout=30_000)
    text: str = body.first.inner_text()
    return text


@pytest.mark.slow
@pytest.mark.skipif(not have_chromium(), reason="Debian chromium is not installed")
def test_docs_render_offline_in_chromium(main_server: Server) -> None:
    paths = httpx.get(main_server.url + "/openapi.json", timeout=30).json()["paths"]
    operations = {(m.upper(), p) for p, item in paths.items() for m in item if m != "parameters"}
    refused: list[str] = []
    console: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        loopback_only(page, main_server.url, refused)
        page.on("console", lambda m: console.append(m.text))
        page.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
        resp = page.goto(main_server.url + "/docs", wait_until="load")
        assert resp is not None
        policy = resp.headers.get("content-security-policy")
        with contextlib.suppress(PlaywrightTimeoutError):  # asserted below, after the requests
            page.wait_for_selector(".opblock-summary", timeout=60_000)
        shown = page.eval_on_selector_all(
            ".opblock-summary",
            """els => els.map(e => [
                e.querySelector('.opblock-summary-method').innerText.trim(),
                e.querySelector('.opblock-summary-path').getAttribute('data-path')])""",
        )
        answer = _try_healthz(page) if shown else ""
        title = page.title()
    assert refused == []  # nothing but the server was asked for anything
    assert {tuple(op) for op in shown} == operations
    assert policy == DOCS_CSP
    assert '"status": "ok"' in answer
    assert title.startswith("loopml serving")
    assert not [m for m in console if "Content Security Policy" in m or "error" in m], console

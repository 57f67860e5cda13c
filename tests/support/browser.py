"""Headless Chromium for page tests (Debian's, driven by Playwright), a loopback beacon that
records whether a hostile payload ran, and the payloads themselves."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "Beacon",
    "beacon",
    "chromium",
    "have_chromium",
    "hostile_texts",
    "loopback_only",
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # file:// pages may call a loopback beacon (what the payloads try): let them, so a payload
    # that runs is seen, not silently refused by the browser.
    "--disable-features=PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests",
]


def have_chromium() -> bool:
    """Debian's chromium is installed."""
    return Path(CHROMIUM).exists()


class Beacon:
    """An HTTP server on loopback recording every request made to it (path and query)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()

            def do_POST(self) -> None:
                self.do_GET()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def beacon() -> Iterator[Beacon]:
    """A running :class:`Beacon`, shut down on exit."""
    b = Beacon()
    thread = threading.Thread(target=b.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield b
    finally:
        b.server.shutdown()
        b.server.server_close()
        thread.join()


def hostile_texts(url: str) -> list[str]:
    """Texts that run script if a page puts them into HTML or a <script> unescaped. Each, when it
    runs, sets the title to ``pwned``, sets ``window.__pwned`` and asks ``url`` for ``/hit/N``."""

    def js(n: int) -> str:
        # No spaces and no double quotes: the payload must also work as an unquoted attribute.
        return f"document.title='pwned';window.__pwned={n};fetch('{url}/hit/{n}')"

    return [
        f"</script><img src=y onerror={js(1)}>",
        f"awful flight </script><script>{js(2)}</script> never again",
        f"<!--<script>great</script><svg/onload={js(3)}>",
        f"<img src=x onerror={js(4)}> & \u2028 <b>bold</b> \"quoted\" 'single'",
    ]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def loopback_only(page: Any, allowed: str, refused: list[str]) -> None:
    """Abort every request of ``page`` not under ``allowed`` (recorded in ``refused``): the network
    cut to one server on loopback."""

    def route(r: Any) -> None:
        if r.request.url.startswith(allowed):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)

"""The status page in a real browser: headless Chromium (Debian's, driven by Playwright) on a real
server with a trained champion and a canary in progress."""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from browser import CHROMIUM, CHROMIUM_ARGS
from serving_helpers import (
    ADMIN_TOKEN,
    LoadResult,
    Server,
    TrainedRegistry,
    add_monitor_result,
    run_load,
    server_env,
    start_rollout,
    train_registry,
    wait_obeying,
)

VIEWPORT = {"width": 1280, "height": 1000}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRegistry:
    return train_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def canary_server(trained: TrainedRegistry, tmp_path: Path) -> Iterator[Server]:
    """A server on loopback whose clone of the registry runs a 30% canary of version 2."""
    name, _ = trained.clone()
    home = tmp_path / "serve"
    home.mkdir()
    env = server_env(trained, home, name, admin_token=ADMIN_TOKEN, routing_poll_s=0.2)
    server = Server(home, env).start()
    add_monitor_result(f"sqlite:///{home / 'loopml.db'}", name)
    try:
        start_rollout(server.url, "2", "canary", 0.3, reason="browser test")
        wait_obeying(server.url, "canary", "2")
        yield server
    finally:
        try:
            server.stop(30)
        except AssertionError:
            server.kill()


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_status_page_in_chromium(
    canary_server: Server, trained: TrainedRegistry, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    stop, result = threading.Event(), LoadResult()
    load = threading.Thread(
        target=run_load,
        args=(canary_server.url, trained.texts),
        kwargs={"seconds": 60, "concurrency": 4, "stop": stop, "result": result},
    )
    load.start()
    shot = tmp_path / "status-page.png"
    requests: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.on("request", lambda r: requests.append(r.url))
                page.goto(canary_server.url + "/", wait_until="load")
                assert page.text_content("#champion-version") == "v1"
                assert page.text_content("#challenger-version") == "v2"
                assert page.text_content("#mode") == "canary"
                assert page.text_content("#split") == "70% champion / 30% challenger"
                assert "step 1 of" in (page.text_content("#rollout") or "")
                audit = page.text_content("#audit") or ""
                assert "rollout_start_canary" in audit and "browser test" in audit
                assert "http:admin@127.0.0.1" in audit
                assert page.text_content("#drift-verdict") == "drift"
                assert "0.912" in (page.text_content("body") or "")
                # The script refreshes every 2 s: both variants' lines get points.
                for variant in ("champion", "challenger"):
                    page.wait_for_function(
                        """v => {
                          const l = document.querySelector(
                            '#chart-rps polyline[data-variant="' + v + '"]');
                          const pts = (l.getAttribute('points') || '').trim().split(/\\s+/);
                          return pts.length >= 3 && pts.some(p => +p.split(',')[1] < 110);
                        }""",
                        arg=variant,
                        timeout=30_000,
                    )
                # p99 points exist only for seconds with traffic: wait for a second one too
                # (the first drawing can come from the page's own JSON, one second of load).
                page.wait_for_function(
                    """() => (document.querySelector(
                      '#chart-p99 polyline[data-variant="champion"]')
                      .getAttribute('points') || '').trim().split(/\\s+/).length >= 2""",
                    timeout=30_000,
                )
                p99 = page.get_attribute('#chart-p99 polyline[data-variant="champion"]', "points")
                assert p99 and len(p99.split()) >= 2
                assert page.text_content("#latest-rps")
                page.screenshot(path=str(shot))
            finally:
                browser.close()
    finally:
        stop.set()
        load.join()
    assert result.failures == []
    assert result.requests > 20
    # Nothing but this server was asked for anything (no CDN, no fonts).
    assert requests and all(u.startswith(canary_server.url) for u in requests), requests
    _check_png(shot)
    keep = Path(__file__).resolve().parents[2] / ".loopml" / "status-page.png"
    if keep.parent.is_dir():  # a copy for humans, when a local .loopml exists
        shutil.copy(shot, keep)


def _check_png(path: Path) -> None:
    """A PNG of the viewport's size with many colours (not a blank page)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
    from PIL import Image

    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 100, len(colours or [])

"""Hostile texts in a monitoring window (issue 19, row 1), replayed: texts such as
``</script><img src=y onerror=...>`` sent to ``/v1/predict`` until they are a quarter of the window,
then ``loopml monitor`` (an alarm: the Evidently pages go to MLflow too). Every HTML page loopml
writes from that window (the summary, Evidently's inputs and predictions reports, their copies in
MLflow) and the status page are opened in headless Chromium: no payload runs (none sets the title,
none reaches the loopback beacon), and each page still shows its content."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))

from browser import beacon, chromium, have_chromium, hostile_texts
from serving_helpers import (
    ADMIN_TOKEN,
    Server,
    TrainedRegistry,
    query,
    server_env,
    start_rollout,
    train_registry,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_chromium(), reason="Debian chromium is not installed"),
]

WINDOW = 400
HOSTILE_SHARE = 4  # one text in four
EXAMPLES_TAB = "current: characteristic examples"
# A rendered Evidently dashboard: its root holds the drawn widgets (plots and tables).
EVIDENTLY_READY = (
    "() => { const r = document.querySelector('[id^=root_]');"
    " return r && r.querySelectorAll('table, svg, .js-plotly-plot').length > 0; }"
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRegistry:
    return train_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def server(trained: TrainedRegistry, tmp_path: Path) -> Iterator[Server]:
    name, _ = trained.clone()
    home = tmp_path / "serve"
    home.mkdir()
    env = server_env(trained, home, name, admin_token=ADMIN_TOKEN, routing_poll_s=0.2)
    srv = Server(home, env).start()
    try:
        yield srv
    finally:
        try:
            srv.stop(30)
        except AssertionError:
            srv.kill()


def _predict(server: Server, texts: list[str]) -> None:
    for start in range(0, len(texts), 50):
        resp = httpx.post(
            server.url + "/v1/predict", json={"texts": texts[start : start + 50]}, timeout=60
        )
        assert resp.status_code == 200, resp.text
    db = f"sqlite:///{server.home / 'loopml.db'}"
    wait_for(
        lambda: query(db, "select count(*) from predictions")[0][0] >= len(texts),
        60,
        "the predictions to be logged",
    )


def _monitor(server: Server) -> dict[str, Any]:
    """``loopml monitor --json`` with the server's settings: an alarm (exit 1)."""
    done = subprocess.run(
        [sys.executable, "-m", "loopml", "monitor", "--window", str(WINDOW), "--json"],
        env=server.env,
        cwd=server.home,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def _mlflow_copies(server: Server, run_id: str, dst: Path) -> list[Path]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.env["LOOPML_TRACKING_URI"])
    folder = Path(client.download_artifacts(run_id, "monitor", str(dst)))
    return sorted(folder.glob("*.html"))


def _open(browser: Any, url: str, ready: str) -> dict[str, Any]:
    """Open ``url`` in a fresh page, wait for ``ready`` (a JS expression), show the texts' examples
    (a tab of Evidently's text drift) and report what ran and what the page shows."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, wait_until="load", timeout=120_000)
    try:
        page.wait_for_function(ready, timeout=60_000)
        rendered = True
    except PlaywrightTimeoutError:
        rendered = False
    examples = page.get_by_text(EXAMPLES_TAB)
    if rendered and examples.count():
        examples.first.click()
    page.wait_for_load_state("networkidle")  # a late onerror/onload and its calls, if any
    seen = {
        "rendered": rendered,
        "title": page.title(),
        "pwned": page.evaluate("window.__pwned === undefined ? null : window.__pwned"),
        "errors": errors,
        "text": page.inner_text("body"),
    }
    page.close()
    return seen


def _pages(summary: dict[str, Any], copies: list[Path], server: Server) -> dict[str, Any]:
    """name -> (URL, when it is ready): every page written from the window, and the status page."""
    html, evidently = Path(summary["reports"]["html"]), map(Path, summary["reports"]["evidently"])
    pages = {p.name: (p.as_uri(), EVIDENTLY_READY) for p in evidently}
    for copy in copies:
        if "-evidently-" in copy.name:
            pages[f"mlflow/{copy.name}"] = (copy.as_uri(), EVIDENTLY_READY)
    pages[html.name] = (html.as_uri(), "() => document.querySelector('h1')")
    pages["status page"] = (server.url + "/", "() => document.querySelector('#audit')")
    return pages


def test_hostile_texts_run_in_no_page(
    trained: TrainedRegistry, server: Server, tmp_path: Path
) -> None:
    with beacon() as bcn:
        evil = hostile_texts(bcn.url)
        normal = trained.texts[: WINDOW - WINDOW // HOSTILE_SHARE]
        hostile = [f"{evil[i % len(evil)]} {i}" for i in range(WINDOW // HOSTILE_SHARE)]
        # interleaved: three ordinary texts, then a hostile one
        mixed = zip(normal[::3], normal[1::3], normal[2::3], hostile, strict=True)
        _predict(server, [text for four in mixed for text in four])
        summary = _monitor(server)
        assert summary["verdict"] in ("drift", "alarm"), summary["reasons"]
        on_disk = [Path(summary["reports"]["html"]), *map(Path, summary["reports"]["evidently"])]
        kinds = [p.name.rsplit("-", 1)[-1] for p in on_disk[1:]]
        assert kinds == ["inputs.html", "predictions.html"]
        copies = _mlflow_copies(server, summary["mlflow_run_id"], tmp_path / "mlflow")
        assert sorted(p.name for p in copies) == sorted(p.name for p in on_disk)
        for copy in copies:  # MLflow holds the same (safe) files
            assert copy.read_bytes() == next(p for p in on_disk if p.name == copy.name).read_bytes()
        start_rollout(server.url, "2", "canary", 0.1, reason=evil[0])
        with chromium() as browser:
            seen = {
                name: _open(browser, url, ready)
                for name, (url, ready) in _pages(summary, copies, server).items()
            }
        hits = list(bcn.hits)
    ran = {k: (v["title"], v["pwned"]) for k, v in seen.items() if v["pwned"] is not None}
    print("payloads that ran:", ran, "beacon hits:", hits)  # the measure for the report
    print("pages rendered:", {k: v["rendered"] for k, v in seen.items()})
    for name, what in seen.items():
        assert what["rendered"], name
        assert what["title"] != "pwned", name
        assert what["pwned"] is None, name
        assert what["errors"] == [], (name, what["errors"])
    assert hits == []
    # The pages still show what they are about, the hostile texts as text.
    for name, what in seen.items():
        if name.endswith("-evidently-inputs.html"):
            for column in ("length", "text", "urls"):
                assert f"Drift in column '{column}'" in what["text"], what["text"][:2000]
            # Evidently's examples of the window's texts: shown as the texts they were
            # (Evidently lists them only when it finds the text column drifted)
            if "Data drift detected. Drift detection method: Absolute text" in what["text"]:
                assert sum(text in what["text"] for text in hostile) >= 3, what["text"][:4000]
        if name.endswith("-evidently-predictions.html"):
            assert "Drift in column 'label'" in what["text"], what["text"][:2000]
    assert "Monitoring:" in seen[on_disk[0].name]["text"]
    assert evil[0] in seen["status page"]["text"]

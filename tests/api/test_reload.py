"""Hot reload: the server follows the champion alias under load without failing a request, and a
model that cannot be loaded never replaces the one serving."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import mlflow
import pytest
from serving_helpers import ADMIN_TOKEN, LoadResult, TrainedRegistry, run_load, wait_for

from loopml.tracking import configure_mlflow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def serving_version(url: str) -> str | None:
    models = httpx.get(url + "/v1/status", timeout=10).json()["models"]
    return models["champion"]["version"] if models else None


@pytest.mark.slow
def test_two_swaps_under_load_fail_no_request(trained: TrainedRegistry, make_server) -> None:
    name, versions = trained.clone()
    server = make_server(name, reload_interval_s=0.5, admin_token=ADMIN_TOKEN)
    stop = threading.Event()
    result = LoadResult()
    load = threading.Thread(
        target=run_load,
        args=(server.url, trained.texts),
        kwargs={"seconds": 60, "concurrency": 16, "stop": stop, "result": result},
    )
    load.start()
    try:
        wait_for(lambda: result.requests > 200, 30, "load to start")
        trained.set_champion(name, versions[1])  # followed by polling
        wait_for(lambda: serving_version(server.url) == versions[1], 30, "first swap")
        wait_for(lambda: result.versions.get(versions[1], 0) > 200, 30, "answers from v2")
        trained.set_champion(name, versions[0])  # and by the admin API
        resp = httpx.post(server.url + "/v1/admin/reload", headers=AUTH, timeout=30)
        assert resp.json()["result"] in ("loaded", "unchanged")
        assert serving_version(server.url) == versions[0]
        before = result.versions.get(versions[0], 0)
        wait_for(lambda: result.versions.get(versions[0], 0) > before + 200, 30, "answers again")
    finally:
        stop.set()
        load.join()
    assert result.failures == []
    assert result.requests >= 600
    assert set(result.versions) == {versions[0], versions[1]}
    assert len(set(result.ids)) == len(result.ids)
    metrics = httpx.get(server.url + "/metrics").text
    name = server.env["LOOPML_MODEL_NAME"]
    assert f'loopml_model_reloads_total{{model="{name}",result="loaded"}} 3.0' in metrics


def _broken_version(trained: TrainedRegistry, name: str, versions: list[str], tmp: Path) -> str:
    client = configure_mlflow(trained.settings)
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{versions[0]}", dst_path=str(tmp)
    )
    (Path(path) / "artifacts" / "classifier.pkl").write_bytes(b"not a pickle")
    return str(client.create_model_version(name, source=path).version)


def test_a_broken_model_never_replaces_the_serving_one(
    trained: TrainedRegistry, make_server, tmp_path: Path
) -> None:
    name, versions = trained.clone()
    broken = _broken_version(trained, name, versions, tmp_path)
    server = make_server(name, admin_token=ADMIN_TOKEN)
    trained.set_champion(name, broken)
    resp = httpx.post(server.url + "/v1/admin/reload", headers=AUTH, timeout=60)
    assert resp.status_code == 409
    assert "still serving version 1" in resp.json()["error"]
    answer = httpx.post(server.url + "/v1/predict", json={"text": "still fine?"}).json()
    assert answer["model_version"] == versions[0]
    assert httpx.get(server.url + "/readyz").status_code == 200
    failed = (
        f'loopml_model_reloads_total{{model="{server.env["LOOPML_MODEL_NAME"]}",result="failed"}}'
    )
    assert f"{failed} 1.0" in httpx.get(server.url + "/metrics").text


def test_a_server_with_only_a_broken_champion_stays_unready(
    trained: TrainedRegistry, make_server, tmp_path: Path
) -> None:
    name, versions = trained.clone()
    trained.set_champion(name, _broken_version(trained, name, versions, tmp_path))
    server = make_server(name, start=False).start(wait_ready=False)
    status = wait_for(
        lambda: httpx.get(server.url + "/v1/status").json()["last_reload"], 60, "a reload attempt"
    )
    assert status["result"] == "failed"
    assert httpx.get(server.url + "/readyz").status_code == 503
    resp = httpx.post(server.url + "/v1/predict", json={"text": "anyone?"})
    assert resp.status_code == 503 and "no model" in resp.json()["error"]
    assert resp.headers["retry-after"] == "5"


def test_a_corrupted_cache_is_downloaded_again(trained: TrainedRegistry, make_server) -> None:
    name, _ = trained.clone()
    server = make_server(name)
    server.stop()
    assert "Application shutdown complete" in server.logs()
    entry = server.home / "cache" / name / "1"
    (entry / "model" / "artifacts" / "classifier.pkl").write_bytes(b"tampered")
    server.start()
    assert "does not match its manifest" in server.logs()
    assert httpx.post(server.url + "/v1/predict", json={"text": "ok"}).status_code == 200

"""API keys, a disabled admin API, and logs that never show tokens or texts."""

from __future__ import annotations

import httpx
from serving_helpers import TrainedRegistry

KEY = "client-key-abcdef0123456789"
SECRET_TEXT = "my card number is 4111 1111 1111 1111 and I am furious"


def test_api_keys_guard_the_data_routes(trained: TrainedRegistry, make_server) -> None:
    server = make_server(api_keys=f"other-key-0000000000,{KEY}")
    url = server.url
    body = {"text": SECRET_TEXT}
    missing = httpx.post(url + "/v1/predict", json=body)
    assert missing.status_code == 401 and "API key" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(url + "/v1/predict", json=body, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 403
    ok = httpx.post(url + "/v1/predict", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    also = httpx.post(url + "/v1/predict", json=body, headers={"X-API-Key": KEY})
    assert also.status_code == 200
    name = server.env["LOOPML_MODEL_NAME"]
    infer = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    assert httpx.post(f"{url}/v2/models/{name}/infer", json=infer).status_code == 401
    rid = ok.json()["predictions"][0]["request_id"]
    feedback = {"request_id": rid, "label": "negative"}
    assert httpx.post(url + "/v1/feedback", json=feedback).status_code == 401
    # A plain key may predict, not label: feedback trains the next model (a privileged role).
    refused = httpx.post(url + "/v1/feedback", json=feedback, headers={"X-API-Key": KEY})
    assert refused.status_code == 403 and "'feedback' role" in refused.json()["error"]
    for open_path in ("/healthz", "/readyz", "/metrics", "/v2/health/ready"):
        assert httpx.get(url + open_path).status_code == 200
    # Keys close the internals too (LOOPML_PUBLIC_STATUS); without an admin token nobody sees them.
    for closed_path in ("/v1/status", "/", "/docs", "/openapi.json"):
        assert httpx.get(url + closed_path).status_code in (401, 404), closed_path
    assert httpx.get(url + "/docs", headers={"X-API-Key": KEY}).status_code == 200

    # Admin API off without a token: a clear 404, whatever the caller sends.
    admin = httpx.post(url + "/v1/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
    assert admin.status_code == 404 and "LOOPML_ADMIN_TOKEN" in admin.json()["error"]

    # Bad input with a secret inside, then a crash-free shutdown: nothing leaks to the logs.
    httpx.post(
        url + "/v1/predict",
        content=b'{"text": "' + SECRET_TEXT.encode() + b'",',
        headers={"X-API-Key": KEY},
    )
    server.stop()
    logs = server.logs()
    assert "Application shutdown complete" in logs
    for secret in (KEY, "other-key-0000000000", SECRET_TEXT, "4111"):
        assert secret not in logs

"""The protocols are adapters over one inference core (``loopml.serving.core``): v1 REST, OIP
REST (JSON and binary) and OIP gRPC share its API key check, its request key and its metric
labels, against one real server process.

This process imports ``tritonclient.grpc``'s messages, so never ``loopml.serving.grpc``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest
from serving_helpers import (
    ADMIN_TOKEN,
    Server,
    TrainedRegistry,
    free_port,
    server_env,
    start_rollout,
    wait_obeying,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loopml.routing import Routing
from loopml.serving.router import choose_variant

KEY = "core-key-0123456789abcdef"
LABELLER = "core-labeller-0123456789ab"  # a key without the predict role
SECRET = "core-adapters-routing-secret"
TEXT = "@united lost my bag again, worst airline"
TIMEOUT = 60
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
OIP_INFER = "/v2/models/{name}/infer"


@pytest.fixture(scope="module")
def core_server(
    trained: TrainedRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server with API keys, the admin token, gRPC and a fixed routing secret."""
    home = tmp_path_factory.mktemp("core-server")
    name, _ = trained.clone()
    env = server_env(
        trained,
        home,
        name,
        api_keys=f"{KEY},{LABELLER}:feedback",
        admin_token=ADMIN_TOKEN,
        routing_secret=SECRET,
        routing_poll_s=0.2,
        public_status=True,  # /v1/status for wait_obeying
        grpc_port=free_port(),
    )
    server = Server(home, env)
    server.start()
    yield server
    server.stop()


#: what one adapter answers: (status, error message or None, variant, model version)
Outcome = tuple[int, str | None, str | None, str | None]


def _v1(server: Server, headers: dict[str, str]) -> Outcome:
    resp = httpx.post(
        server.url + "/v1/predict", json={"text": TEXT}, headers=headers, timeout=TIMEOUT
    )
    if resp.status_code != 200:
        return _http_error(resp)
    body = resp.json()
    return 200, None, body["variant"], body["model_version"]


def _oip_json(server: Server, headers: dict[str, str]) -> Outcome:
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}
    url = f"{server.url}/v2/models/{server.env['LOOPML_MODEL_NAME']}/infer"
    resp = httpx.post(url, json={"inputs": [tensor]}, headers=headers, timeout=TIMEOUT)
    if resp.status_code != 200:
        return _http_error(resp)
    body = resp.json()
    return 200, None, body["parameters"]["variant"], body["model_version"]


def _oip_binary(server: Server, headers: dict[str, str]) -> Outcome:
    raw = struct.pack("<I", len(TEXT.encode())) + TEXT.encode()
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES"}
    inputs = [{**tensor, "parameters": {"binary_data_size": len(raw)}}]
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    url = f"{server.url}/v2/models/{server.env['LOOPML_MODEL_NAME']}/infer"
    length = {"Inference-Header-Content-Length": str(len(head))}
    resp = httpx.post(url, content=head.encode() + raw, headers=headers | length, timeout=TIMEOUT)
    if resp.status_code != 200:
        return _http_error(resp)
    body = json.loads(resp.content[: int(resp.headers["inference-header-content-length"])])
    return 200, None, body["parameters"]["variant"], body["model_version"]


def _grpc(server: Server, headers: dict[str, str]) -> Outcome:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[1]
    )
    tensor.contents.bytes_contents.append(TEXT.encode())
    request = service_pb2.ModelInferRequest(
        model_name=server.env["LOOPML_MODEL_NAME"], inputs=[tensor]
    )
    metadata = [(k.lower(), v) for k, v in headers.items()]
    with grpc.insecure_channel(f"127.0.0.1:{server.env['LOOPML_GRPC_PORT']}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            response = stub.ModelInfer(request, metadata=metadata, timeout=TIMEOUT)
        except grpc.RpcError as err:
            status = {
                grpc.StatusCode.UNAUTHENTICATED: 401,
                grpc.StatusCode.PERMISSION_DENIED: 403,
            }.get(err.code(), 0)
            return status, err.details(), None, None
    return 200, None, response.parameters["variant"].string_param, response.model_version


def _http_error(resp: httpx.Response) -> Outcome:
    body = resp.json()
    assert set(body) == {"error"}, resp.text  # the one error shape of the API
    return resp.status_code, body["error"], None, None


ADAPTERS: dict[str, Callable[[Server, dict[str, str]], Outcome]] = {
    "v1": _v1,
    "oip-json": _oip_json,
    "oip-binary": _oip_binary,
    "grpc": _grpc,
}


def test_the_adapters_refuse_a_bad_key_alike(core_server: Server) -> None:
    """No key, a wrong key, a key without the predict role: the same status (gRPC: its code)
    and the same message on every protocol; the metadata route (a FastAPI dependency) too."""
    cases = [
        ({}, 401, "an API key is required"),
        ({"Authorization": "Bearer not-a-key"}, 403, "the API key is not valid"),
        ({"X-API-Key": LABELLER}, 403, "may not predict"),
    ]
    for headers, status, fragment in cases:
        outcomes = {name: adapter(core_server, headers) for name, adapter in ADAPTERS.items()}
        messages = {outcome[1] for outcome in outcomes.values()}
        assert {outcome[0] for outcome in outcomes.values()} == {status}, outcomes
        assert len(messages) == 1, outcomes
        (message,) = messages
        assert message is not None and fragment in message, outcomes
        meta = httpx.get(
            f"{core_server.url}/v2/models/{core_server.env['LOOPML_MODEL_NAME']}",
            headers=headers,
            timeout=TIMEOUT,
        )
        assert (meta.status_code, meta.json()) == (status, {"error": message})
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        for name, adapter in ADAPTERS.items():
            assert adapter(core_server, headers)[0] == 200, name


def _requests(url: str, route: str, method: str, variant: str) -> float:
    """``loopml_http_requests_total`` of one route, method and variant (status 200)."""
    total = 0.0
    wanted = (f'route="{route}"', f'method="{method}"', 'status="200"', f'variant="{variant}"')
    for line in httpx.get(url + "/metrics", timeout=TIMEOUT).text.splitlines():
        match = re.match(r"^loopml_http_requests_total\{(.*)\} (\S+)$", line)
        if match and all(label in match.group(1) for label in wanted):
            total += float(match.group(2))
    return total


def test_a_request_key_keeps_its_variant_on_every_adapter(core_server: Server) -> None:
    """In a canary, one ``X-Request-Key`` gets the same variant from every protocol (the
    core's one stickiness key), and each protocol's request metrics carry that variant."""
    url, name = core_server.url, core_server.env["LOOPML_MODEL_NAME"]
    start_rollout(url, "2", "canary", 0.5)
    wait_obeying(url, "canary", "2")
    routes = {
        "v1": ("/v1/predict", "POST"),
        "oip-json": (OIP_INFER, "POST"),
        "oip-binary": (OIP_INFER, "POST"),
        "grpc": (GRPC_INFER, "GRPC"),
    }
    before = {
        route: _requests(url, route, method, "challenger") for route, method in routes.values()
    }
    expected = Routing(name, "1", "2", "canary", 0.5)
    keys = [f"client-{i}" for i in range(24)]
    want = {key: choose_variant(expected, key, secret=SECRET.encode()) for key in keys}
    assert set(want.values()) == {"champion", "challenger"}  # both variants are exercised
    for key in keys:
        headers = {"X-API-Key": KEY, "X-Request-Key": key}
        version = "2" if want[key] == "challenger" else "1"
        for adapter_name, adapter in ADAPTERS.items():
            assert adapter(core_server, headers) == (200, None, want[key], version), (
                adapter_name,
                key,
            )
    to_challenger = sum(v == "challenger" for v in want.values())
    for route, method in set(routes.values()):
        per_route = sum(1 for r in routes.values() if r == (route, method))
        grown = _requests(url, route, method, "challenger") - before[route]
        assert grown == per_route * to_challenger, (route, grown)

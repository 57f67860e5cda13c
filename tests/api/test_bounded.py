"""Issue 19's replays on a real server (HTTP and gRPC on loopback): a request may not make the
server build a huge answer (row 2), model metadata needs a key when keys are set and an error never
echoes a huge value (row 11).

Like test_oip_clients.py, this process uses ``tritonclient``'s generated gRPC stubs, never
``loopml.serving.grpc``: the server runs in its own process.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from serving_helpers import Server, TrainedRegistry, free_port, server_env
from tritonclient.grpc import service_pb2, service_pb2_grpc

KEY = "bounded-key-0123456789abcdef"
HEADERS = {"X-API-Key": KEY}
METADATA = (("x-api-key", KEY),)
TEXTS = ["the crew was great", "lost my bag again", "it was a flight"]
#: small enough that 256 texts with every output are over it, 3 texts under it
MAX_RESPONSE = 4096
MANY = 37_000


@pytest.fixture(scope="module")
def server(trained: TrainedRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Keys, gRPC on, a small response limit."""
    home = tmp_path_factory.mktemp("bounded-server")
    name, _ = trained.clone()
    env = server_env(trained, home, name, api_keys=KEY, max_response_bytes=MAX_RESPONSE)
    started = Server(home, env)
    started.env["LOOPML_GRPC_PORT"] = str(free_port())
    started.start()
    yield started
    started.stop()


def _scored(server: Server) -> float:
    """Texts the server scored so far (``loopml_predictions_total``, all labels)."""
    lines = httpx.get(server.url + "/metrics").text.splitlines()
    return sum(float(x.split()[-1]) for x in lines if x.startswith("loopml_predictions_total{"))


def _name(server: Server) -> str:
    return server.env["LOOPML_MODEL_NAME"]


def _stub(server: Server) -> Any:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.env['LOOPML_GRPC_PORT']}")
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _grpc_infer(server: Server, texts: list[str], outputs: list[str], **tensor: Any) -> Any:
    """ModelInfer with the key; (response, None) or (None, the RpcError)."""
    shape = tensor.pop("shape", [len(texts)])
    request = service_pb2.ModelInferRequest(
        model_name=_name(server),
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(
                name="text",
                datatype=tensor.pop("datatype", "BYTES"),
                shape=shape,
                contents=service_pb2.InferTensorContents(
                    bytes_contents=[t.encode() for t in texts]
                ),
            )
        ],
        outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs],
    )
    channel, stub = _stub(server)
    try:
        return stub.ModelInfer(request, metadata=METADATA, timeout=60), None
    except grpc.RpcError as exc:
        return None, exc
    finally:
        channel.close()


def _http_infer(server: Server, texts: list[str], outputs: list[dict[str, Any]] | None) -> Any:
    body: dict[str, Any] = {
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]
    }
    if outputs is not None:
        body["outputs"] = outputs
    url = f"{server.url}/v2/models/{_name(server)}/infer"
    return httpx.post(url, json=body, headers=HEADERS, timeout=60)


def _binary_infer(server: Server, texts: list[str], outputs: list[dict[str, Any]]) -> Any:
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES"}
    header = {"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}
    head = json.dumps({**header, "outputs": outputs}).encode()
    return httpx.post(
        f"{server.url}/v2/models/{_name(server)}/infer",
        content=head + raw,
        headers={**HEADERS, "Inference-Header-Content-Length": str(len(head))},
        timeout=60,
    )


def test_outputs_named_many_times_are_refused_on_every_protocol(server: Server) -> None:
    """Row 2: ``probabilities`` named 37,000 times made a response 600 times the request."""
    as_json = _http_infer(server, TEXTS, [{"name": "probabilities"}] * MANY)
    # binary outputs: longer entries, fewer of them under LOOPML_MAX_BODY_BYTES
    as_binary = {"name": "probabilities", "parameters": {"binary_data": True}}
    binary = _binary_infer(server, TEXTS, [as_binary] * (MANY // 3))
    for resp, count in ((as_json, MANY), (binary, MANY // 3)):
        assert resp.status_code == 422, resp.text[:300]
        assert f"'probabilities' is named {count} times" in resp.json()["error"]
        assert len(resp.content) < 1000
    _, err = _grpc_infer(server, TEXTS, ["probabilities"] * MANY)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"'probabilities' is named {MANY} times" in err.details()

    unknown = [{"name": f"logits-{i}"} for i in range(1000)]
    resp = _http_infer(server, TEXTS, unknown)
    assert resp.status_code == 422 and "unknown output(s)" in resp.json()["error"]
    assert len(resp.content) < 1000
    _, err = _grpc_infer(server, TEXTS, [o["name"] for o in unknown])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT

    # each output once is what clients send: answered on the three paths
    once = [{"name": "label"}, {"name": "probabilities"}]
    assert _http_infer(server, TEXTS, once).status_code == 200
    ok = _binary_infer(server, TEXTS, [{**o, "parameters": {"binary_data": True}} for o in once])
    assert ok.status_code == 200, ok.text
    response, err = _grpc_infer(server, TEXTS, ["label", "probabilities"])
    assert err is None and [o.name for o in response.outputs] == ["label", "probabilities"]


def test_an_answer_over_the_size_limit_is_refused_before_the_model_runs(server: Server) -> None:
    many = [f"text number {i}" for i in range(256)]
    before = _scored(server)
    resp = _http_infer(server, many, None)
    assert resp.status_code == 422, resp.text[:300]
    assert "LOOPML_MAX_RESPONSE_BYTES" in resp.json()["error"]
    _, err = _grpc_infer(server, many, [])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "LOOPML_MAX_RESPONSE_BYTES" in err.details()
    assert _scored(server) == before, "refused before any text was scored"
    # smaller answers come back whole, under the limit
    resp = _http_infer(server, TEXTS, None)
    assert resp.status_code == 200 and len(resp.content) <= MAX_RESPONSE
    response, err = _grpc_infer(server, TEXTS, [])
    assert err is None and response.ByteSize() <= MAX_RESPONSE


def test_model_metadata_needs_a_key_when_keys_are_set(server: Server) -> None:
    """Row 11: versions, classes and loopml's version were answered to anyone."""
    name = _name(server)
    for path in ("/v2", f"/v2/models/{name}", f"/v2/models/{name}/versions/1"):
        assert httpx.get(server.url + path).status_code == 401, path
        assert httpx.get(server.url + path, headers={"X-API-Key": "nope"}).status_code == 403
        assert httpx.get(server.url + path, headers=HEADERS).status_code == 200, path
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{name}/ready"):
        assert httpx.get(server.url + path).status_code == 200, path  # health stays open

    channel, stub = _stub(server)
    try:
        calls = {
            "ModelMetadata": (stub.ModelMetadata, service_pb2.ModelMetadataRequest(name=name)),
            "ServerMetadata": (stub.ServerMetadata, service_pb2.ServerMetadataRequest()),
        }
        for rpc, (call, request) in calls.items():
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, rpc
            with pytest.raises(grpc.RpcError) as info:
                call(request, metadata=(("x-api-key", "nope"),), timeout=30)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, rpc
        meta = stub.ModelMetadata(
            service_pb2.ModelMetadataRequest(name=name), metadata=METADATA, timeout=30
        )
        assert list(meta.versions) == ["1"]
        assert (
            stub.ServerMetadata(
                service_pb2.ServerMetadataRequest(), metadata=METADATA, timeout=30
            ).name
            == "loopml"
        )
        ready = stub.ModelReady(service_pb2.ModelReadyRequest(name=name), timeout=30)
        assert ready.ready  # readiness stays open, as over HTTP
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live
    finally:
        channel.close()


def test_errors_echo_no_huge_value(server: Server) -> None:
    """Row 11: a 10,000-dimension shape echoed whole went over the clients' 8 KiB header limit:
    RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT."""
    shape = [1] * 10_000
    _, err = _grpc_infer(server, TEXTS[:1], [], shape=shape)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert "inputs[0].shape" in err.details() and "10000 items" in err.details()
    assert len(err.details()) <= 500
    _, err = _grpc_infer(server, TEXTS[:1], [], datatype="B" * 100_000)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0].datatype" in err.details() and len(err.details()) <= 500

    body = {"inputs": [{"name": "text", "shape": shape, "datatype": "BYTES", "data": ["x"]}]}
    url = f"{server.url}/v2/models/{_name(server)}/infer"
    resp = httpx.post(url, json=body, headers=HEADERS)
    assert resp.status_code == 422 and "10000 items" in resp.json()["error"]
    assert len(resp.content) < 500

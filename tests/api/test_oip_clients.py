"""The real Triton clients (``tritonclient``, PyPI) with their defaults against a real server:
HTTP with the binary tensor data extension, and gRPC (KServe's GRPCInferenceService).

This process imports ``tritonclient.grpc`` (its descriptors declare the ``inference.*`` messages),
so it never imports ``loopml.serving.grpc``: the server runs in its own process.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from serving_helpers import Server, TrainedRegistry, free_port, server_env
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

TEXTS = [
    "@united worst flight ever, lost my bag again",
    "I love my new iphone, the camera is great",
    "café ☕ was fine I guess",
]
MAX_TEXTS = 4
KEY = "client-key-0123456789abcdef"
#: seconds any one call may take: generous, the tests must hold with both cores busy
TIMEOUT = 60


@pytest.fixture(scope="module")
def oip_server(
    trained: TrainedRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server with gRPC on, at most 4 texts per request, no API keys."""
    home = tmp_path_factory.mktemp("oip-server")
    name, _ = trained.clone()
    env = server_env(trained, home, name, max_texts_per_request=MAX_TEXTS)
    server = Server(home, env)
    server.env["LOOPML_GRPC_PORT"] = str(free_port())
    server.start()
    yield server
    server.stop()


def _grpc_url(server: Server) -> str:
    return f"127.0.0.1:{server.env['LOOPML_GRPC_PORT']}"


def _name(server: Server) -> str:
    return server.env["LOOPML_MODEL_NAME"]


def _json_answer(server: Server, texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities of the JSON route (the reference)."""
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    url = f"{server.url}/v2/models/{_name(server)}/infer"
    resp = httpx.post(url, json={"inputs": [tensor]}, timeout=TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert "inference-header-content-length" not in resp.headers  # the JSON path is unchanged
    out = {o["name"]: o for o in resp.json()["outputs"]}
    probs = np.array(out["probabilities"]["data"], dtype=np.float32)
    return out["label"]["data"], probs.reshape(out["probabilities"]["shape"])


def _inputs(module: Any, texts: list[str], **kwargs: Any) -> list[Any]:
    tensor = module.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), **kwargs)
    return [tensor]


def _labels(result: Any) -> list[str]:
    """Binary BYTES outputs decode to bytes, JSON ones to str."""
    return [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]


def test_triton_http_client_defaults(oip_server: Server) -> None:
    name = _name(oip_server)
    labels, probs = _json_answer(oip_server, TEXTS)
    client = triton_http.InferenceServerClient(url=f"127.0.0.1:{oip_server.port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]

        outputs = [
            triton_http.InferRequestedOutput("label"),
            triton_http.InferRequestedOutput("probabilities"),
        ]
        # defaults: binary input tensor, binary outputs
        result = client.infer(name, _inputs(triton_http, TEXTS), outputs=outputs, request_id="42")
        assert _labels(result) == labels
        np.testing.assert_array_equal(result.as_numpy("probabilities"), probs)
        assert result.get_response()["id"] == "42"
        assert result.as_numpy("request_id") is None  # not asked for

        # no outputs named: the client asks for all of them, binary
        everything = client.infer(name, _inputs(triton_http, TEXTS))
        assert _labels(everything) == labels
        assert len(everything.as_numpy("request_id")) == len(TEXTS)

        # JSON input, JSON outputs: the same answers
        as_json = client.infer(
            name,
            _inputs(triton_http, TEXTS, binary_data=False),
            outputs=[triton_http.InferRequestedOutput("label", binary_data=False)],
        )
        assert _labels(as_json) == labels

        # a pinned version answers too
        pinned = client.infer(name, _inputs(triton_http, TEXTS), model_version="1")
        assert _labels(pinned) == labels
    finally:
        client.close()


def _http_error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def test_triton_http_client_errors(oip_server: Server) -> None:
    name = _name(oip_server)
    client = triton_http.InferenceServerClient(url=f"127.0.0.1:{oip_server.port}")
    try:
        err = _http_error(lambda: client.infer("other", _inputs(triton_http, TEXTS)))
        assert err.status() == "404"
        assert "unknown model" in err.message()

        numbers = triton_http.InferInput("text", [2], "INT32")
        numbers.set_data_from_numpy(np.array([1, 2], dtype=np.int32))
        err = _http_error(lambda: client.infer(name, [numbers]))
        assert err.status() == "422"
        assert "inputs[0].datatype" in err.message()

        many = ["a text"] * (MAX_TEXTS + 1)
        err = _http_error(lambda: client.infer(name, _inputs(triton_http, many)))
        assert err.status() == "422"
        assert "LOOPML_MAX_TEXTS_PER_REQUEST" in err.message()

        err = _http_error(lambda: client.infer(name, _inputs(triton_http, ["ok", "   "])))
        assert err.status() == "422"
        assert "inputs[0].data[1]" in err.message()
    finally:
        client.close()


def test_triton_grpc_client_defaults(oip_server: Server) -> None:
    name = _name(oip_server)
    labels, probs = _json_answer(oip_server, TEXTS)
    client = triton_grpc.InferenceServerClient(url=_grpc_url(oip_server))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, "1")
        meta = client.get_model_metadata(name)
        assert meta.name == name
        assert list(meta.versions) == ["1"]
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("text", "BYTES", [-1])
        ]
        assert [t.name for t in meta.outputs] == ["label", "probabilities", "request_id"]
        assert client.get_server_metadata().name == "loopml"

        outputs = [
            triton_grpc.InferRequestedOutput("label"),
            triton_grpc.InferRequestedOutput("probabilities"),
        ]
        result = client.infer(name, _inputs(triton_grpc, TEXTS), outputs=outputs, request_id="7")
        assert _labels(result) == labels
        np.testing.assert_array_equal(result.as_numpy("probabilities"), probs)
        response = result.get_response()
        assert response.id == "7"
        assert response.model_version == "1"
        assert response.parameters["variant"].string_param == "champion"

        everything = client.infer(name, _inputs(triton_grpc, TEXTS))
        assert _labels(everything) == labels
        ids = [b.decode() for b in everything.as_numpy("request_id")]
        assert len(set(ids)) == len(TEXTS)
    finally:
        client.close()

    # counted like HTTP requests, with method GRPC
    metrics = httpx.get(oip_server.url + "/metrics", timeout=TIMEOUT).text
    assert 'route="/inference.GRPCInferenceService/ModelInfer"' in metrics
    assert 'method="GRPC"' in metrics


def _grpc_error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def test_triton_grpc_client_errors(oip_server: Server) -> None:
    name = _name(oip_server)
    client = triton_grpc.InferenceServerClient(url=_grpc_url(oip_server))
    try:
        err = _grpc_error(lambda: client.infer("other", _inputs(triton_grpc, TEXTS)))
        assert err.status() == "StatusCode.NOT_FOUND"
        assert "unknown model" in err.message()
        err = _grpc_error(lambda: client.get_model_metadata(name, "9"))
        assert err.status() == "StatusCode.NOT_FOUND"

        numbers = triton_grpc.InferInput("text", [2], "INT32")
        numbers.set_data_from_numpy(np.array([1, 2], dtype=np.int32))
        err = _grpc_error(lambda: client.infer(name, [numbers]))
        assert err.status() == "StatusCode.INVALID_ARGUMENT"
        assert "inputs[0].datatype" in err.message()

        many = ["a text"] * (MAX_TEXTS + 1)
        err = _grpc_error(lambda: client.infer(name, _inputs(triton_grpc, many)))
        assert err.status() == "StatusCode.INVALID_ARGUMENT"
        assert "LOOPML_MAX_TEXTS_PER_REQUEST" in err.message()

        err = _grpc_error(
            lambda: client.infer(
                name,
                _inputs(triton_grpc, TEXTS),
                outputs=[triton_grpc.InferRequestedOutput("logits")],
            )
        )
        assert err.status() == "StatusCode.INVALID_ARGUMENT"
        assert "outputs" in err.message()
    finally:
        client.close()


def _raw_infer(server: Server, request: Any) -> grpc.RpcError:
    """Send a hand-made ModelInferRequest; the error it gets."""
    with grpc.insecure_channel(_grpc_url(server)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=TIMEOUT)
    return info.value


def test_grpc_malformed_raw_tensors(oip_server: Server) -> None:
    name = _name(oip_server)

    def request(raw: bytes, shape: int = 1, **extra: Any) -> Any:
        tensor = service_pb2.ModelInferRequest.InferInputTensor(
            name="text", datatype="BYTES", shape=[shape]
        )
        return service_pb2.ModelInferRequest(
            model_name=name, inputs=[tensor], raw_input_contents=[raw], **extra
        )

    cases = {
        "cut length": (request(b"\x05\x00"), "raw_input_contents[0]"),
        "length past the end": (request(struct.pack("<I", 99) + b"abc"), "declares 99 bytes"),
        "not UTF-8": (request(struct.pack("<I", 2) + b"\xff\xfe"), "not valid UTF-8"),
        "shape mismatch": (request(struct.pack("<I", 2) + b"hi", shape=3), "inputs[0].shape"),
        "two raw entries": (
            service_pb2.ModelInferRequest(
                model_name=name,
                inputs=[
                    service_pb2.ModelInferRequest.InferInputTensor(
                        name="text", datatype="BYTES", shape=[1]
                    )
                ],
                raw_input_contents=[b"", b""],
            ),
            "raw_input_contents",
        ),
        "no inputs": (service_pb2.ModelInferRequest(model_name=name), "inputs"),
    }
    for case, (req, fragment) in cases.items():
        err = _raw_infer(oip_server, req)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert fragment in (err.details() or ""), (case, err.details())

    # over LOOPML_MAX_BODY_BYTES (1 MiB): refused before it is parsed
    big = b"".join(struct.pack("<I", 1000) + b"x" * 1000 for _ in range(1100))
    err = _raw_infer(oip_server, request(big, shape=1100))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _post_binary(server: Server, header: dict[str, Any], raw: bytes, length: Any = None) -> Any:
    head = json.dumps(header).encode()
    value = str(len(head) if length is None else length)
    return httpx.post(
        f"{server.url}/v2/models/{_name(server)}/infer",
        content=head + raw,
        headers={"Inference-Header-Content-Length": value},
        timeout=TIMEOUT,
    )


def _bytes_tensor(texts: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


def test_malformed_binary_bodies_are_400_naming_the_field(oip_server: Server) -> None:
    raw = _bytes_tensor([b"good flight", b"bad food"])

    def header(size: Any = len(raw), shape: int = 2) -> dict[str, Any]:
        tensor = {"name": "text", "shape": [shape], "datatype": "BYTES"}
        return {"inputs": [{**tensor, "parameters": {"binary_data_size": size}}]}

    ok = _post_binary(oip_server, header(), raw)
    assert ok.status_code == 200, ok.text
    assert [o["name"] for o in ok.json()["outputs"]] == ["label", "probabilities", "request_id"]

    cases = [
        (_post_binary(oip_server, header(), raw, length=10_000), 400, "past the end"),
        (_post_binary(oip_server, header(), raw, length="ten"), 400, "Inference-Header"),
        (_post_binary(oip_server, header(), raw, length=0), 400, "Inference-Header"),
        (_post_binary(oip_server, header(len(raw) - 3), raw), 400, "add up to"),
        (_post_binary(oip_server, header(len(raw) + 3), raw), 400, "binary_data_size"),
        (_post_binary(oip_server, header(-1), raw), 422, "binary_data_size"),
        (_post_binary(oip_server, header(len(raw) - 2), raw[:-2]), 400, "element 1 declares"),
        (_post_binary(oip_server, header(shape=3), raw), 422, "inputs[0].shape"),
        (
            _post_binary(oip_server, header(6), _bytes_tensor([b"\xff\xfe"])),
            422,
            "not valid UTF-8",
        ),
    ]
    # binary_data_size without the header
    url = f"{oip_server.url}/v2/models/{_name(oip_server)}/infer"
    no_header = httpx.post(url, json=header(), timeout=TIMEOUT)
    cases.append((no_header, 400, "Inference-Header-Content-Length"))
    for resp, status, fragment in cases:
        assert resp.status_code == status, resp.text
        assert fragment in resp.json()["error"], resp.text


@pytest.fixture
def keyed_server(make_server: Any) -> Server:
    """A server with an API key and gRPC on."""
    server: Server = make_server(api_keys=KEY, grpc_port=free_port())
    return server


def test_api_keys_through_client_headers(keyed_server: Server) -> None:
    name = _name(keyed_server)
    http_client = triton_http.InferenceServerClient(url=f"127.0.0.1:{keyed_server.port}")
    grpc_client = triton_grpc.InferenceServerClient(url=_grpc_url(keyed_server))
    try:
        for headers, status in [
            (None, "401"),
            ({"Authorization": "Bearer wrong-key"}, "403"),
        ]:
            err = _http_error(
                lambda h=headers: http_client.infer(name, _inputs(triton_http, TEXTS), headers=h)
            )
            assert err.status() == status
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
            result = http_client.infer(name, _inputs(triton_http, TEXTS), headers=headers)
            assert len(_labels(result)) == len(TEXTS)

        for headers, code in [
            (None, "StatusCode.UNAUTHENTICATED"),
            ({"x-api-key": "wrong-key"}, "StatusCode.PERMISSION_DENIED"),
        ]:
            err = _grpc_error(
                lambda h=headers: grpc_client.infer(name, _inputs(triton_grpc, TEXTS), headers=h)
            )
            assert err.status() == code
        for headers in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
            result = grpc_client.infer(name, _inputs(triton_grpc, TEXTS), headers=headers)
            assert len(_labels(result)) == len(TEXTS)
        # health needs no key, as over HTTP
        assert grpc_client.is_server_ready()
    finally:
        http_client.close()
        grpc_client.close()


@pytest.mark.slow
def test_grpc_port_shared_by_workers(trained: TrainedRegistry, tmp_path: Any) -> None:
    """``loopml serve --workers 2 --grpc-port P``: both workers bind P (SO_REUSEPORT); every
    call on fresh connections is answered; SIGTERM stops them cleanly."""
    name, _ = trained.clone()
    port = free_port()
    server = Server(tmp_path, server_env(trained, tmp_path, name), workers=2)
    server.args = ["--grpc-port", str(port)]
    server.start(timeout=180)  # two fresh interpreters loading a model, on busy cores
    try:
        labels, _ = _json_answer(server, TEXTS)
        for _ in range(12):
            client = triton_grpc.InferenceServerClient(url=f"127.0.0.1:{port}")
            try:
                assert _labels(client.infer(name, _inputs(triton_grpc, TEXTS))) == labels
            finally:
                client.close()
        assert server.log_path is not None
        log = server.log_path.read_text(errors="replace")
        assert log.count(f"gRPC (OIP V2) listening on port {port}") == 2
        assert server.stop() == 0
    finally:
        server.kill()

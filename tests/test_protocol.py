"""The OIP v2 data plane on a real example model, without Ray: decode, validate, run, encode."""

from __future__ import annotations

import json
import pickle
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from jointserve.protocol import (
    dumps,
    Handler,
    asgi_app,
    InferenceError,
    InvalidInput,
    LoadedModel,
    MethodNotAllowed,
    ModelEndpoint,
    ModelNotReady,
    ServerEndpoint,
    decode_request,
    error_response,
    infer,
)
from jointserve.runtime import OnnxModel


@pytest.fixture(scope="module")
def edge(example: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    target = tmp_path_factory.mktemp("edge-v1")
    with tarfile.open(example / "archives" / "digits-edge-v1.tar.gz") as tar:
        tar.extractall(target, filter="data")
    return LoadedModel.load("digits-edge", "v1", target)


def _request(**input_overrides: object) -> bytes:
    tensor = {"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [0.5] * 128}
    tensor.update(input_overrides)
    return json.dumps({"id": "r-1", "inputs": [tensor]}).encode()


def test_infer_matches_onnxruntime_and_echoes_id(edge: LoadedModel, example: Path) -> None:
    X = np.load(example / "samples.npz")["X"][:3].astype(np.float32)
    body = json.dumps({"id": "abc", "inputs": [
        {"name": "input", "shape": [3, 64], "datatype": "FP32", "data": X.tolist()}]}).encode()
    response = json.loads(dumps(infer(edge, decode_request(body))))  # as the wire has it
    assert response["id"] == "abc" and response["model_version"] == "v1"
    outputs = {o["name"]: o for o in response["outputs"]}
    expected = edge.model.run({"input": X})
    assert outputs["label"] == {"name": "label", "shape": [3], "datatype": "INT64",
                                "data": expected["label"].tolist()}
    assert outputs["probabilities"]["shape"] == [3, 10]
    assert outputs["probabilities"]["datatype"] == "FP32"


def test_requested_outputs_only(edge: LoadedModel) -> None:
    body = json.loads(_request())
    body["outputs"] = [{"name": "label"}]
    response = infer(edge, decode_request(json.dumps(body).encode()))
    assert [o["name"] for o in response["outputs"]] == ["label"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"", "body is empty", id="empty"),
        pytest.param(b"[1, 2", "not valid JSON", id="bad-json"),
        pytest.param(b'{"inputs": "x"}', "inputs", id="inputs-not-a-list"),
        pytest.param(b'{"inputs": [{"name": "input"}]}', "inputs.0.shape", id="missing-shape"),
        pytest.param(_request(name="x"), "unknown input 'x'; the model's inputs are ['input']",
                     id="unknown-input"),
        pytest.param(_request(shape=[2, 32, 2]), "does not fit the model's [-1, 64]", id="rank"),
        pytest.param(_request(shape=[-2, 64]), "negative dimension", id="negative-dim"),
        pytest.param(_request(datatype="FP64"), "datatype FP64 does not match the model's FP32",
                     id="datatype"),
        pytest.param(_request(data=[0.5] * 127), "needs 128 elements, got 127", id="too-few"),
        pytest.param(_request(data=[[0.5] * 64, [0.5] * 63]), "data is not FP32", id="ragged"),
    ],
)
def test_invalid_requests_name_the_problem(edge: LoadedModel, body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        infer(edge, decode_request(body))
    assert message in err.value.message
    assert err.value.status_code == 400


def test_no_loaded_version_is_not_ready() -> None:
    with pytest.raises(ModelNotReady) as err:
        infer(None, decode_request(_request()))
    assert err.value.status_code == 503


def test_load_rejects_a_model_that_cannot_run(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(Exception):
        LoadedModel.load("m", "v1", tmp_path)


def test_loaded_model_keeps_its_onnx_model(edge: LoadedModel) -> None:
    assert isinstance(edge.model, OnnxModel)
    assert [s.name for s in edge.model.inputs] == ["input"]


# -- methods over HTTP: every route answers 405 + Allow for a method it does not take ----------


def _client(handle: Handler, root_path: str) -> TestClient:
    """`handle` as the ASGI app a listener runs (the path keeps the route's prefix)."""
    return TestClient(asgi_app(handle))


@pytest.fixture(scope="module")
def clients(edge: LoadedModel) -> dict[str, TestClient]:
    """The server-wide routes (ServerEndpoint, what gateway.OipServer serves) and one model's."""
    model = ModelEndpoint(edge.name)
    model.loaded = edge
    unloaded = ModelEndpoint("not-loaded")

    async def none_pending() -> list[str]:
        return []

    server = ServerEndpoint("jointserve", "0.0.test", lambda: [edge.name], none_pending)
    return {
        "server": _client(server.handle, "/v2"),
        "model": _client(model.handle, f"/v2/models/{edge.name}"),
        "unloaded": _client(unloaded.handle, "/v2/models/not-loaded"),
    }


ROUTES = [
    pytest.param("server", "/v2", "GET", id="server-metadata"),
    pytest.param("server", "/v2/health/live", "GET", id="live"),
    pytest.param("server", "/v2/health/ready", "GET", id="ready"),
    pytest.param("model", "/v2/models/digits-edge", "GET", id="model-metadata"),
    pytest.param("model", "/v2/models/digits-edge/ready", "GET", id="model-ready"),
    pytest.param("model", "/v2/models/digits-edge/infer", "POST", id="model-infer"),
    pytest.param("model", "/v2/models/digits-edge/versions/v1", "GET", id="pinned-metadata"),
    pytest.param("model", "/v2/models/digits-edge/versions/v1/ready", "GET", id="pinned-ready"),
    pytest.param("model", "/v2/models/digits-edge/versions/v1/infer", "POST", id="pinned-infer"),
    # The method is checked before readiness: a wrong method is a 405, not a 503.
    pytest.param("unloaded", "/v2/models/not-loaded", "GET", id="unloaded-metadata"),
    pytest.param("unloaded", "/v2/models/not-loaded/ready", "GET", id="unloaded-ready"),
    pytest.param("unloaded", "/v2/models/not-loaded/infer", "POST", id="unloaded-infer"),
]


OTHER_METHODS = [
    pytest.param(*route.values, method, id=f"{route.id}-{method}")
    for route in ROUTES
    for method in ("TRACE", "PUT", "DELETE", "PATCH", "OPTIONS", "GET", "POST")
    if method != route.values[2]
]


@pytest.mark.parametrize(("client", "path", "allowed", "method"), OTHER_METHODS)
def test_other_methods_are_405_with_allow_and_an_oip_error(
    clients: dict[str, TestClient], client: str, path: str, allowed: str, method: str
) -> None:
    response = clients[client].request(method, path, content=b"{}" if method != "TRACE" else None)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": f"{path} accepts {allowed}, not {method}"}


@pytest.mark.parametrize(("client", "path", "allowed"), ROUTES)
def test_head_is_not_taken_where_get_is(
    clients: dict[str, TestClient], client: str, path: str, allowed: str
) -> None:
    # Explicitly GET only: the OIP spec defines no HEAD, and require_method takes exact names.
    response = clients[client].head(path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


def _valid_request() -> bytes:
    return json.dumps({"inputs": [
        {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}).encode()


@pytest.mark.parametrize(
    ("client", "path", "method", "status"),
    [
        pytest.param("server", "/v2", "GET", 200, id="server-metadata"),
        pytest.param("server", "/v2/health/live", "GET", 200, id="live"),
        pytest.param("server", "/v2/health/ready", "GET", 200, id="ready"),
        pytest.param("model", "/v2/models/digits-edge", "GET", 200, id="model-metadata"),
        pytest.param("model", "/v2/models/digits-edge/ready", "GET", 200, id="model-ready"),
        pytest.param("model", "/v2/models/digits-edge/infer", "POST", 200, id="model-infer"),
        pytest.param("unloaded", "/v2/models/not-loaded/ready", "GET", 503, id="unloaded-ready"),
    ],
)
def test_the_accepted_method_still_answers(
    clients: dict[str, TestClient], client: str, path: str, method: str, status: int
) -> None:
    body = _valid_request() if method == "POST" else None
    response = clients[client].request(method, path, content=body)
    assert response.status_code == status, response.text
    assert "allow" not in response.headers


def test_server_routes_answer_the_oip_bodies(clients: dict[str, TestClient]) -> None:
    server = clients["server"]
    assert server.get("/v2").json() == {"name": "jointserve", "version": "0.0.test",
                                        "extensions": []}
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2/health/ready").json() == {"ready": True}


def test_server_ready_is_503_naming_the_models_not_ready() -> None:
    async def pending() -> list[str]:
        return ["digits-cloud"]

    server = ServerEndpoint("jointserve", "0", lambda: ["digits-cloud", "digits-edge"], pending)
    response = _client(server.handle, "/v2").get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "not_ready": ["digits-cloud"]}


@pytest.mark.parametrize("method", ["GET", "POST", "TRACE", "DELETE"])
def test_unknown_model_is_404_for_any_method(method: str) -> None:
    async def none_pending() -> list[str]:
        return []

    server = ServerEndpoint("jointserve", "0", lambda: ["b-model", "a-model"], none_pending)
    response = _client(server.handle, "/v2").request(method, "/v2/models/nope/infer")
    assert response.status_code == 404
    assert "allow" not in response.headers
    assert response.json() == {
        "error": "model 'nope' is not served here; served models: ['a-model', 'b-model']"}


def test_method_not_allowed_is_its_own_error_not_invalid_input() -> None:
    exc = MethodNotAllowed("/v2 accepts GET, not PUT", ["GET"])
    assert isinstance(exc, InferenceError) and not isinstance(exc, InvalidInput)
    assert MethodNotAllowed.status_code == 405 and MethodNotAllowed.__bases__ == (InferenceError,)
    response = error_response(exc)
    assert response.status == 405
    assert dict(response.headers)["Allow"] == "GET"
    assert json.loads(response.body) == {"error": "/v2 accepts GET, not PUT"}
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.message, copy.allow) == (exc.message, exc.allow)
    assert error_response(InvalidInput("bad")).headers == ()

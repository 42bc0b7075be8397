"""Tests of tests._cloudserver: each fault mode as a real httpx client sees it (no Ray)."""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from jointserve.protocol import LoadedModel
from tests._cloudserver import CloudServer

MODEL = "digits-cloud"


@pytest.fixture(scope="module")
def model_dir(example: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's cloud model, unpacked (archive root: model.onnx + metadata.json)."""
    root = tmp_path_factory.mktemp("digits-cloud-v1")
    with tarfile.open(example / "archives" / "digits-cloud-v1.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture(scope="module")
def request_body(example: Path) -> dict:
    return json.loads((example / "request.json").read_text())


@pytest.fixture
def server(model_dir: Path) -> Iterator[CloudServer]:
    server = CloudServer(model_dir, MODEL)
    yield server
    server.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    # One pooled keep-alive client, as the gateway uses.
    with httpx.Client(timeout=10.0) as client:
        yield client


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def expected_label(model_dir: Path, body: dict) -> int:
    """The model's own answer for the request, run in-process."""
    loaded = LoadedModel.load(MODEL, "v1", model_dir)
    data = np.asarray(body["inputs"][0]["data"], dtype=np.float32).reshape(1, 64)
    return int(loaded.model.run({"input": data})["label"][0])


def test_ok_answers_a_real_prediction(
    server: CloudServer, client: httpx.Client, model_dir: Path, request_body: dict
) -> None:
    response = client.post(server.infer_url, json=request_body)
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    payload = response.json()
    assert (payload["model_name"], payload["model_version"]) == (MODEL, "v1")
    outputs = {out["name"]: out for out in payload["outputs"]}
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["data"] == [expected_label(model_dir, request_body)]
    assert outputs["probabilities"]["shape"] == [1, 10]
    assert sum(outputs["probabilities"]["data"]) == pytest.approx(1.0, abs=1e-4)
    assert server.request_count == 1


def test_ok_ready_and_errors_of_the_data_plane(server: CloudServer, client: httpx.Client) -> None:
    ready = client.get(f"{server.base_url}/v2/models/{MODEL}/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True

    bad = client.post(server.infer_url, json={"inputs": [{"name": "input", "shape": [1, 3],
                                                          "datatype": "FP32", "data": [1, 2, 3]}]})
    assert bad.status_code == 400
    assert "does not fit the model" in bad.json()["error"]

    unknown = client.post(f"{server.base_url}/v2/models/other/infer", json={})
    assert unknown.status_code == 404
    assert server.request_count == 3


def test_keep_alive_connection_is_reused(server: CloudServer, client: httpx.Client) -> None:
    streams = set()
    for _ in range(3):
        response = client.get(f"{server.base_url}/v2/models/{MODEL}/ready")
        assert response.status_code == 200
        streams.add(id(response.extensions["network_stream"]))
    assert len(streams) == 1


def test_slow_answers_after_the_delay(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    server.behave("slow", delay_s=0.3)
    started = time.monotonic()
    response = client.post(server.infer_url, json=request_body)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert [out["name"] for out in response.json()["outputs"]] == ["label", "probabilities"]


def test_slow_trips_a_shorter_client_timeout(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    server.behave("slow", delay_s=5.0)
    with pytest.raises(httpx.ReadTimeout):
        client.post(server.infer_url, json=request_body, timeout=0.2)


def test_error500_returns_an_oip_error(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    server.behave("error500")
    response = client.post(server.infer_url, json=request_body)
    assert response.status_code == 500
    assert "error500" in response.json()["error"]
    # The keep-alive stream stays usable: the next request is answered normally.
    server.behave("ok")
    assert client.post(server.infer_url, json=request_body).status_code == 200


def test_garbage_is_200_with_a_non_json_body(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    server.behave("garbage")
    response = client.post(server.infer_url, json=request_body)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_bad_shape_is_valid_json_but_not_an_oip_response(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    server.behave("bad_shape")
    response = client.post(server.infer_url, json=request_body)
    assert response.status_code == 200
    assert response.json() == {"outputs": "nope"}


def test_reset_resets_the_connection(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    server.behave("reset")
    with pytest.raises(httpx.ReadError, match="reset"):
        client.post(server.infer_url, json=request_body)
    assert server.request_count == 1
    server.behave("ok")
    assert client.post(server.infer_url, json=request_body).status_code == 200


def test_stop_refuses_and_closes_idle_keep_alive_connections(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    assert client.post(server.infer_url, json=request_body).status_code == 200  # pooled now
    server.stop()
    with pytest.raises(httpx.ConnectError):
        client.post(server.infer_url, json=request_body)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url)
    server.stop()  # idempotent


def test_start_serves_again_on_the_same_port(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    port = server.port
    assert client.post(server.infer_url, json=request_body).status_code == 200
    server.stop()
    server.start()
    assert server.port == port
    assert client.post(server.infer_url, json=request_body).status_code == 200
    assert server.request_count == 2


def test_fixed_port_is_used(model_dir: Path, server: CloudServer, client: httpx.Client) -> None:
    port = server.port
    server.stop()
    with CloudServer(model_dir, MODEL, version="v7", port=port) as again:
        assert again.base_url == f"http://127.0.0.1:{port}"
        assert client.get(f"{again.base_url}/v2/models/{MODEL}/ready").json()["version"] == "v7"


def test_hang_is_released_by_stop(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    server.behave("hang")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, server.infer_url, json=request_body)
        wait_for(lambda: server.request_count == 1, "the request to arrive")
        assert not pending.done()
        server.stop()  # must return although a handler is hanging
        with pytest.raises(httpx.RemoteProtocolError):
            pending.result(timeout=10)


def test_hang_is_released_by_a_mode_change(
    server: CloudServer, client: httpx.Client, request_body: dict
) -> None:
    server.behave("hang")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.post, server.infer_url, json=request_body)
        wait_for(lambda: server.request_count == 1, "the request to arrive")
        server.behave("error500")
        assert pending.result(timeout=10).status_code == 500


def test_rejects_unknown_modes(server: CloudServer) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        server.behave("flaky")
    with pytest.raises(ValueError, match="delay_s must be >= 0"):
        server.behave("slow", delay_s=-1)

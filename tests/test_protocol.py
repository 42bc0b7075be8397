"""The OIP v2 data plane on a real example model, without Ray: decode, validate, run, encode."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from jointserve.protocol import InvalidInput, LoadedModel, ModelNotReady, decode_request, infer
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
    response = infer(edge, decode_request(body))
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

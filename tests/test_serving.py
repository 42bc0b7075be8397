"""End to end, embedded mode: YAML files in a directory -> operator -> Ray Serve -> OIP v2.

One operator (with the example's edge and cloud models deployed) serves the whole session;
each test drives it by editing files, as a user would, and leaves the model on v1 for the next.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from jointserve.runtime import OnnxModel
from tests._harness import CLOUD, EDGE, OperatorHarness


def request_for(sample: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                        "data": sample.astype(np.float32).ravel().tolist()}]}


def test_each_model_answers_like_its_onnx_file(harness: OperatorHarness, example: Path) -> None:
    samples = np.load(example / "samples.npz")["X"][:5]
    for name in (EDGE, CLOUD):
        local = OnnxModel(Path(harness.settings.store_root) / name / "v1")
        for sample in samples:
            response = harness.infer(name, request_for(sample))
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model_name"] == name and body["model_version"] == "v1"
            outputs = {o["name"]: o for o in body["outputs"]}
            expected = local.run({"input": sample.reshape(1, 64).astype(np.float32)})
            assert outputs["label"]["data"] == expected["label"].tolist()
            np.testing.assert_allclose(outputs["probabilities"]["data"],
                                       expected["probabilities"].ravel(), rtol=1e-5)
            assert outputs["probabilities"]["shape"] == [1, 10]


def test_status_reports_url_version_and_conditions(harness: OperatorHarness) -> None:
    status = harness.status(EDGE)
    assert status["url"] == harness.base_url
    assert status["activeVersion"] == "v1"
    assert harness.condition(EDGE, "ArtifactVerified")["status"] == "True"
    # Converges: an earlier test's clean-up may still be re-applying the Serve config.
    harness.wait_for(lambda: harness.condition(EDGE, "Progressing")["reason"] == "Complete",
                     "edge rollout complete")


def test_model_metadata_and_health_routes(harness: OperatorHarness) -> None:
    meta = harness.http.get(f"/v2/models/{EDGE}").json()
    assert meta["name"] == EDGE and meta["versions"] == ["v1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
    assert meta["parameters"]["labels"] == [str(i) for i in range(10)]
    assert harness.http.get("/v2/health/live").status_code == 200
    harness.wait_for(lambda: harness.http.get("/v2/health/ready").status_code == 200, "server ready")
    assert harness.http.get("/v2").json()["name"] == "jointserve"
    assert harness.http.get(f"/v2/models/{EDGE}/versions/v1/ready").status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        pytest.param(f"/v2/models/{EDGE}/infer", b"{not json", 400, "not valid JSON", id="non-json"),
        pytest.param(f"/v2/models/{EDGE}/infer", b"", 400, "body is empty", id="empty-body"),
        pytest.param(f"/v2/models/{EDGE}/infer", b'{"inputs": []}', 400, "inputs", id="no-inputs"),
        pytest.param(f"/v2/models/{EDGE}/infer",
                     {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]},
                     400, "unknown input 'pixels'", id="wrong-tensor-name"),
        pytest.param(f"/v2/models/{EDGE}/infer",
                     {"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}]},
                     400, "does not fit the model's [-1, 64]", id="wrong-shape"),
        pytest.param(f"/v2/models/{EDGE}/infer",
                     {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 60}]},
                     400, "needs 64 elements, got 60", id="data-does-not-fill-shape"),
        pytest.param(f"/v2/models/{EDGE}/infer",
                     {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT64", "data": [0] * 64}]},
                     400, "datatype INT64 does not match the model's FP32", id="wrong-datatype"),
        pytest.param(f"/v2/models/{EDGE}/infer",
                     {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ["x"] * 64}]},
                     400, "data is not FP32", id="data-not-numbers"),
        pytest.param(f"/v2/models/{EDGE}/infer",
                     {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}],
                      "outputs": [{"name": "logits"}]},
                     400, "unknown output(s) ['logits']", id="unknown-output"),
        pytest.param("/v2/models/no-such-model/infer",
                     {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]},
                     404, "'no-such-model' is not served", id="unknown-model"),
        pytest.param(f"/v2/models/{EDGE}/versions/v9/infer",
                     {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]},
                     404, "version 'v9' is not served", id="unknown-version"),
    ],
)
def test_bad_request_gets_oip_error_and_replica_survives(
    harness: OperatorHarness, example: Path, path: str, body: bytes | dict, status: int, message: str
) -> None:
    if isinstance(body, dict):
        response = harness.http.post(path, json=body)
    else:
        response = harness.http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    good = harness.infer(EDGE, (example / "request.json").read_bytes())
    assert good.status_code == 200, good.text


def test_wrong_method_is_405(harness: OperatorHarness) -> None:
    response = harness.http.get(f"/v2/models/{EDGE}/infer")
    assert response.status_code == 405
    assert "accepts POST" in response.json()["error"]


def test_version_switch_under_load_fails_no_request(
    harness: OperatorHarness, example: Path, edge_on_v1: dict
) -> None:
    body = (example / "request.json").read_bytes()
    stop = threading.Event()
    versions: Counter[str] = Counter()
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=harness.base_url, timeout=30.0) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"/v2/models/{EDGE}/infer", content=body,
                                  headers={"content-type": "application/json"})
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        versions[r.json()["model_version"]] += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    try:
        harness.wait_for(lambda: versions["v1"] > 20, "traffic on v1")
        edge_on_v1["spec"]["targetVersion"] = "v2"
        harness.write(edge_on_v1)
        harness.wait_serving(EDGE, EDGE, "v2")
        seen = versions["v2"]
        harness.wait_for(lambda: versions["v2"] > seen + 20, "traffic on v2")
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert failures == []
    assert versions["v1"] > 0 and versions["v2"] > 0


def test_autoscaling_model_starts_at_its_minimum_and_serves(harness: OperatorHarness,
                                                            example: Path) -> None:
    sample = np.load(example / "samples.npz")["X"][0]
    doc = harness.example_doc(CLOUD)
    doc["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 3, "targetInFlight": 4}
    harness.write(doc)
    try:
        harness.wait_for(lambda: "serving v1 on 2 replica(s)" in
                         harness.condition(CLOUD, "Ready").get("message", ""),
                         "the cloud model on its two minimum replicas")
        response = harness.infer(CLOUD, request_for(sample))
        assert response.status_code == 200, response.text
    finally:
        harness.write(harness.example_doc(CLOUD))  # back to one fixed replica for the others
    harness.wait_for(lambda: "serving v1 on 1 replica(s)" in
                     harness.condition(CLOUD, "Ready").get("message", ""), "one cloud replica again")

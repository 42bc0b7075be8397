"""End to end: a JointInferenceService file -> operator -> gateway on Ray Serve -> one endpoint.

Runs on the session's operator (the example's edge and cloud InferenceModels deployed). Each
test writes its own service (and, where it needs one, its own cloud model) under a name of
its own, so counters and faults never leak between tests, and removes them afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests._cloudserver import CloudServer
from tests._harness import CLOUD, EDGE, JIS, OperatorHarness

DEADLINE_MS = 300
MARGIN_S = 1.0  # bounds "did not wait for the cloud"; not a speed claim


@pytest.fixture(scope="module")
def samples(example: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(example / "samples.npz")
    return data["X"], data["y"]


def _serve(harness: OperatorHarness, services: list[str], name: str, **spec: Any) -> str:
    services.append(name)  # first: removed afterwards even if it never gets ready
    return harness.serve_service(name, **spec)


def _cloud_model(harness: OperatorHarness, services: list[str], name: str, **spec: Any) -> str:
    """A cloud InferenceModel of its own (`name`, modelName `name`), from the example's."""
    doc = harness.example_doc(CLOUD)
    doc["metadata"]["name"] = name
    doc["spec"]["modelName"] = name
    doc["spec"].update(spec)
    harness.write(doc)
    services.append(name)
    harness.wait_for(lambda: harness.condition(name, "Ready").get("status") == "True",
                     f"cloud model {name} ready")
    return name


def _body(rows: np.ndarray) -> dict:
    rows = np.atleast_2d(rows).astype(np.float32)
    return {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.ravel().tolist()}]}


def _label(answer: dict) -> list[int]:
    return next(o["data"] for o in answer["outputs"] if o["name"] == "label")


def _edge_hard(harness: OperatorHarness, X: np.ndarray) -> np.ndarray:
    from jointserve.runtime import OnnxModel

    edge = OnnxModel(Path(harness.settings.store_root) / EDGE / "v1")
    return edge.run({"input": X})["probabilities"].max(axis=1) < 0.6


# -- the joint endpoint -----------------------------------------------------------------------

def test_easy_from_the_edge_hard_from_the_cloud(harness, services, example):
    name = _serve(harness, services, "digits")
    easy = harness.infer(name, (example / "request-easy.json").read_bytes())
    assert easy.status_code == 200, easy.text
    assert easy.json()["parameters"]["tier"] == "edge"
    assert easy.json()["model_name"] == "digits"
    hard = harness.infer(name, (example / "request.json").read_bytes())
    assert hard.status_code == 200, hard.text
    params = hard.json()["parameters"]
    assert params["tier"] == "cloud" and params["hard"] is True
    assert params["edge_model_version"] == "v1" and params["cloud_model_version"] == "v1"
    assert _label(hard.json()) == [2]  # the "2" edge v1 reads as a 3
    meta = harness.http.get(f"/v2/models/{name}").json()
    assert meta["name"] == "digits" and meta["parameters"]["hem_policy"] == "MaxProb"
    status = harness.status(name, JIS)
    assert status["url"] == harness.base_url
    assert status["edgeVersion"] == "v1" and status["cloudVersion"] == "v1"
    assert harness.condition(name, "CloudModelReady", JIS)["status"] == "True"


def test_counters_reach_the_status_and_jointserve_get_jis(harness, services, samples):
    name = _serve(harness, services, "digits-counted")
    X, _ = samples
    batch = X[:300]
    hard = _edge_hard(harness, batch)
    tiers: Counter[str] = Counter()
    for row in batch:
        answer = harness.infer(name, _body(row))
        assert answer.status_code == 200, answer.text
        tiers[answer.json()["parameters"]["tier"]] += 1
    assert tiers == {"edge": int((~hard).sum()), "cloud": int(hard.sum())}

    def counted() -> dict | None:
        status = harness.status(name, JIS)
        return status if status.get("inferenceNumber") == len(batch) else None

    status = harness.wait_for(counted, "counters in the status")
    assert status["hardExampleNumber"] == int(hard.sum())
    assert status["cloudAnswerNumber"] == int(hard.sum())
    assert status["fallbackNumber"] == 0
    assert status["uploadCloudRatio"] == pytest.approx(hard.sum() / len(batch), abs=1e-4)
    table = subprocess.run([sys.executable, "-m", "jointserve.cli", "get", "jis",
                            "--state-dir", str(harness.state)],
                           capture_output=True, text=True, check=True).stdout
    row = next(line.split() for line in table.splitlines() if line.startswith(name + " "))
    assert row[1:5] == [EDGE, "v1", CLOUD, "v1"]
    assert row[5:11] == ["MaxProb", "True", "Serving", str(len(batch)), str(int(hard.sum())),
                         f"{hard.sum() / len(batch):.3f}"]

    # The same counts as Prometheus series, from the Ray node's metrics endpoint.
    def exported() -> dict[str, float] | None:
        series = _prometheus(f'service="{name}"')
        wanted = {"requests_total/edge", "requests_total/cloud", "hard_examples_total"}
        return series if wanted <= set(series) else None

    series = harness.wait_for(exported, "gateway metrics exported", timeout=60)
    assert series["requests_total/edge"] == (~hard).sum()
    assert series["requests_total/cloud"] == hard.sum()
    assert series["hard_examples_total"] == hard.sum()


def _prometheus(selector: str) -> dict[str, float]:
    """jointserve series matching `selector` on this node: {"<metric>/<tier>": value}."""
    import httpx
    import ray

    port = ray.nodes()[0]["MetricsExportPort"]
    out: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if not line.startswith("ray_jointserve_") or selector not in line or "_bucket" in line:
            continue
        metric = line.split("{", 1)[0].removeprefix("ray_jointserve_")
        tier = line.split('tier="', 1)[1].split('"', 1)[0] if 'tier="' in line else ""
        key = f"{metric}/{tier}" if tier else metric
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_bad_requests_get_400_and_the_gateway_keeps_serving(harness, services, example):
    name = _serve(harness, services, "digits-bad-input")
    bad = [
        b"not json",
        b"",
        b'{"inputs": []}',
        b'{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0]}]}',
        b'{"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": [0]}]}',
        b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ["x"]}]}',
    ]
    for body in bad:
        response = harness.infer(name, body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]
    assert harness.http.get(f"/v2/models/{name}/infer").status_code == 405
    assert harness.infer(name, (example / "request.json").read_bytes()).status_code == 200


def test_a_missing_edge_model_is_reported_not_served(harness, services):
    doc = harness.service_doc(edgeModel={"name": "no-such-model"})
    doc["metadata"]["name"] = "digits-no-edge"
    harness.write(doc)
    services.append("digits-no-edge")
    condition = harness.wait_for(
        lambda: harness.condition("digits-no-edge", "Ready", JIS).get("reason") == "EdgeModelNotFound"
        and harness.condition("digits-no-edge", "Ready", JIS), "EdgeModelNotFound")
    assert "no-such-model" in condition["message"] and condition["status"] == "False"
    assert harness.infer("digits-no-edge", b"{}").status_code == 404


# -- the cloud tier through a DeploymentHandle ------------------------------------------------

def test_cloud_replica_raising_gives_the_edge_answer(harness, services, archive_dir, example):
    # A cloud model that takes 32 features: every call from the 64-feature gateway fails in
    # the cloud replica, as a mismatched model pair would in the field.
    archive = archive_dir / "narrow-cloud.tar.gz"
    _tar_gz(archive, {"model.onnx": _identity_onnx(32), "metadata.json": b"{}"})
    cloud = "narrow-cloud"
    _cloud_model(harness, services, cloud, manifest=[{
        "version": "v1", "downloadURL": harness.archive_server.url(archive.name),
        "sha256sum": hashlib.sha256(archive.read_bytes()).hexdigest()}], targetVersion="v1")
    name = _serve(harness, services, "digits-narrow", cloudModel={"name": cloud},
                  cloud={"deadlineMs": 5000, "breaker": {"failureThreshold": 100}})
    answer = harness.infer(name, (example / "request.json").read_bytes())
    assert answer.status_code == 200, answer.text
    params = answer.json()["parameters"]
    assert params["tier"] == "edge" and params["fallback_reason"] == "cloud_error"
    assert _label(answer.json()) == [3]  # edge v1's answer to the hard "2"


def test_cloud_past_the_deadline_gives_the_edge_answer_in_time(harness, services, example):
    # The cloud replica holds a lone request for its whole 3 s batch wait: past the deadline.
    cloud = _cloud_model(harness, services, "slow-cloud",
                         batching={"maxBatchSize": 64, "batchWaitTimeoutMs": 3000})
    name = _serve(harness, services, "digits-slow", cloudModel={"name": cloud},
                  cloud={"deadlineMs": DEADLINE_MS})
    started = time.monotonic()
    answer = harness.infer(name, (example / "request.json").read_bytes())
    elapsed = time.monotonic() - started
    assert answer.json()["parameters"]["fallback_reason"] == "cloud_timeout"
    assert elapsed < DEADLINE_MS / 1000 + MARGIN_S


def test_batched_cloud_answers_concurrent_hard_inputs_correctly(harness, services, samples):
    cloud = _cloud_model(harness, services, "batched-cloud",
                         batching={"maxBatchSize": 16, "batchWaitTimeoutMs": 20})
    name = _serve(harness, services, "digits-batched", cloudModel={"name": cloud},
                  hardExampleMining={"name": "CloudOnly"}, cloud={"deadlineMs": 5000})
    X, _ = samples
    from jointserve.runtime import OnnxModel

    expected = OnnxModel(Path(harness.settings.store_root) / CLOUD / "v1").run({"input": X[:48]})["label"]
    answers: dict[int, dict] = {}

    def post(i: int) -> None:
        answers[i] = harness.infer(name, _body(X[i:i + 3] if i % 2 else X[i])).json()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(0, 45)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, answer in answers.items():
        assert answer["parameters"]["tier"] == "cloud", answer
        rows = slice(i, i + 3) if i % 2 else slice(i, i + 1)
        assert _label(answer) == expected[rows].tolist()


def test_cloud_model_removed_mid_traffic_fails_no_request(harness, services, samples):
    cloud = _cloud_model(harness, services, "doomed-cloud")
    name = _serve(harness, services, "digits-doomed", cloudModel={"name": cloud},
                  hardExampleMining={"name": "CloudOnly"}, cloud={"deadlineMs": 2000})
    X, _ = samples
    stop = threading.Event()
    outcomes: list[tuple[int, str]] = []

    def client(offset: int) -> None:
        i = offset
        while not stop.is_set():
            response = harness.infer(name, _body(X[i % len(X)]))
            params = response.json().get("parameters", {}) if response.status_code == 200 else {}
            outcomes.append((response.status_code, params.get("fallback_reason") or params.get("tier", "")))
            i += 4

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    harness.remove(cloud)
    harness.wait_for(lambda: harness.condition(name, "CloudModelReady", JIS).get("status") == "False",
                     "cloud model gone from the service's status")
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    failed = [o for o in outcomes if o[0] != 200]
    assert failed == []
    seen = Counter(reason for _, reason in outcomes)
    assert seen["cloud"] > 0 and seen["cloud_unavailable"] > 0, seen


# -- the cloud tier over HTTP -----------------------------------------------------------------

def test_remote_cloud_over_http_and_its_faults(harness, services, example):
    model_dir = Path(harness.settings.store_root) / CLOUD / "v1"
    with CloudServer(model_dir, "remote-digits") as server:
        name = _serve(harness, services, "digits-remote",
                      cloudModel={"url": server.base_url, "modelName": "remote-digits"},
                      cloud={"deadlineMs": DEADLINE_MS, "breaker": {"failureThreshold": 2, "cooldownMs": 500}})
        body = (example / "request.json").read_bytes()
        answer = harness.infer(name, body).json()
        assert answer["parameters"]["tier"] == "cloud" and _label(answer) == [2]
        assert harness.condition(name, "CloudModelReady", JIS)["reason"] == "Remote"
        server.behave("slow", delay_s=2.0)
        started = time.monotonic()
        answer = harness.infer(name, body).json()
        assert answer["parameters"]["fallback_reason"] == "cloud_timeout"
        assert time.monotonic() - started < DEADLINE_MS / 1000 + MARGIN_S
        server.behave("ok")
        server.stop()
        assert harness.infer(name, body).json()["parameters"]["fallback_reason"] == "cloud_unavailable"
        # Two failures in a row open the breaker: no more calls to a dead cloud.
        assert harness.infer(name, body).json()["parameters"]["fallback_reason"] == "circuit_open"
        server.start()
        time.sleep(0.6)
        harness.wait_for(lambda: harness.infer(name, body).json()["parameters"]["tier"] == "cloud",
                         "breaker closed again", timeout=10)


# -- edge version switch ----------------------------------------------------------------------

def test_edge_version_switch_under_load_fails_no_joint_request(harness, services, edge_on_v1, samples):
    name = _serve(harness, services, "digits-switch")
    X, _ = samples
    with _under_load(harness, name, X, clients=3) as results:
        edge_on_v1["spec"]["targetVersion"] = "v2"
        harness.write(edge_on_v1)
        harness.wait_for(lambda: harness.status(name, JIS).get("edgeVersion") == "v2",
                         "gateway on edge v2")
        harness.wait_for(lambda: any(v == "v2" for _, v in results[-20:]), "answers from edge v2")
    assert [r for r in results if r[0] != 200] == []
    assert {v for _, v in results} == {"v1", "v2"}


def test_the_gateway_takes_over_its_edge_models_route_without_failing_a_request(
        harness, services, samples):
    """With the service up, the edge model's own application goes and the gateway answers
    /v2/models/<edge model> (the hand-over); with the service deleted, its gateway answers
    until the model's own application is back. Both under load on that route."""
    X, _ = samples
    edge_app = "im.default." + EDGE
    name = "digits-host"
    stop = threading.Event()
    codes: list[int] = []

    def client() -> None:
        i = 0
        while not stop.is_set():
            codes.append(harness.infer(EDGE, _body(X[i % len(X)])).status_code)
            i += 1

    def requests_after(what: str) -> None:
        before = len(codes)
        harness.wait_for(lambda: len(codes) > before + 50, f"requests after {what}")

    def edge_app_status() -> str:
        return getattr(harness.backend.app_states().get(edge_app), "status", "")

    thread = threading.Thread(target=client)
    thread.start()
    try:
        _serve(harness, services, name)
        harness.wait_for(lambda: edge_app not in harness.backend.app_states(),
                         "the edge model hosted by a gateway, no application of its own")
        requests_after("the hand-over")
        hosted = Counter(codes)
        ready = harness.http.get(f"/v2/models/{EDGE}/ready").json()
        assert (ready["name"], ready["version"]) == (EDGE, "v1")
        assert harness.condition(EDGE, "Ready").get("status") == "True"

        harness.remove(name)
        services.remove(name)
        harness.wait_for(lambda: edge_app_status() == "RUNNING",
                         "the edge model's own application back")
        harness.wait_for(lambda: "jis.default." + name not in harness.backend.app_states(),
                         "the deleted service's gateway gone")
        requests_after("the gateway went")
    finally:
        stop.set()
        thread.join()
    assert hosted == {200: sum(hosted.values())}
    assert Counter(codes) == {200: len(codes)}
    harness.wait_serving(EDGE, EDGE, "v1")


def test_services_on_one_edge_model_share_a_gateway_and_move_without_failing_a_request(
        harness, services, samples):
    """A second service on the same edge version, placed alike, moves into the first one's
    gateway application (its own goes); with the first service deleted, it gets its own
    application back before that gateway stops. Both under load on the second service."""
    X, _ = samples
    host, guest = "digits-share-a", "digits-share-b"

    def apps() -> dict:
        return harness.backend.app_states()

    _serve(harness, services, host)
    _serve(harness, services, guest)
    with _under_load(harness, guest, X, clients=2) as results:
        def requests_after(what: str) -> None:
            before = len(results)
            harness.wait_for(lambda: len(results) > before + 50, f"requests after {what}")

        harness.wait_for(lambda: "jis.default." + guest not in apps(),
                         "the second service hosted by the first one's gateway")
        requests_after("the move in")
        shared = Counter(code for code, _ in results)
        assert harness.condition(guest, "Ready", JIS).get("status") == "True"
        # one replica answers both, each under its own name
        assert harness.infer(host, _body(X[0])).json()["model_name"] == host
        assert harness.infer(guest, _body(X[0])).json()["model_name"] == guest

        harness.remove(host)
        services.remove(host)
        harness.wait_for(lambda: getattr(apps().get("jis.default." + guest), "status", "")
                         == "RUNNING", "the second service's own application back")
        harness.wait_for(lambda: "jis.default." + host not in apps(),
                         "the deleted service's gateway gone")
        requests_after("the first gateway went")
    assert shared == {200: sum(shared.values())}
    assert Counter(code for code, _ in results) == {200: len(results)}


# -- helpers ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _under_load(harness, name: str, X, clients: int) -> Iterator[list[tuple[int, str]]]:
    """`clients` threads sending the rows of X to service `name` one request after another
    until the block ends; yields the (status, edge_model_version) of every answer so far."""
    stop = threading.Event()
    results: list[tuple[int, str]] = []

    def client(offset: int) -> None:
        i = offset
        while not stop.is_set():
            response = harness.infer(name, _body(X[i % len(X)]))
            version = response.json().get("parameters", {}).get("edge_model_version", "")
            results.append((response.status_code, version))
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        yield results
    finally:
        stop.set()
        for t in threads:
            t.join()


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _identity_onnx(features: int) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["probabilities"])], "narrow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, features])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()



# -- evaluation and model selection on the real Serve --------------------------------------------

def _csv_dataset(harness: OperatorHarness, archive_dir: Path, X: np.ndarray, y: np.ndarray,
                 name: str) -> dict:
    """A csv Dataset of the test split, published on the archive server."""
    header = ",".join([f"px{i}" for i in range(X.shape[1])] + ["label"])
    rows = [",".join([repr(float(v)) for v in row] + [str(int(label))]) for row, label in zip(X, y)]
    data = ("\n".join([header, *rows]) + "\n").encode()
    (archive_dir / f"{name}.csv").write_bytes(data)
    return {"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset", "metadata": {"name": name},
            "spec": {"url": harness.archive_server.url(f"{name}.csv"),
                     "sha256sum": hashlib.sha256(data).hexdigest(), "format": "csv",
                     "csv": {"labelColumn": "label"}}}


def _edge_candidate(harness: OperatorHarness, services: list[str], name: str, version: str) -> None:
    doc = harness.example_doc(EDGE)
    doc["metadata"] = {"name": name, "labels": {"selected-by": "test"}}
    doc["spec"].update(modelName=name, targetVersion=version)
    harness.write(doc)
    services.append(name)


def test_a_better_model_appearing_is_selected_without_failing_a_request(
        harness, services, samples, archive_dir):
    X, y = samples
    dataset = _csv_dataset(harness, archive_dir, X, y, "selection-test")
    harness.write(dataset)
    services.append("selection-test")
    _edge_candidate(harness, services, "cand-weak", "v1")
    name = _serve(harness, services, "digits-selected", edgeModel={
        "selector": {"matchLabels": {"selected-by": "test"}, "layer": "edge"},
        "rankBy": {"dataset": "selection-test", "maximize": "accuracy"}})
    choice = harness.status(name, JIS)["selection"]["edge"]
    assert choice["model"] == "cand-weak", choice
    weak = harness.status("cand-weak")["metrics"][0]
    assert weak["dataset"] == "selection-test" and weak["version"] == "v1"

    with _under_load(harness, name, X, clients=2) as results:
        _edge_candidate(harness, services, "cand-strong", "v2")  # a better model appears
        harness.wait_for(lambda: harness.status(name, JIS).get("edgeVersion") == "v2",
                         "the service on the better candidate")
        harness.wait_for(lambda: any(v == "v2" for _, v in results[-20:]), "answers from it")
    choice = harness.status(name, JIS)["selection"]["edge"]
    assert choice["model"] == "cand-strong" and "best of 2" in choice["reason"], choice
    assert [r for r in results if r[0] != 200] == []
    assert {v for _, v in results} == {"v1", "v2"}


# -- a router the operator trains, on the real Serve ----------------------------------------------

def test_a_trained_router_is_served_and_replaced_without_failing_a_request(
        harness, services, samples, archive_dir):
    X, y = samples
    for name, rows in (("router-all", slice(None)), ("router-half", slice(0, 300))):
        harness.write(_csv_dataset(harness, archive_dir, X[rows], y[rows], name))
        services.append(name)

    def hem(dataset: str) -> dict:
        return {"name": "LearnedRouter", "output": "probabilities",
                "train": {"dataset": dataset, "inputs": True},
                "budget": {"cloudRatio": 0.2, "dataset": "router-all"}}

    def routed_by(dataset: str) -> Any:
        def check() -> dict | None:
            status = harness.status("digits-routed", JIS)
            router, calibration = status.get("router") or {}, status.get("calibration") or {}
            ready = harness.condition("digits-routed", "RouterReady", JIS).get("status")
            if (router.get("dataset") == dataset and ready == "True"
                    and status.get("routerSha256") == router["sha256"]
                    and calibration.get("routerSha256") == router["sha256"]):
                return status
            return None
        return check

    name = _serve(harness, services, "digits-routed", hardExampleMining=hem("router-all"))
    first = harness.wait_for(routed_by("router-all"), "a router trained and calibrated")
    assert first["router"]["inputFeatures"] == 64 and first["router"]["heldOutAuc"] > 0.5
    # The gateway scores with it: one request of every sample, cut at the calibrated share.
    answer = harness.infer(name, _body(X)).json()
    tiers = answer["parameters"]["row_tiers"]
    assert answer["parameters"]["hem_policy"] == "LearnedRouter"
    assert 0.1 < tiers.count("cloud") / len(tiers) < 0.3, tiers.count("cloud")

    # Trained again on other data under load: the new router replaces the old one, and no
    # request fails on the way.
    with _under_load(harness, name, X, clients=2) as results:
        doc = harness.service_doc(hardExampleMining=hem("router-half"))
        doc["metadata"]["name"] = name
        harness.write(doc)
        second = harness.wait_for(routed_by("router-half"), "the router trained again")
        count = len(results)
        harness.wait_for(lambda: len(results) > count + 20, "answers after the switch")
    assert second["router"]["sha256"] != first["router"]["sha256"]
    assert second["router"]["samples"] == 300
    assert [r for r in results if r[0] != 200] == []

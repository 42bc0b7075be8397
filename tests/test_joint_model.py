"""The joint-inference hot path (JointModel) against a real cloud model server on loopback.

No Ray here: the edge model is the example's real ONNX edge v1, and the cloud is a real OIP
server (tests/_cloudserver.py) running the example's cloud model, reached with the gateway's
pooled HTTP client (HttpCloud). The server is made slow, failing, garbage-speaking or dead to check that
every fault turns into the edge answer with its reason, in time, and that the breaker opens
and closes. The Serve deployment around JointModel is covered in test_joint_serving.py.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jointserve.api import JointInferenceServiceSpec
from jointserve.routing import build_policy
from jointserve.gateway import HttpCloud, JointModel, NoCloud
from jointserve.gateway._breaker import CircuitBreaker
from jointserve.gateway._hard_examples import HardExampleStore, HardExampleWriter, load_example
from jointserve.gateway._joint import CloudSettings
from jointserve.protocol import InvalidInput, LoadedModel, decode_request
from jointserve.runtime import build_pipeline
from tests._cloudserver import CloudServer

DEADLINE_S = 0.3
# Generous: this bounds "did not wait for the cloud", it does not measure speed.
MARGIN_S = 0.7


def _unpack(archive: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


@pytest.fixture(scope="module")
def models(example: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("joint-models")
    return {name: _unpack(example / "archives" / f"{name}.tar.gz", root / name)
            for name in ("digits-edge-v1", "digits-cloud-v1")}


@pytest.fixture(scope="module")
def cloud_server(models: dict[str, Path]) -> Iterator[CloudServer]:
    server = CloudServer(models["digits-cloud-v1"], "digits-cloud")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _healthy_cloud(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "cloud_server" in request.fixturenames:
        server = request.getfixturevalue("cloud_server")
        server.behave("ok")
        server.start()


@pytest.fixture(scope="module")
def samples(example: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(example / "samples.npz")
    return data["X"], data["y"]


def _joint(models: dict[str, Path], cloud: Any, *, policy: str = "MaxProb",
           parameters: dict | None = None, threshold: int = 3, cooldown_s: float = 60.0,
           max_in_flight: int = 64, writer: HardExampleWriter | None = None,
           deadline_s: float = DEADLINE_S) -> JointModel:
    _CLOUDS.append(cloud)
    return JointModel(
        name="digits",
        edge=LoadedModel.load("digits-edge", "v1", models["digits-edge-v1"]),
        policy=build_policy(policy, parameters if parameters is not None else {"threshold": 0.6}),
        policy_name=policy,
        pipeline=build_pipeline([], []),
        cloud=cloud,
        settings=CloudSettings(deadline_s, max_in_flight, CircuitBreaker(threshold, cooldown_s)),
        hem_output="probabilities",
        hard_examples=writer,
    )


def _request(rows: np.ndarray, **extra: Any) -> bytes:
    rows = np.atleast_2d(rows).astype(np.float32)
    return json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                                   "data": rows.ravel().tolist()}], **extra}).encode()


@pytest.fixture(autouse=True)
def _one_event_loop() -> Iterator[None]:
    """All of a test's calls on one loop, as in a replica: pooled connections belong to it."""
    global _RUNNER
    with asyncio.Runner() as runner:
        _RUNNER = runner
        yield
        for cloud in _CLOUDS:  # closed on the loop their connections belong to, as a replica does
            runner.run(cloud.aclose())
        _CLOUDS.clear()
    _RUNNER = None


_RUNNER: asyncio.Runner | None = None
_CLOUDS: list[Any] = []  # the cloud clients the running test made


def _run(coro: Any) -> Any:
    assert _RUNNER is not None
    return _RUNNER.run(coro)


def _infer(joint: JointModel, body: bytes) -> tuple[dict, float]:
    started = time.monotonic()
    answer = _run(joint.infer(decode_request(body)))
    return answer, time.monotonic() - started


def _label(answer: dict) -> list[int]:
    return list(next(o["data"] for o in answer["outputs"] if o["name"] == "label"))


def _hard_and_easy(joint: JointModel, samples: tuple[np.ndarray, np.ndarray]) -> tuple[int, int]:
    """Index of a sample edge v1 gets wrong but the cloud right (hard), and an easy one."""
    X, y = samples
    probs = joint.edge.model.run({"input": X})["probabilities"]
    labels = probs.argmax(1)
    hard = next(i for i in range(len(y)) if probs[i].max() < 0.6 and labels[i] != y[i])
    easy = next(i for i in range(len(y)) if probs[i].max() > 0.95 and labels[i] == y[i])
    return hard, easy


# -- routing ----------------------------------------------------------------------------------

def test_easy_input_is_answered_by_the_edge_without_calling_the_cloud(models, cloud_server, samples):
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8))
    hard, easy = _hard_and_easy(joint, samples)
    before = cloud_server.request_count
    answer, _ = _infer(joint, _request(samples[0][easy], id="r1"))
    assert answer["parameters"]["tier"] == "edge"
    assert answer["parameters"]["hard"] is False
    assert _label(answer) == [samples[1][easy]]
    assert answer["id"] == "r1" and answer["model_name"] == "digits"
    assert cloud_server.request_count == before


def test_hard_input_is_answered_by_the_cloud(models, cloud_server, samples):
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8))
    hard, _ = _hard_and_easy(joint, samples)
    answer, _ = _infer(joint, _request(samples[0][hard]))
    params = answer["parameters"]
    assert params["tier"] == "cloud" and params["hard"] is True
    assert params["hem_score"] > 0.4 and params["hem_policy"] == "MaxProb"
    assert "fallback_reason" not in params
    assert _label(answer) == [samples[1][hard]]  # edge v1 got it wrong; the cloud does not


def test_hard_inputs_share_one_kept_alive_connection(models, cloud_server, samples):
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8))
    hard, _ = _hard_and_easy(joint, samples)
    before = cloud_server.connection_count
    for _ in range(5):
        answer, _ = _infer(joint, _request(samples[0][hard]))
        assert answer["parameters"]["tier"] == "cloud"
    assert cloud_server.connection_count - before == 1  # one handshake, not one per request


def test_a_late_cloud_answer_is_not_taken_for_the_next_request(models, cloud_server, samples):
    X, _ = samples
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8))
    edge_probs = joint.edge.model.run({"input": X})["probabilities"]
    cloud_labels = LoadedModel.load("c", "v1", models["digits-cloud-v1"]).model.run({"input": X})["label"]
    first = next(i for i in range(len(X)) if edge_probs[i].max() < 0.6)
    second = next(i for i in range(len(X))
                  if edge_probs[i].max() < 0.6 and cloud_labels[i] != cloud_labels[first])
    cloud_server.behave("slow", delay_s=DEADLINE_S * 2)
    answer, _ = _infer(joint, _request(X[first]))
    assert answer["parameters"]["fallback_reason"] == "cloud_timeout"
    cloud_server.behave("ok")
    answer, _ = _infer(joint, _request(X[second]))  # while the first answer is still on its way
    assert answer["parameters"]["tier"] == "cloud"
    assert _label(answer) == [cloud_labels[second]]


def test_a_batch_sends_only_its_hard_rows_and_merges_the_answers(models, cloud_server, samples):
    X, y = samples
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8))
    rows = np.arange(60)
    probs = joint.edge.model.run({"input": X[rows]})["probabilities"]
    hard = probs.max(1) < 0.6
    assert 0 < hard.sum() < len(rows)
    answer, _ = _infer(joint, _request(X[rows]))
    params = answer["parameters"]
    assert params["tier"] == "mixed"
    assert params["row_hard"] == hard.tolist()
    assert params["row_tiers"] == ["cloud" if h else "edge" for h in hard]
    cloud_labels = LoadedModel.load("c", "v1", models["digits-cloud-v1"]).model.run(
        {"input": X[rows]})["label"]
    expected = np.where(hard, cloud_labels, probs.argmax(1))
    assert _label(answer) == expected.tolist()


def test_requested_outputs_only(models, cloud_server, samples):
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8))
    answer, _ = _infer(joint, _request(samples[0][:2], outputs=[{"name": "label"}]))
    assert [o["name"] for o in answer["outputs"]] == ["label"]


@pytest.mark.parametrize("body, message", [
    (b'{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": []}]}', "unknown input 'pixels'"),
    (b'{"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": []}]}', "shape"),
    (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT64", "data": []}]}', "datatype"),
    (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "nope"}]}', "64 elements"),
])
def test_bad_requests_are_invalid_input_naming_the_problem(models, cloud_server, body, message):
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8))
    with pytest.raises(InvalidInput, match=message):
        _run(joint.infer(decode_request(body)))


def test_unknown_output_is_invalid_input(models, cloud_server, samples):
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8))
    with pytest.raises(InvalidInput, match="unknown output"):
        _run(joint.infer(decode_request(_request(samples[0][0], outputs=[{"name": "nope"}]))))


# -- cloud faults -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode, reason", [
    ("hang", "cloud_timeout"),
    ("slow", "cloud_timeout"),
    ("error500", "cloud_error"),
    ("garbage", "cloud_bad_response"),
    ("bad_shape", "cloud_bad_response"),
    ("reset", "cloud_unavailable"),
    ("refused", "cloud_unavailable"),
])
def test_cloud_fault_gives_the_edge_answer_with_the_reason_in_time(models, cloud_server, samples,
                                                                   mode, reason):
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8))
    hard, _ = _hard_and_easy(joint, samples)
    edge_label = int(joint.edge.model.run({"input": samples[0][hard:hard + 1]})["label"][0])
    if mode == "refused":
        cloud_server.stop()
    else:
        cloud_server.behave(mode, delay_s=DEADLINE_S * 3)
    answer, elapsed = _infer(joint, _request(samples[0][hard]))
    params = answer["parameters"]
    assert params["tier"] == "edge" and params["hard"] is True
    assert params["fallback_reason"] == reason
    assert _label(answer) == [edge_label]
    assert elapsed < DEADLINE_S + MARGIN_S


def test_breaker_opens_after_consecutive_failures_and_closes_when_the_cloud_is_back(
        models, cloud_server, samples):
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8), threshold=3, cooldown_s=0.5)
    hard, _ = _hard_and_easy(joint, samples)
    body = _request(samples[0][hard])
    cloud_server.stop()
    reasons = [_infer(joint, body)[0]["parameters"]["fallback_reason"] for _ in range(3)]
    assert reasons == ["cloud_unavailable"] * 3
    assert joint.settings.breaker.state == "open"
    cloud_server.start()
    before = cloud_server.request_count
    answer, _ = _infer(joint, body)
    assert answer["parameters"]["fallback_reason"] == "circuit_open"
    assert cloud_server.request_count == before  # an open breaker does not call the cloud
    time.sleep(0.6)  # the cool-down passes: the next hard input is the half-open probe
    answer, _ = _infer(joint, body)
    assert answer["parameters"]["tier"] == "cloud"
    assert joint.settings.breaker.state == "closed"


def test_in_flight_cap_answers_from_the_edge_instead_of_queueing(models, cloud_server, samples):
    # A deadline far beyond the slow cloud's 0.2 s: the two calls admitted must come back as
    # cloud answers however loaded the machine is (0.2 s against 0.3 s failed once in CI).
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8), max_in_flight=2, threshold=100,
                   deadline_s=10.0)
    hard, _ = _hard_and_easy(joint, samples)
    body = _request(samples[0][hard])
    cloud_server.behave("slow", delay_s=0.2)

    async def burst() -> list[dict]:
        return await asyncio.gather(*(joint.infer(decode_request(body)) for _ in range(5)))

    answers = _run(burst())
    reasons = sorted(a["parameters"].get("fallback_reason") or a["parameters"]["tier"] for a in answers)
    assert reasons == ["cloud", "cloud", "cloud_overloaded", "cloud_overloaded", "cloud_overloaded"]


def test_no_cloud_deployed_is_cloud_unavailable(models, samples):
    joint = _joint(models, NoCloud("cloudModel 'x' is not deployed"))
    hard, _ = _hard_and_easy(joint, samples)
    answer, _ = _infer(joint, _request(samples[0][hard]))
    assert answer["parameters"]["fallback_reason"] == "cloud_unavailable"


# -- hard examples ----------------------------------------------------------------------------

def test_hard_examples_are_saved_with_both_answers(models, cloud_server, samples, tmp_path):
    writer = HardExampleWriter(HardExampleStore(tmp_path / "hard", max_count=2, max_bytes=1 << 20))
    joint = _joint(models, HttpCloud(cloud_server.infer_url, 8), writer=writer)
    hard, easy = _hard_and_easy(joint, samples)
    for index in (hard, easy, hard, hard):
        _infer(joint, _request(samples[0][index]))
    writer.flush()
    saved = writer.store.list()
    assert len(saved) == 2  # three hard inputs, bounded to the newest two
    example = load_example(saved[-1])
    np.testing.assert_allclose(example.inputs["input"], samples[0][hard:hard + 1])
    assert example.tier == "cloud" and example.cloud_outputs is not None
    assert int(example.cloud_outputs["label"][0]) == samples[1][hard]
    assert example.edge_outputs["probabilities"].shape == (1, 10)
    writer.close()


def test_latency_buckets_give_the_bucket_bound_of_each_quantile() -> None:
    from jointserve.gateway._metrics import LatencyBuckets

    buckets = LatencyBuckets()
    for ms in [0.1] * 50 + [0.4] * 40 + [4.0] * 9 + [9000.0]:
        buckets.observe(ms)
    assert (buckets.count, round(buckets.total_ms, 1)) == (100, 9057.0)
    assert buckets.quantile(0.5) == 0.25  # 50 of 100 at or under 0.25 ms
    assert buckets.quantile(0.9) == 0.5
    assert buckets.quantile(0.99) == 5.0
    assert buckets.quantile(1.0) == 5000.0  # past the last boundary: the last boundary
    buckets.clear()
    assert buckets.count == 0 and buckets.quantile(0.5) == 5000.0

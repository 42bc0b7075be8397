"""The benchmark's baseline systems answer like the models they serve (benchmarks/systems).

Plain HTTP and the Sedna-style pair run in every suite (a few seconds: uvicorn subprocesses).
The naive Ray Serve composition starts its own Ray (~30 s, and a second Ray next to the
session's on 2 cores), so its test runs only when asked for:

    BENCH_NAIVE_SERVE=1 .venv/bin/python -m pytest tests/test_bench_systems.py
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.systems import System, SystemStartError, free_port
from benchmarks.systems.models import unpack_example_models
from benchmarks.systems.plain_http import PlainHttp
from benchmarks.systems.sedna_style import SednaTwoServices

BAD_BODIES = {
    "not json": b"{nope",
    "no inputs": b'{"outputs": []}',
    "wrong shape": json.dumps({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32",
                                           "data": [0.0] * 63}]}).encode(),
    "shape and data disagree": json.dumps({"inputs": [{"name": "input", "shape": [1, 64],
                                                       "datatype": "FP32", "data": [0.0]}]}
                                          ).encode(),
}


@pytest.fixture(scope="module")
def model_dirs(example: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return unpack_example_models(example / "archives", tmp_path_factory.mktemp("bench-models"))


@pytest.fixture(scope="module")
def bodies(example: Path) -> dict[str, bytes]:
    return {"easy": (example / "request-easy.json").read_bytes(),
            "hard": (example / "request.json").read_bytes()}


def local_label(model_dir: Path, body: bytes) -> int:
    """The model's own answer, from onnxruntime in this process."""
    tensor = json.loads(body)["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    session = ort.InferenceSession(str(model_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return int(session.run(["label"], {"input": x})[0][0])


def post(system: System, body: bytes) -> httpx.Response:
    return httpx.post(system.infer_url(), content=body, timeout=30.0,
                      headers={"content-type": "application/json"})


def label_of(answer: httpx.Response) -> int:
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["label"]["datatype"] == "INT64" and outputs["label"]["shape"] == [1]
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [1, 10]
    return outputs["label"]["data"][0]


@pytest.fixture(scope="module")
def plain(model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[PlainHttp]:
    with PlainHttp(model_dirs["edge"], log_dir=tmp_path_factory.mktemp("plain-logs")) as system:
        yield system


@pytest.fixture(scope="module")
def sedna(model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[SednaTwoServices]:
    logs = tmp_path_factory.mktemp("sedna-logs")
    with SednaTwoServices(model_dirs["edge"], model_dirs["cloud"], log_dir=logs) as system:
        yield system


@pytest.fixture(params=["plain", "sedna"])
def system(request: pytest.FixtureRequest) -> System:
    return request.getfixturevalue(request.param)


def test_easy_request_is_answered_by_the_edge_model(system, model_dirs, bodies):
    answer = post(system, bodies["easy"])
    assert answer.status_code == 200
    assert answer.json()["model_name"] == "digits"
    assert label_of(answer) == local_label(model_dirs["edge"], bodies["easy"])
    if system.name == "sedna-two-services":
        assert answer.json()["parameters"]["tier"] == "edge"


def test_plain_answers_a_hard_request_with_the_edge_model(plain, model_dirs, bodies):
    answer = post(plain, bodies["hard"])
    assert answer.status_code == 200
    assert label_of(answer) == local_label(model_dirs["edge"], bodies["hard"])


def test_sedna_sends_a_hard_request_to_the_cloud_model(sedna, model_dirs, bodies):
    answer = post(sedna, bodies["hard"])
    assert answer.status_code == 200
    assert answer.json()["parameters"]["tier"] == "cloud"
    cloud_label = local_label(model_dirs["cloud"], bodies["hard"])
    assert cloud_label != local_label(model_dirs["edge"], bodies["hard"])  # the example's point
    assert label_of(answer) == cloud_label


@pytest.mark.parametrize("what", list(BAD_BODIES))
def test_malformed_body_is_a_400_and_the_next_request_works(system, bodies, what):
    answer = post(system, BAD_BODIES[what])
    assert answer.status_code == 400
    assert "error" in answer.json()
    assert post(system, bodies["easy"]).status_code == 200


def test_sedna_falls_back_to_the_edge_answer_when_the_cloud_is_unreachable(model_dirs, bodies,
                                                                           tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/v2/models/digits-cloud/infer"  # nobody listens
    seen: list[str] = []

    def via(url: str) -> str:
        seen.append(url)
        return closed

    system = SednaTwoServices(model_dirs["edge"], model_dirs["cloud"], cloud_url_via=via,
                              log_dir=tmp_path)
    with system:
        answer = post(system, bodies["hard"])
        pids = [system.cloud.pid, system.edge.pid]
    assert seen == [system.cloud_url()]
    assert answer.status_code == 200
    assert answer.json()["parameters"]["tier"] == "edge"
    assert "fallback_reason" in answer.json()["parameters"]
    assert label_of(answer) == local_label(model_dirs["edge"], bodies["hard"])
    for pid in pids:  # stop() ended both services
        assert not Path(f"/proc/{pid}").exists()
    system.stop()  # idempotent


def test_start_failure_names_the_cause_from_the_log(tmp_path):
    system = PlainHttp(tmp_path / "no-such-model", log_dir=tmp_path / "logs")
    with pytest.raises(SystemStartError) as failure:
        system.start()
    system.stop()
    assert "exited with code" in str(failure.value)
    assert "no-such-model" in str(failure.value)  # onnxruntime's error, from the log's tail


def test_naive_ray_serve_composition(model_dirs, bodies, tmp_path):
    from benchmarks.systems.naive_serve import NaiveRayServe

    with NaiveRayServe(model_dirs["edge"], model_dirs["cloud"], log_dir=tmp_path) as system:
        easy, hard = post(system, bodies["easy"]), post(system, bodies["hard"])
        bad = post(system, BAD_BODIES["wrong shape"])
        after_bad = post(system, bodies["easy"])
    assert easy.status_code == 200 and hard.status_code == 200, (easy.text, hard.text)
    assert easy.json()["parameters"]["tier"] == "edge"
    assert label_of(easy) == local_label(model_dirs["edge"], bodies["easy"])
    assert hard.json()["parameters"]["tier"] == "cloud"
    assert label_of(hard) == local_label(model_dirs["cloud"], bodies["hard"])
    assert bad.status_code == 400 and after_bad.status_code == 200


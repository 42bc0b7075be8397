"""The federated engine on the session's real Ray: rounds, FedAvg, faults, resume.

The training script here is a tiny numpy least-squares model. Its workers' data carry a
sentinel in X[0, 0] that makes one worker misbehave the way a real one can (raise, return
the wrong shapes, hang), so each fault is decided by data, not by timing.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from jointserve.api import DatasetSpec
from jointserve.federated import (
    DatasetSource,
    FederatedRun,
    JobSpec,
    RunState,
    WorkerSpec,
    fedavg,
)

SCRIPT = '''
import os, time
import numpy as np

PID_FILE = "/dev/null"  # the worker-kill test writes its own path here

def _fault(X):
    mode = float(X[0, 0])
    if mode == -1.0:
        raise ValueError("this worker's data is bad")
    if mode == -3.0:
        time.sleep(600)
    if mode == -4.0 and not os.path.exists(PID_FILE):  # hangs once, to be killed
        open(PID_FILE, "w").write(str(os.getpid()))
        time.sleep(600)
    return mode

def train_round(weights, X, y, classes, config):
    mode = _fault(X)
    if mode == -2.0:
        return {"weights": {"w": np.zeros(3, np.float32)}, "samples": len(y), "metrics": {}}
    w = weights["w"].astype(np.float64)
    target = np.eye(len(classes))[y]
    for _ in range(config["epochs"]):
        grad = X.T @ (X @ w - target) / len(y) + config["proximalMu"] * (w - weights["w"])
        w = w - config["learningRate"] * grad
    acc = float(np.mean((X @ w).argmax(1) == y))
    return {"weights": {"w": w.astype(np.float32)}, "samples": int(len(y)),
            "metrics": {"loss": float(np.mean((X @ w - target) ** 2)), "accuracy": acc}}

def evaluate(weights, X, y, classes):
    out = X @ weights["w"]
    return {"accuracy": float(np.mean(out.argmax(1) == y)),
            "loss": float(np.mean((out - np.eye(len(classes))[y]) ** 2))}

def export(weights, classes):
    return {"model.onnx": b"not used here", "metadata.json": b"{}"}
'''

CLASSES = ["a", "b"]


def _write(path: Path, data: bytes) -> tuple[str, str]:
    path.write_bytes(data)
    return path.as_uri(), hashlib.sha256(data).hexdigest()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _data(seed: int, n: int = 60, sentinel: float | None = None) -> bytes:
    """Two separable classes in 4 features; `sentinel` in X[0, 0] picks a fault."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(0, 0.3, (n, 4)).astype(np.float32)
    X[:, 1] += np.where(y == 1, 1.0, -1.0)
    if sentinel is not None:
        X[0, 0] = sentinel
    return _npz(X=X, y=np.array(CLASSES)[y])


def _job(tmp: Path, sentinels: list[float | None], *, rounds: int = 3, minimum: int = 0,
         timeout_s: float = 60.0, script: str = SCRIPT, script_sha: str | None = None,
         evaluation: bool = True) -> JobSpec:
    tmp.mkdir(parents=True, exist_ok=True)
    script_url, sha = _write(tmp / "script.py", script.encode())
    weights_url, weights_sha = _write(tmp / "weights.npz",
                                      _npz(w=np.zeros((4, 2), np.float32)))
    spec = DatasetSpec(url="file:///x.npz", sha256sum="0" * 64, format="npz",
                       npz={"labelsArray": "y"})

    def source(name: str, data: bytes) -> DatasetSource:
        url, digest = _write(tmp / f"{name}.npz", data)
        return DatasetSource(f"t.{name}", url, digest, spec.model_copy(update={"url": url}))

    workers = [WorkerSpec(f"w{i}", source(f"w{i}", _data(i, sentinel=s)))
               for i, s in enumerate(sentinels)]
    return JobSpec(job_id=tmp.name, script_url=script_url, script_sha256=script_sha or sha,
                   weights_url=weights_url, weights_sha256=weights_sha, workers=workers,
                   classes=CLASSES, rounds=rounds, min_participants=minimum or len(workers),
                   round_timeout_s=timeout_s, proximal_mu=0.0, epochs=5, batch_size=16,
                   learning_rate=0.3, seed=0,
                   evaluation=source("eval", _data(99)) if evaluation else None,
                   store_root=str(tmp / "store"))


def _run(job: JobSpec, tmp: Path, timeout_s: float = 120.0) -> RunState:
    run = FederatedRun(job, tmp / "checkpoint")
    run.start()
    try:
        return run.wait(timeout_s)
    finally:
        run.stop()


@pytest.fixture(scope="module")
def local_ray(serve_backend: object) -> None:
    """The session's Ray (shared with the serving tests)."""
    assert ray.is_initialized()


def test_fedavg_is_the_sample_weighted_mean() -> None:
    a = {"w": np.array([0.0, 2.0], np.float32)}
    b = {"w": np.array([4.0, 6.0], np.float32)}
    out = fedavg([(a, 1), (b, 3)])
    assert out["w"].dtype == np.float32
    np.testing.assert_allclose(out["w"], [3.0, 5.0])


def test_rounds_train_aggregate_and_evaluate(local_ray: None, tmp_path: Path) -> None:
    state = _run(_job(tmp_path / "ok", [None, None, None]), tmp_path / "ok")
    assert state.phase == "Succeeded", state.error
    assert [r.round for r in state.history] == [1, 2, 3]
    assert all(r.participants == ["w0", "w1", "w2"] and r.samples == 180 for r in state.history)
    assert state.history[-1].metrics["evalAccuracy"] > 0.9
    assert state.history[-1].metrics["evalLoss"] < state.history[0].metrics["evalLoss"]
    assert all(w.samples == 60 and w.last_round == 3 and w.node for w in state.workers)
    assert state.weights is not None and state.weights["w"].shape == (4, 2)


def test_a_wrong_sha256_is_refused_before_anything_runs(local_ray: None, tmp_path: Path) -> None:
    job = _job(tmp_path / "sha", [None], script_sha="ab" * 32)
    state = _run(job, tmp_path / "sha")
    assert state.phase == "Failed"
    assert "sha256" in state.error
    assert state.history == [] and all(w.node is None for w in state.workers)


@pytest.mark.parametrize("sentinel,why", [(-1.0, "ValueError: this worker's data is bad"),
                                          (-2.0, "weights 'w' as float32[3]")])
def test_a_failing_worker_fails_its_round_and_the_others_go_on(
        local_ray: None, tmp_path: Path, sentinel: float, why: str) -> None:
    state = _run(_job(tmp_path / "bad", [None, sentinel, None]), tmp_path / "bad")
    assert state.phase == "Succeeded", state.error
    assert all(r.participants == ["w0", "w2"] for r in state.history)
    bad = state.workers[1]
    assert bad.last_round is None and why in bad.error and bad.error.startswith("round 3: ")


def test_a_worker_past_the_timeout_is_left_behind(local_ray: None, tmp_path: Path) -> None:
    state = _run(_job(tmp_path / "slow", [None, -3.0], rounds=2, timeout_s=8.0),
                 tmp_path / "slow")
    assert state.phase == "Succeeded", state.error
    assert [r.participants for r in state.history] == [["w0"], ["w0"]]
    assert "roundTimeoutSeconds" in state.workers[1].error


def test_all_workers_failing_fails_the_job_with_the_reasons(local_ray: None,
                                                            tmp_path: Path) -> None:
    state = _run(_job(tmp_path / "all", [-1.0, -2.0]), tmp_path / "all")
    assert state.phase == "Failed" and state.weights is None
    assert state.error.startswith("round 1: no worker reported")
    assert "w0: ValueError: this worker's data is bad" in state.error
    assert "w1: train_round returned weights 'w' as float32[3]" in state.error


def test_a_worker_killed_mid_round_is_recorded_and_replaced(local_ray: None,
                                                           tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = SCRIPT.replace('PID_FILE = "/dev/null"', f"PID_FILE = {str(pid_file)!r}")
    job = _job(tmp_path / "kill", [None, -4.0], rounds=2, script=script)
    run = FederatedRun(job, tmp_path / "kill" / "checkpoint")
    run.start()
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid_file.exists(), run.state()
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        state = run.wait(120)
    finally:
        run.stop()
    assert state.phase == "Succeeded", state.error
    assert [r.participants for r in state.history] == [["w0"], ["w0", "w1"]]  # replaced
    assert "actor died" in state.history[0].dropped["w1"]
    assert state.workers[1].error is None and state.workers[1].last_round == 2


def test_a_restarted_run_resumes_from_its_checkpoint(local_ray: None, tmp_path: Path) -> None:
    job = _job(tmp_path / "resume", [None, None], rounds=2)
    first = _run(job, tmp_path / "resume")
    assert first.phase == "Succeeded"
    longer = JobSpec(**{**job.__dict__, "rounds": 4})
    second = _run(longer, tmp_path / "resume")
    assert second.phase == "Succeeded", second.error
    assert [r.round for r in second.history] == [1, 2, 3, 4]
    assert second.history[:2] == first.history  # rounds 1-2 were not run again


def test_stop_ends_the_actors_and_the_run(local_ray: None, tmp_path: Path) -> None:
    run = FederatedRun(_job(tmp_path / "stop", [-3.0], rounds=5), tmp_path / "stop" / "cp")
    run.start()
    deadline = time.monotonic() + 60
    while run.state().phase != "Running" and time.monotonic() < deadline:
        time.sleep(0.1)
    run.stop()
    assert run.state().phase == "Stopped" and run.state().weights is None

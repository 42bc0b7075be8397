"""TrainingModels in the embedded operator, on the session's real Ray: a restarted operator
resumes a job from its last completed round, a deleted job stops its actors and publishes
nothing, and a job whose workers all fail (or whose script's sha256 is wrong) is Failed
with the reasons and publishes nothing.

The job is the digits example's, on two of its workers, with its script wrapped by a gate:
from round GATE_ROUND on, a round waits until the test creates the gate file. So "mid-job"
is a state the test holds the job in, not a moment it hopes to catch. Serve is not needed
(no model is served), so the operator's backend is the reconciler tests' stand-in.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import yaml

from jointserve.operator import ServeSettings
from jointserve.operator._published import PUBLISHED_DIR
from jointserve.operator.embedded import directory_operator
from tests._fakes import FakeBackend
from tests._procs import processes_matching

TM = ("TrainingModel", "default", "digits-fl")
ROUNDS = 6
GATE_ROUND = 3  # rounds 0..2 run freely; round 3 (the 4th) waits for the gate file
WAIT_S = 120.0

GATE = '''

# -- the test's gate (tests/test_training_operator.py) --
import os as _os
import time as _time

LOG = {log!r}
GATE = {gate!r}
FAIL = {fail!r}
_train_round = train_round


def train_round(weights, X, y, classes, config):
    with open(LOG, "a") as log:
        log.write(f"{{config['round']}}\\n")
    if FAIL:
        raise RuntimeError(FAIL)
    if config["round"] >= {gate_round}:
        deadline = _time.time() + 300
        while not _os.path.exists(GATE) and _time.time() < deadline:
            _time.sleep(0.05)
    return _train_round(weights, X, y, classes, config)
'''


class Job:
    """The job's files in a temp dir, and an operator over them that a test can restart."""

    def __init__(self, root: Path, example: Path, fail: str = "", sha256: str | None = None):
        self.root = root
        self.resources = root / "resources"
        self.resources.mkdir(parents=True)
        self.state = root / "state"
        self.log = root / "rounds.log"
        self.gate = root / "gate"
        files = root / "files"
        files.mkdir()
        for name in ("digits-fl-worker-0.npz", "digits-fl-worker-1.npz",
                     "digits-fl-initial-weights.npz", "digits-test.npz"):
            shutil.copy(example / "archives" / name, files / name)
        script = ((example / "federated" / "train_softmax.py").read_text()
                  + GATE.format(log=str(self.log), gate=str(self.gate), fail=fail,
                                gate_round=GATE_ROUND))
        (files / "script.py").write_text(script)
        self.docs = [self._dataset(files, f"digits-fl-worker-{i}") for i in range(2)]
        self.docs.append(self._dataset(files, "digits-test"))
        self.docs.append({"apiVersion": "jointserve.io/v1alpha1", "kind": "TrainingModel",
                          "metadata": {"name": TM[2]}, "spec": {
            "trainingScript": {"url": (files / "script.py").as_uri(),
                               "sha256sum": sha256 or _sha256(files / "script.py")},
            "initialWeights": {"url": (files / "digits-fl-initial-weights.npz").as_uri(),
                               "sha256sum": _sha256(files / "digits-fl-initial-weights.npz")},
            "workers": [{"name": f"edge-{i}", "dataset": f"digits-fl-worker-{i}"}
                        for i in range(2)],
            "aggregation": {"rounds": ROUNDS, "minParticipants": 2, "roundTimeoutSeconds": 300},
            "training": {"learningRate": 1.0},
            "evaluation": {"dataset": "digits-test"},
            "publish": {"inferenceModel": "digits-edge", "rollout": True}}})
        self.operator = self._operator()

    @staticmethod
    def _dataset(files: Path, name: str) -> dict:
        path = files / f"{name}.npz"
        return {"apiVersion": "jointserve.io/v1alpha1", "kind": "Dataset",
                "metadata": {"name": name},
                "spec": {"url": path.as_uri(), "sha256sum": _sha256(path), "format": "npz",
                         "npz": {"labelsArray": "y"}}}

    def _operator(self):
        settings = ServeSettings(store_root=str(self.state / "store"))
        return directory_operator(self.resources, self.state, FakeBackend(), settings,
                                  "http://127.0.0.1:1")

    def apply(self) -> None:
        (self.resources / "job.yaml").write_text(yaml.safe_dump_all(self.docs, sort_keys=False))

    def restart(self) -> None:
        """As a killed operator's successor: the old one's runs end, a new one starts over
        the same state dir."""
        self.operator.reconciler.close()
        self.operator = self._operator()

    def status(self) -> dict:
        return (self.operator.statuses.read(TM) or {}).get("status") or {}

    def until(self, check, what: str) -> dict:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            self.operator.step()
            if check(self.status()):
                return self.status()
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {self.status()}")

    def rounds_started(self) -> list[int]:
        return [int(line) for line in self.log.read_text().split()] if self.log.exists() else []

    def published(self) -> list[Path]:
        return sorted((self.resources / PUBLISHED_DIR).glob("*.yaml"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trainers_alive() -> list:
    """The worker actors' processes (Ray titles an actor's process `ray::<class>...`)."""
    return processes_matching("ray::EdgeTrainer")


@pytest.fixture
def job(serve_backend: object, example: Path, tmp_path: Path) -> Iterator[Job]:
    assert ray.is_initialized()
    job = Job(tmp_path, example)
    yield job
    job.operator.reconciler.close()


def test_a_restarted_operator_resumes_the_job_from_its_last_round(job: Job) -> None:
    job.apply()
    job.until(lambda s: s.get("round") == GATE_ROUND, f"round {GATE_ROUND} done")
    before = job.status()["history"]
    job.restart()
    job.gate.touch()
    status = job.until(lambda s: s.get("phase") == "Succeeded", "the job done")
    assert [r["round"] for r in status["history"]] == list(range(1, ROUNDS + 1))
    assert status["history"][:GATE_ROUND] == before
    # Each worker trained rounds 0..2 once: the new operator started from round 3.
    started = job.rounds_started()
    assert all(started.count(r) == 2 for r in range(GATE_ROUND)), started
    assert status["publishedVersion"] and len(job.published()) == 1


def test_a_job_deleted_while_running_stops_its_actors_and_publishes_nothing(job: Job) -> None:
    job.apply()
    job.until(lambda s: s.get("round") == GATE_ROUND, f"round {GATE_ROUND} done")
    assert len(_trainers_alive()) >= 2
    (job.resources / "job.yaml").write_text(yaml.safe_dump_all(job.docs[:-1]))
    job.operator.step()
    assert job.status() == {}
    deadline = time.monotonic() + 30
    while _trainers_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _trainers_alive() == []
    job.gate.touch()  # even let loose, nothing of the job runs on
    time.sleep(1.0)
    job.operator.step()
    assert job.published() == [] and max(job.rounds_started()) == GATE_ROUND


@pytest.mark.parametrize("fail,sha256,why", [
    ("no GPU on this edge box", None, "RuntimeError: no GPU on this edge box"),
    ("", "ab" * 32, "sha256"),
])
def test_a_job_that_cannot_train_fails_with_the_reasons_and_publishes_nothing(
        serve_backend: object, example: Path, tmp_path: Path, fail: str, sha256: str | None,
        why: str) -> None:
    job = Job(tmp_path, example, fail=fail, sha256=sha256)
    try:
        job.apply()
        status = job.until(lambda s: s.get("phase") == "Failed", "the job Failed")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False" and ready["reason"] == "TrainingFailed"
        assert why in ready["message"]
        if fail:
            assert "edge-0" in ready["message"] and "edge-1" in ready["message"]
        else:
            assert job.rounds_started() == []  # refused before anything ran
        assert job.published() == [] and "publishedVersion" not in status
    finally:
        job.operator.reconciler.close()

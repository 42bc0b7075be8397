"""The digits example's federated job end to end, on the session's operator and real Ray.

The TrainingModel `digits-fl` (examples/digits/federated/) runs a few rounds over its four
edge workers' Datasets; its result is published as a version of `digits-edge` and rolled
out while 8 clients keep calling `digits-edge`: no request may fail, and the new version
must answer. `jointserve get tm` shows the job the way a user sees it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from jointserve.operator._published import PUBLISHED_DIR
from tests._harness import EDGE, OperatorHarness
from tests._load import Load

TM = "TrainingModel"
JOB = "digits-fl"
ROUNDS = 5  # the example runs 30; a few show the rounds, the publish and the rollout


def _job_docs(harness: OperatorHarness, example: Path) -> list[dict[str, Any]]:
    """The example's job and the test Dataset it evaluates on, served by the test's server."""
    docs = list(yaml.safe_load_all((example / "federated" / "digits-federated.yaml").read_text()))
    docs += [d for d in yaml.safe_load_all((example / "digits-datasets.yaml").read_text())
             if d["metadata"]["name"] == "digits-test-npz"]
    for doc in docs:
        files = [doc["spec"]] if doc["kind"] == "Dataset" else [
            doc["spec"]["trainingScript"], doc["spec"]["initialWeights"]]
        for file in files:
            name = file["url"].rsplit("/", 1)[1]
            shutil.copy(example / "archives" / name, harness.archive_server.root / name)
            file["url"] = harness.archive_server.url(name)
        if doc["kind"] == TM:
            doc["spec"]["aggregation"]["rounds"] = ROUNDS
    return docs


@pytest.fixture
def federated_job(harness: OperatorHarness, example: Path, edge_on_v1: dict) -> Iterator[Path]:
    """The job's file in the operator's directory; afterwards the job, its Datasets and the
    version it published are gone (edge_on_v1 then puts digits-edge back on v1)."""
    path = harness.resources / "digits-federated.yaml"
    yield path
    path.unlink(missing_ok=True)
    shutil.rmtree(harness.resources / PUBLISHED_DIR, ignore_errors=True)
    harness.wait_for(lambda: not harness.status(JOB, TM), "the TrainingModel's status removed")


def _published(harness: OperatorHarness) -> str | None:
    status = harness.status(JOB, TM)
    ready = harness.condition(JOB, "Ready", TM)
    assert ready.get("reason") != "TrainingFailed", status
    return status.get("publishedVersion") if ready.get("reason") == "Published" else None


def test_the_digits_federated_job_trains_publishes_and_rolls_out_without_a_failed_request(
        harness: OperatorHarness, example: Path, federated_job: Path) -> None:
    samples = np.load(example / "samples.npz")
    docs = _job_docs(harness, example)
    with Load(harness, EDGE, samples["X"]) as load:
        harness.wait_for(lambda: load.seen(lambda p: p.get("model_version") == "v1"),
                         "answers from digits-edge v1")
        federated_job.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        version = harness.wait_for(lambda: _published(harness), "the job published", 300)
        harness.wait_for(lambda: load.seen(lambda p: p.get("model_version") == version),
                         f"answers from digits-edge {version}")
    assert load.failures() == []
    assert {p.get("model_version") for _, p in load.outcomes} == {"v1", version}

    status = harness.status(JOB, TM)
    assert status["phase"] == "Succeeded" and status["round"] == ROUNDS
    assert version.startswith("fl-") and status["publishedSha256"]
    history = status["history"]
    assert [r["round"] for r in history] == list(range(1, ROUNDS + 1))
    workers = ["edge-0", "edge-1", "edge-2", "edge-3"]
    assert all(r["participants"] == workers and r["samples"] == 1347 for r in history)
    # Non-IID workers alone score far lower on the test split; the aggregate learns.
    assert history[-1]["evalAccuracy"] > 0.8 > history[0]["evalAccuracy"]
    assert all(w["samples"] > 0 and w["lastRound"] == ROUNDS and w["node"]
               for w in status["workers"])

    # The served version is the job's model: it reads the test split about as well as
    # the evaluation said.
    body = {"inputs": [{"name": "input", "shape": [200, 64], "datatype": "FP32",
                        "data": samples["X"][:200].ravel().tolist()}]}
    answer = harness.infer(EDGE, body).json()
    assert answer["model_version"] == version
    labels = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
    assert np.mean(np.array(labels) == samples["y"][:200]) > 0.8

    shown = subprocess.run([sys.executable, "-m", "jointserve", "get", "tm", "--state-dir",
                            str(harness.state)], capture_output=True, text=True, check=True)
    line = next(x for x in shown.stdout.splitlines() if x.startswith(JOB))
    assert f"{ROUNDS}/{ROUNDS}" in line and "4/4" in line and version in line, shown.stdout
    print(shown.stdout)

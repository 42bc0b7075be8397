"""The TrainingModel resource: what a valid job looks like, and bad ones refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from jointserve.api import ResourceError, TrainingModel, parse_resource

SHA = "a" * 64


def training_doc(**spec: Any) -> dict[str, Any]:
    doc = {"apiVersion": "jointserve.io/v1alpha1", "kind": "TrainingModel",
           "metadata": {"name": "digits-fl"},
           "spec": {"trainingScript": {"url": "http://h/softmax_regression.py", "sha256sum": SHA},
                    "initialWeights": {"url": "http://h/initial-weights.npz", "sha256sum": SHA},
                    "workers": [{"name": f"edge-{k}", "dataset": f"worker-{k}",
                                 "nodeSelector": {"zone": f"z{k}"}} for k in range(4)],
                    "aggregation": {"rounds": 5, "minParticipants": 3},
                    "evaluation": {"dataset": "eval"},
                    "publish": {"inferenceModel": "digits-edge", "rollout": True}}}
    doc["spec"].update(spec)
    return doc


def test_a_valid_job_parses_with_its_defaults() -> None:
    job = parse_resource(training_doc(), "tm.yaml")
    assert isinstance(job, TrainingModel)
    spec = job.spec
    assert [w.dataset for w in spec.workers] == ["worker-0", "worker-1", "worker-2", "worker-3"]
    assert spec.aggregation.algorithm == "FedAvg" and spec.aggregation.mu() == 0.0
    assert spec.aggregation.roundTimeoutSeconds == 300 and spec.training.epochs == 1
    assert spec.publish is not None and spec.publish.versionPrefix == "fl"
    prox = parse_resource(training_doc(aggregation={"algorithm": "FedProx"}), "tm.yaml")
    assert prox.spec.aggregation.mu() == 0.01  # FedProx's default proximal weight


@pytest.mark.parametrize("spec, words", [
    ({"aggregation": {"minParticipants": 5}},
     "minParticipants must not exceed the number of workers (5 > 4)"),
    ({"workers": [{"name": "a", "dataset": "x"}, {"name": "a", "dataset": "y"}]},
     "worker names must be unique"),
    ({"aggregation": {"proximalMu": 0.1}}, "proximalMu is for algorithm FedProx"),
    ({"workers": []}, "spec.workers"),
    ({"trainingScript": {"url": "http://h/s.py", "sha256sum": "abc"}},
     "spec.trainingScript.sha256sum"),
    ({"aggregation": {"rounds": 0}}, "spec.aggregation.rounds"),
], ids=["too-few-workers", "duplicate-worker", "mu-without-fedprox", "no-workers", "bad-sha",
        "zero-rounds"])
def test_bad_jobs_are_refused_naming_the_field(spec: dict, words: str) -> None:
    with pytest.raises(ResourceError) as info:
        parse_resource(training_doc(**spec), "tm.yaml")
    assert words in str(info.value), str(info.value)

"""Calibrating a service's offload budget on a Dataset: the cut, and what it is expected to give.

    samples -> JointModel with the policy scoring only (no cloud call) -> a score per sample
            -> routing.cutoff_for(scores, budget.cloudRatio)        -> the cut
            -> each tier alone on the samples                       -> expected accuracy, PGR

The expected figures weigh each sample by the chance the cut sends it to the cloud (1 above
the threshold, `at_threshold` at it, 0 below), so they are what the gateway gives on the
Dataset in expectation, whatever the ties.
"""

from __future__ import annotations

import numpy as np

from jointserve.api import Calibration, JointInferenceServiceSpec, now_rfc3339
from jointserve.protocol import LoadedModel
from jointserve.routing import Cutoff, RouterModel, ScoreOnly, build_policy, cutoff_for

from ._errors import EvaluationError
from ._run import (
    CloudTier,
    DatasetRef,
    Progress,
    pgr,
    run_service,
    settings_digest,
)
from ._samples import Samples


def calibration_digest(spec: JointInferenceServiceSpec, router_sha256: str | None = None) -> str:
    """What decides a calibration besides the versions and the data: the policy and its
    parameters, the output it judges, the steps, the budget, and the router scoring (a
    trained one is not in the spec: a new one is a new score scale)."""
    hem = spec.hardExampleMining
    settings = {"hem": hem.model_dump(mode="json"),
                "pre": [s.model_dump(mode="json") for s in spec.preprocess],
                "post": [s.model_dump(mode="json") for s in spec.postprocess]}
    if router_sha256 is not None:
        settings["router"] = router_sha256
    return settings_digest(settings)


def cutoff_of(calibration: Calibration) -> Cutoff:
    return Cutoff(calibration.threshold, calibration.atThreshold)


def calibrate_service(name: str, spec: JointInferenceServiceSpec, edge: LoadedModel,
                      cloud: CloudTier, samples: Samples, dataset: DatasetRef,
                      digest: str = "", progress: Progress | None = None,
                      router: RouterModel | None = None) -> Calibration:
    """The cut of `spec`'s policy score that sends budget.cloudRatio of `samples` to the cloud."""
    hem = spec.hardExampleMining
    assert hem.budget is not None
    if len(samples) == 0:
        raise EvaluationError("InputsRejected", f"dataset {dataset.name} has no samples to "
                              "calibrate on")
    policy = ScoreOnly(build_policy(hem.name, hem.parameters, router))
    run = run_service(name, spec, edge, cloud, samples, dataset, policy, progress)
    scores = np.asarray(run.scores, dtype=np.float64)
    try:
        cutoff = cutoff_for(scores, hem.budget.cloudRatio)
    except ValueError as exc:
        raise EvaluationError("InputsRejected", f"policy {hem.name}: {exc}") from None
    share = cutoff.hard_share(scores)
    expected = _expected_accuracy(samples, run.alone, share) if not run.detection else {}
    return Calibration(
        policy=hem.name, threshold=cutoff.threshold, atThreshold=cutoff.at_threshold,
        budget=hem.budget.cloudRatio, cloudRatio=float(share.mean()),
        dataset=dataset.name, datasetSha256=dataset.sha256, samples=len(samples),
        edgeVersion=edge.version, cloudVersion=run.cloud_version, settingsDigest=digest,
        calibratedAt=now_rfc3339(), distinctScores=int(np.unique(scores).size), **expected)


def _expected_accuracy(samples: Samples, alone: dict[str, list],
                       share: np.ndarray) -> dict[str, float | None]:
    """Accuracy of each tier alone and, in expectation, of the cut; and its PGR."""
    if not samples.labels:
        return {}
    truth = np.asarray(samples.labels, dtype=object)
    edge_right = np.asarray(alone["edge"], dtype=object) == truth
    cloud_right = np.asarray(alone["cloud"], dtype=object) == truth
    joint = float(np.mean(share * cloud_right + (1 - share) * edge_right))
    edge, cloud = float(edge_right.mean()), float(cloud_right.mean())
    return {"accuracy": joint, "edgeAccuracy": edge, "cloudAccuracy": cloud,
            "pgr": pgr(joint, edge, cloud)}

"""Offload budgets in the reconcile pass: calibrate, report, and hand the cut to the gateway.

    hardExampleMining.budget + its Dataset
        -> a calibration job in the Evaluator's worker (evaluation.calibrate_service)
        -> status.calibration and the Calibrated condition
        -> the next pass plans the gateway with that cut (GatewayConfig.calibration), which
           Serve hands to the running replicas through reconfigure: no restart, no failed request

A calibration is decided by the edge version, the Dataset's sha256 and the settings digest
(policy, parameters, output, steps, budget); the cloud does not move the cut, only the
expected accuracy it reports. Until a service is calibrated the policy's own threshold
applies; after a change (a new edge version, a new Dataset) the last cut of the same policy
applies until the new one is ready.
"""

from __future__ import annotations

from jointserve.api import (
    Calibration,
    Condition,
    ConditionType,
    JointInferenceService,
    JointInferenceServiceSpec,
    Reason,
    ResourceKey,
    set_condition,
)
from jointserve.evaluation import calibrate_service, calibration_digest, load_samples
from jointserve.store import ArtifactStore

from ._evaluations import (
    DatasetFile,
    EvaluationJob,
    EvaluationState,
    Progress,
    calibration_summary,
    load_app,
)
from ._routers import RouterArtifact, load_router
from ._serve_config import ModelApp

CalibrationKey = tuple[str, str, str, str]  # edge version, dataset, its sha256, digest


def applied_calibration(spec: JointInferenceServiceSpec, saved: Calibration | None,
                        router: RouterArtifact | None = None) -> Calibration | None:
    """The cut the gateway applies: the last calibration of this policy (and of this
    LearnedRouter's router), while a budget is set (a cut is on one score scale,
    meaningless for another)."""
    hem = spec.hardExampleMining
    if hem.budget is None or saved is None or saved.policy != hem.name:
        return None
    if saved.routerSha256 != (router.sha256 if router is not None else None):
        return None
    return saved


def calibration_key(calibration: Calibration) -> CalibrationKey:
    return (calibration.edgeVersion, calibration.dataset, calibration.datasetSha256,
            calibration.settingsDigest)


def calibration_job(store: ArtifactStore, key: ResourceKey, service: JointInferenceService,
                    edge: ModelApp, cloud: ModelApp | str, data: DatasetFile,
                    router: RouterArtifact | None = None) -> tuple[EvaluationJob, CalibrationKey]:
    """The job calibrating `service`'s budget over its verified edge version."""
    spec = service.spec
    assert spec.hardExampleMining.budget is not None
    assert data.ref is not None and data.path is not None and data.dataset is not None
    digest = calibration_digest(spec, router.sha256 if router is not None else None)
    dataset_spec, path, ref = data.dataset.spec, data.path, data.ref

    def run(progress: Progress) -> Calibration:
        cloud_tier = cloud if isinstance(cloud, str) else load_app(store, cloud)
        samples = load_samples(path, dataset_spec)
        found = calibrate_service(key[2], spec, load_app(store, edge), cloud_tier, samples, ref,
                                  digest, progress, load_router(store, router))
        return found.model_copy(update={"routerSha256": router.sha256 if router else None})

    cloud_id = (cloud,) if isinstance(cloud, str) else (cloud.version, cloud.sha256)
    label = (f"{spec.hardExampleMining.name} of {edge.model_name} {edge.version} on "
             f"{ref.name} for {spec.hardExampleMining.budget.cloudRatio:.0%} to the cloud")
    identity = ("calibration", key, edge.version, edge.sha256, *cloud_id, ref.sha256, digest)
    return (EvaluationJob(identity, label, run, calibration=True),
            (edge.version, ref.name, ref.sha256, digest))


def known_calibration(saved: Calibration | None, wanted: CalibrationKey) -> EvaluationState | None:
    """The Calibrated state of the saved calibration, if it is the one wanted."""
    if saved is None or calibration_key(saved) != wanted:
        return None
    return EvaluationState("True", Reason.CALIBRATED,
                           f"{saved.policy} of {saved.edgeVersion} on {saved.dataset}: "
                           f"{calibration_summary(saved)}", calibration=saved)


def calibrated(conditions: list[Condition], saved: Calibration | None,
               state: EvaluationState | None, generation: int | None
               ) -> tuple[list[Condition], Calibration | None]:
    """`conditions` with the Calibrated condition of `state`, and the calibration to report:
    the new one, else the saved one (a failed calibration keeps the last good cut). No state
    (no budget): neither the condition nor a calibration."""
    if state is None:
        return [c for c in conditions if c.type != ConditionType.CALIBRATED], None
    conditions = set_condition(conditions, ConditionType.CALIBRATED, state.status, state.reason,
                               state.message, generation)
    return conditions, state.calibration or saved

"""hardExampleMining.train in the reconcile pass: the operator trains the LearnedRouter.

    hardExampleMining.train {dataset, inputs, seed} + the Dataset + the verified edge (and
    cloud) versions
        -> a training job in the Evaluator's worker (evaluation.train_router, as `jointserve
           train-router` runs it)
        -> status.router: the archive as a data: URL (a few KiB), its sha256, what it was
           trained on, how it did on held-out rows
        -> the next pass verifies it like any router archive (routers.RouterVerifier) and
           plans the gateway with it; Serve hands it to the replicas through reconfigure

The archive travels inside the Serve config, so every node reads it without a shared store
or a file server: embedded, Kubernetes and an exported RayService alike. A training is
decided by the edge and cloud versions, the Dataset's sha256 and the settings digest (the
train settings, the policy's output, the steps); the saved one is never run again, also
across an operator restart. A failed training keeps the last good router serving.
"""

from __future__ import annotations

import hashlib

from jointserve.api import JointInferenceService, Reason, RouterStatus
from jointserve.evaluation import load_samples, router_digest, train_router
from jointserve.store import ArtifactStore, data_url

from ._evaluations import DatasetFile, EvaluationJob, EvaluationState, Progress, load_app
from ._evaluations import router_summary
from ._serve_config import ModelApp

RouterKey = tuple[str, str, str, str, str]  # edge version, cloud version, dataset, sha, digest


def training_job(store: ArtifactStore, key: tuple[str, str, str], service: JointInferenceService,
                 edge: ModelApp, cloud: ModelApp | str, data: DatasetFile
                 ) -> tuple[EvaluationJob, RouterKey]:
    """The job training `service`'s router over its verified edge version and its cloud."""
    spec = service.spec
    train = spec.hardExampleMining.train
    assert train is not None
    assert data.ref is not None and data.path is not None and data.dataset is not None
    digest = router_digest(spec)
    dataset_spec, path, ref = data.dataset.spec, data.path, data.ref
    cloud_version = cloud if isinstance(cloud, str) else cloud.version

    def run(progress: Progress) -> RouterStatus:
        cloud_tier = cloud if isinstance(cloud, str) else load_app(store, cloud)
        trained = train_router(key[2], spec, load_app(store, edge), cloud_tier,
                               load_samples(path, dataset_spec), ref, seed=train.seed,
                               progress=progress, inputs=train.inputs)
        info, held = trained.info, trained.info["heldOut"]
        return RouterStatus(
            url=data_url(trained.archive), sha256=hashlib.sha256(trained.archive).hexdigest(),
            dataset=ref.name, datasetSha256=ref.sha256, samples=info["samples"],
            edgeVersion=edge.version, cloudVersion=cloud_version, settingsDigest=digest,
            trainedAt=info["trainedAt"], features=info["features"],
            inputFeatures=info["inputFeatures"], heldOutAuc=held["auc"],
            heldOutPgr=held["pgr"]["0.2"], heldOutMarginPgr=held["marginPgr"]["0.2"])

    cloud_id = (cloud,) if isinstance(cloud, str) else (cloud.version, cloud.sha256)
    label = f"a LearnedRouter for {edge.model_name} {edge.version} on {ref.name}"
    identity = ("router", key, edge.version, edge.sha256, *cloud_id, ref.sha256, digest)
    return (EvaluationJob(identity, label, run, training=True),
            (edge.version, cloud_version, ref.name, ref.sha256, digest))


def known_router(saved: RouterStatus | None, wanted: RouterKey) -> EvaluationState | None:
    """The state of the saved router, if it is the one wanted."""
    if saved is None or saved.key() != wanted:
        return None
    return EvaluationState("True", Reason.ROUTER_TRAINED,
                           f"a LearnedRouter for {saved.edgeVersion} on {saved.dataset}: "
                           f"{router_summary(saved)}", router=saved)

"""TrainingModels in the reconcile pass: start the federated job, report it, publish it.

    TrainingModel + its Datasets (counted, in the store)
        -> federated.FederatedRun (aggregator and worker actors on Ray; round state
           checkpointed under <state>/training/<namespace>.<name>/<job digest>/)
        -> status: phase, round, workers, history, conditions (each pass reads the run)
        -> Succeeded with spec.publish: the script's export of the final weights, packed and
           hashed, handed to the home's Publisher as version <prefix>-<digest[:8]> of the
           InferenceModel (and its targetVersion with publish.rollout):
             directory mode  _published.DirectoryPublisher: the archive under
                             <state>/published/, the version beside the user's YAML
             Kubernetes      _kube_published.KubePublisher: the archive in a ConfigMap the
                             operators serve over HTTP, the version a patch of the manifest

A job is decided by its spec (`job_digest`): a finished one is never run again, also across
a restart; a restarted operator resumes a running one from its last completed round (the
checkpoint). A TrainingModel deleted mid-job has its actors stopped and publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from jointserve.api import (
    ConditionType,
    Dataset,
    DatasetStatus,
    Evaluation,
    InferenceModel,
    Reason,
    ResourceKey,
    RoundMetrics,
    TrainingModel,
    TrainingModelStatus,
    WorkerStatus,
    now_rfc3339,
    set_condition,
)
from jointserve.store import ArtifactStore

from ._datasets import store_name
from ._evaluations import DatasetFile, dataset_file
from ._serve_config import LAYER_RESOURCE_PER_REPLICA, LAYER_RESOURCES

log = logging.getLogger(__name__)


def _placement() -> Any:
    """Workers on edge-layer nodes, the aggregator on a cloud-layer node: a sliver of the
    layer resource, as serving replicas ask (so training fits beside them)."""
    from jointserve.federated import Placement

    return Placement(edge={LAYER_RESOURCES["edge"]: LAYER_RESOURCE_PER_REPLICA},
                     cloud={LAYER_RESOURCES["cloud"]: LAYER_RESOURCE_PER_REPLICA})


class PublishError(Exception):
    """The result could not be added to its InferenceModel (the message says why)."""


class Publisher(Protocol):
    """Where a home puts a finished job's archive and how it adds the version to the
    InferenceModel: _published.DirectoryPublisher, _kube_published.KubePublisher."""

    def publish(self, key: ResourceKey, version: str, archive: bytes, sha256: str,
                training: str, rollout: bool) -> str:
        """Store `archive`, add `version` (at the returned URL) to InferenceModel `key`, and
        make it the targetVersion if `rollout`; PublishError if it cannot."""
        ...


def job_digest(job: TrainingModel) -> str:
    """What decides a job: its whole spec (a changed spec is a new job)."""
    text = json.dumps(job.spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TrainingJobs:
    """The federated runs of this operator, one per TrainingModel."""

    def __init__(self, store: ArtifactStore, state_dir: Path, publisher: Publisher) -> None:
        self.store = store
        self.state_dir = state_dir
        self.publisher = publisher
        # key -> (job digest, federated.FederatedRun, the job's class names)
        self._runs: dict[ResourceKey, tuple[str, Any, list[str]]] = {}

    def status(self, key: ResourceKey, job: TrainingModel,
               resources: Mapping[ResourceKey, object],
               datasets: Mapping[ResourceKey, DatasetStatus],
               saved: TrainingModelStatus) -> TrainingModelStatus:
        """Where the job stands, starting (or resuming) its run when it can."""
        digest = job_digest(job)
        generation = job.metadata.generation
        if saved.jobDigest == digest and saved.phase in ("Succeeded", "Failed"):
            self._stop(key)
            return saved  # finished: never run again
        status = saved if saved.jobDigest == digest else TrainingModelStatus(jobDigest=digest)
        status = status.model_copy(update={"rounds": job.spec.aggregation.rounds,
                                           "observedGeneration": generation})
        running = self._runs.get(key)
        if running is not None and running[0] != digest:
            self._stop(key)  # the spec changed: the old job goes, a new one starts
            running = None
        if running is None:
            files, problem = self._files(key, job, resources, datasets)
            if problem is not None:
                return _with_ready(status, "False", *problem, generation)
            classes = _classes(key, job, datasets)
            running = (digest, self._start(key, job, digest, files, classes), classes)
            self._runs[key] = running
        return self._report(key, job, running, status)

    def forget(self, keep: set[ResourceKey]) -> None:
        """Stop the runs of TrainingModels that are gone: their actors end, nothing is
        published."""
        for key in [k for k in self._runs if k not in keep]:
            self._stop(key)

    def close(self) -> None:
        self.forget(set())

    # -- starting -------------------------------------------------------------------------

    def _files(self, key: ResourceKey, job: TrainingModel,
               resources: Mapping[ResourceKey, object],
               datasets: Mapping[ResourceKey, DatasetStatus]
               ) -> tuple[dict[str, DatasetFile], tuple[str, str] | None]:
        """Each worker's (and the evaluation's) Dataset file, or the first problem."""
        files = {}
        for name in _dataset_names(job):
            data = dataset_file(self.store, key[1], Evaluation(dataset=name), resources,
                                datasets)
            if data.problem is not None:
                return {}, data.problem
            files[name] = data
        return files, None

    def _start(self, key: ResourceKey, job: TrainingModel, digest: str,
               files: Mapping[str, DatasetFile], classes: list[str]) -> Any:
        from jointserve.federated import FederatedRun, JobSpec, Placement, WorkerSpec

        spec = job.spec
        workers = [WorkerSpec(w.name, _source(key[1], files[w.dataset]), dict(w.nodeSelector))
                   for w in spec.workers]
        evaluation = (None if spec.evaluation is None
                      else _source(key[1], files[spec.evaluation.dataset]))
        run = FederatedRun(JobSpec(
            job_id=f"{key[1]}.{key[2]}.{digest}", script_url=spec.trainingScript.url,
            script_sha256=spec.trainingScript.sha256sum, weights_url=spec.initialWeights.url,
            weights_sha256=spec.initialWeights.sha256sum, workers=workers, classes=classes,
            rounds=spec.aggregation.rounds, min_participants=spec.aggregation.minParticipants,
            round_timeout_s=float(spec.aggregation.roundTimeoutSeconds),
            proximal_mu=spec.aggregation.mu(), epochs=spec.training.epochs,
            batch_size=spec.training.batchSize, learning_rate=spec.training.learningRate,
            seed=spec.training.seed, evaluation=evaluation, store_root=str(self.store.root)),
            self.state_dir / "training" / f"{key[1]}.{key[2]}" / digest, _placement())
        run.start()
        log.info("TrainingModel %s/%s: started job %s", key[1], key[2], digest)
        return run

    def _stop(self, key: ResourceKey) -> None:
        running = self._runs.pop(key, None)
        if running is not None:
            running[1].stop()

    # -- reporting ------------------------------------------------------------------------

    def _report(self, key: ResourceKey, job: TrainingModel, running: tuple[str, Any, list[str]],
                status: TrainingModelStatus) -> TrainingModelStatus:
        state = running[1].state()
        generation = job.metadata.generation
        status = status.model_copy(update={
            "phase": "Failed" if state.phase == "Stopped" else state.phase,
            "startedAt": status.startedAt or now_rfc3339(),
            "round": state.round,
            "workers": [WorkerStatus(name=w.name, node=w.node, samples=w.samples,
                                     lastRound=w.last_round, error=w.error)
                        for w in state.workers],
            "history": [_round_metrics(r) for r in state.history]})
        status = _at_a_glance(status, len(job.spec.workers))
        if state.phase in ("Pending", "Running"):
            return _with_ready(status, "Unknown", Reason.TRAINING,
                               f"round {state.round}/{state.rounds} done", generation)
        if state.phase != "Succeeded":
            return _with_ready(status, "False", Reason.TRAINING_FAILED,
                               state.error or "the job stopped", generation)
        published = self._publish(key, job, running, state, status)
        if published is None:  # a passing problem: the run's result is kept, next pass retries
            return _with_ready(status, "Unknown", Reason.TRAINING,
                               "trained; publishing (retrying)", generation)
        del self._runs[key]
        return published

    def _publish(self, key: ResourceKey, job: TrainingModel,
                 running: tuple[str, Any, list[str]], state: Any,
                 status: TrainingModelStatus) -> TrainingModelStatus | None:
        """The final status; None when publishing met a passing problem (the API busy)."""
        from jointserve.federated import export_archive, script_file

        generation = job.metadata.generation
        publish = job.spec.publish
        if publish is None:
            return _with_ready(status, "True", Reason.TRAINED,
                               f"{state.round} rounds; {_accuracy(status)}", generation)
        version = f"{publish.versionPrefix}-{status.jobDigest[:8]}"
        model_key = (InferenceModel.KIND, key[1], publish.inferenceModel)
        try:
            # The file the run verified before its first round (the same store, the same
            # name): no second download.
            script = script_file(self.store, running[1].spec)
            archive = export_archive(script, state.weights, running[2])
        except Exception as exc:  # noqa: BLE001 - the script's export: reported, not raised
            return _failed(status, f"export failed: {exc}", generation)
        sha256 = hashlib.sha256(archive).hexdigest()
        try:
            self.publisher.publish(model_key, version, archive, sha256, key[2], publish.rollout)
        except PublishError as exc:
            return _failed(status, f"publish failed: {exc}", generation)
        except Exception:  # noqa: BLE001 - the API unreachable, a conflict: tried again
            log.warning("TrainingModel %s/%s: publishing %s failed; retrying", key[1], key[2],
                        version, exc_info=True)
            return None
        status = status.model_copy(update={"publishedVersion": version,
                                           "publishedSha256": sha256})
        rolled = " and rolled out" if publish.rollout else ""
        return _with_ready(status, "True", Reason.PUBLISHED,
                           f"{state.round} rounds; {_accuracy(status)}; published as "
                           f"{publish.inferenceModel} {version}{rolled}", generation)


def _source(namespace: str, data: DatasetFile) -> Any:
    """The engine's view of a verified Dataset: each node fetches it into its own store."""
    from jointserve.federated import DatasetSource

    assert data.dataset is not None and data.ref is not None
    key = (Dataset.KIND, namespace, data.ref.name)
    return DatasetSource(store_name(key), data.dataset.spec.url, data.ref.sha256,
                         data.dataset.spec)


def _dataset_names(job: TrainingModel) -> list[str]:
    """The Datasets a job reads: every worker's, then the evaluation's."""
    names = [w.dataset for w in job.spec.workers]
    if job.spec.evaluation is not None:
        names.append(job.spec.evaluation.dataset)
    return names


def _classes(key: ResourceKey, job: TrainingModel,
             datasets: Mapping[ResourceKey, DatasetStatus]) -> list[str]:
    """The job's class names: those of every worker's and the evaluation's Dataset, sorted
    (numerically when all are integers, so "10" follows "9"); y indexes into them."""
    names: set[str] = set()
    for name in _dataset_names(job):
        status = datasets.get((Dataset.KIND, key[1], name))
        names |= set(status.classes) if status is not None else set()
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _round_metrics(record: Any) -> RoundMetrics:
    metrics = record.metrics
    return RoundMetrics(round=record.round, participants=list(record.participants),
                        samples=record.samples, loss=metrics.get("loss"),
                        accuracy=metrics.get("accuracy"), evalLoss=metrics.get("evalLoss"),
                        evalAccuracy=metrics.get("evalAccuracy"), dropped=dict(record.dropped))


def _last_accuracy(last: RoundMetrics) -> tuple[str, float] | None:
    """The round's evaluation accuracy, else the workers' own (no evaluation Dataset)."""
    if last.evalAccuracy is not None:
        return "evaluation accuracy", last.evalAccuracy
    return None if last.accuracy is None else ("workers' accuracy", last.accuracy)


def _at_a_glance(status: TrainingModelStatus, workers: int) -> TrainingModelStatus:
    if not status.history:
        return status
    last = status.history[-1]
    accuracy = _last_accuracy(last)
    return status.model_copy(update={"participants": f"{len(last.participants)}/{workers}",
                                     # 4 places: a column, not a measurement (history has it)
                                     "accuracy": None if accuracy is None
                                     else round(accuracy[1], 4)})


def _accuracy(status: TrainingModelStatus) -> str:
    if not status.history:
        return "no rounds"
    accuracy = _last_accuracy(status.history[-1])
    return "-" if accuracy is None else f"{accuracy[0]} {accuracy[1]:.4f}"


def _failed(status: TrainingModelStatus, message: str,
            generation: int | None) -> TrainingModelStatus:
    return _with_ready(status.model_copy(update={"phase": "Failed"}), "False",
                       Reason.TRAINING_FAILED, message, generation)


def _with_ready(status: TrainingModelStatus, state: str, reason: str, message: str,
                generation: int | None) -> TrainingModelStatus:
    conditions = set_condition(status.conditions, ConditionType.READY, state, reason, message,
                               generation)
    return status.model_copy(update={"conditions": conditions})


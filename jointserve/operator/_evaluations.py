"""spec.evaluation in the reconcile pass: evaluations run in a worker thread, the pass reads
where they are and writes it into the status.

    resource with spec.evaluation -> its Dataset (counted, verified file) + the verified
    version(s) in the store -> EvaluationJob -> Evaluator (one worker thread, one job at a
    time) -> ModelMetrics -> status.metrics, condition Evaluated

A pass never waits for an evaluation: it starts one and reports its progress (Evaluated
Unknown, "128/450 samples") until it is done. An evaluation is decided by the version(s), the
dataset's sha256 and the settings digest (`ModelMetrics.key`); one whose metrics the status
already holds is never run again, also across an operator restart. Serving is untouched by
whatever an evaluation finds: it only writes status.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jointserve.api import (
    Calibration,
    Condition,
    ConditionType,
    Dataset,
    DatasetStatus,
    Evaluation,
    InferenceModel,
    JointInferenceService,
    ModelMetrics,
    Reason,
    ResourceKey,
    RouterStatus,
    get_condition,
    set_condition,
    with_metrics,
)
from jointserve.evaluation import (
    DatasetRef,
    EvaluationError,
    TrainedRouter,
    evaluate_model,
    evaluate_service,
    load_samples,
    model_digest,
    service_digest,
    service_version,
    train_router,
)
from jointserve.protocol import LoadedModel
from jointserve.routing import Cutoff
from jointserve.store import ArtifactError, ArtifactStore

from ._datasets import DatasetCounter, dataset_status, store_name
from ._joint import remote_infer_url
from ._routers import RouterArtifact, load_router
from ._serve_config import ModelApp

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class EvaluationState:
    """Where one resource's evaluation stands: its Evaluated condition, and the metrics of
    a finished one."""

    status: ConditionStatus
    reason: str
    message: str
    metrics: ModelMetrics | None = None
    calibration: Calibration | None = None  # a calibration job's result
    router: RouterStatus | None = None  # a router training job's result


EXIT_WAIT_S = 60.0  # how long an exiting operator waits for the job it is running

# What a job gives: an evaluation's metrics, a calibration (hardExampleMining.budget), or a
# trained router (hardExampleMining.train).
JobResult = ModelMetrics | Calibration | RouterStatus


@dataclass(frozen=True)
class EvaluationJob:
    """One evaluation (or calibration) to run: `identity` decides it, `label` names it in
    messages."""

    identity: Hashable
    label: str
    run: Callable[[Progress], JobResult]
    calibration: bool = False  # a calibration: its state says Calibrating, not Evaluating
    training: bool = False  # a router training: its state says TrainingRouter


class _Running:
    """One job's progress and, once it ended, its result or error."""

    def __init__(self, job: EvaluationJob) -> None:
        self.job = job
        self.done = 0
        self.total = 0
        self.ended = threading.Event()
        self.result: JobResult | None = None
        self.error: BaseException | None = None
        self.cancelled = False  # nobody wants it any more: skipped if not started

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def run(self) -> None:
        if self.cancelled:
            return
        try:
            self.result = self.job.run(self.progress)
        except BaseException as exc:  # noqa: BLE001 - reported in the status, never lost
            self.error = exc
        finally:
            self.ended.set()


class Evaluator:
    """Runs evaluation jobs one at a time in a daemon worker thread, off the reconcile pass
    (one at a time: on an edge box the operator shares two cores with the serving replicas).
    A daemon thread, not a ThreadPoolExecutor: an evaluation in progress must not hold up
    the operator's exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[Hashable, _Running] = {}
        self._queue: queue.SimpleQueue[_Running | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None

    def state(self, job: EvaluationJob) -> EvaluationState:
        """The job's state, starting it if it is new."""
        with self._lock:
            running = self._jobs.get(job.identity)
            if running is None:
                running = self._jobs[job.identity] = _Running(job)
                self._queue.put(running)
                self._start_worker()
        if not running.ended.is_set():
            shown = f"{running.done}/{running.total} samples" if running.total else "queued"
            reason, verb = ((Reason.CALIBRATING, "calibrating") if job.calibration
                            else (Reason.TRAINING_ROUTER, "training") if job.training
                            else (Reason.EVALUATING, "evaluating"))
            return EvaluationState("Unknown", reason, f"{verb} {job.label}: {shown}")
        exc = running.error
        if isinstance(exc, EvaluationError):
            return EvaluationState("False", exc.reason, f"{job.label}: {exc.detail}")
        if exc is not None:
            log.error("evaluation of %s failed", job.label, exc_info=exc)
            return EvaluationState("False", Reason.EVALUATION_FAILED,
                                   f"{job.label}: the evaluation failed: {exc}")
        result = running.result
        if isinstance(result, RouterStatus):
            return EvaluationState("True", Reason.ROUTER_TRAINED,
                                   f"{job.label}: {router_summary(result)}", router=result)
        if isinstance(result, Calibration):
            return EvaluationState("True", Reason.CALIBRATED, f"{job.label}: "
                                   f"{calibration_summary(result)}", calibration=result)
        assert result is not None
        return EvaluationState("True", Reason.EVALUATED, f"{job.label}: {_summary(result)}",
                               result)

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="evaluation", daemon=True)
            self._worker.start()
            # A daemon thread still inside onnxruntime or scikit-learn when the interpreter
            # finalises aborts the process (SIGABRT, exit 134). At exit, skip what is queued
            # and let the running job end, for a bounded time.
            atexit.register(self._drain, EXIT_WAIT_S)

    def _drain(self, timeout_s: float) -> None:
        with self._lock:
            for running in self._jobs.values():
                running.cancelled = True
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout_s)

    def _work(self) -> None:
        while (running := self._queue.get()) is not None:
            running.run()

    def forget(self, keep: set[Hashable]) -> None:
        """Drop finished jobs not in `keep` (resources gone or moved on)."""
        with self._lock:
            for identity in [i for i in self._jobs if i not in keep]:
                self._jobs.pop(identity).cancelled = True

    def close(self) -> None:
        """Let the worker end after the job it is running."""
        self._queue.put(None)


def router_summary(router: RouterStatus) -> str:
    """A trained router in a few words: its features and how it did on held-out rows."""
    read = (f"{router.features - router.inputFeatures} probability features"
            + (f" + {router.inputFeatures} input values" if router.inputFeatures else ""))
    parts = [read]
    if router.heldOutAuc is not None:
        parts.append(f"held-out AUC {router.heldOutAuc:.3f}")
    if router.heldOutPgr is not None:
        margin = (f" (Margin {router.heldOutMarginPgr:.3f})"
                  if router.heldOutMarginPgr is not None else "")
        parts.append(f"PGR@20% {router.heldOutPgr:.3f}{margin}")
    return ", ".join(parts)


def calibration_summary(calibration: Calibration) -> str:
    parts = [f"cut {calibration.threshold:.4g}"
             + (f" ({calibration.atThreshold:.0%} of ties)" if calibration.atThreshold else ""),
             f"cloud {calibration.cloudRatio:.1%} of {calibration.samples} samples "
             f"(budget {calibration.budget:.1%})"]
    if calibration.accuracy is not None:
        parts.append(f"expected accuracy {calibration.accuracy:.4f}")
    if calibration.pgr is not None:
        parts.append(f"PGR {calibration.pgr:.2f}")
    return ", ".join(parts)


def _summary(metrics: ModelMetrics) -> str:
    parts = [f"accuracy {metrics.accuracy:.4f}" if metrics.accuracy is not None else "",
             f"macro F1 {metrics.macroF1:.4f}" if metrics.macroF1 is not None else "",
             f"mAP@0.5 {metrics.mAP50:.4f}" if metrics.mAP50 is not None else "",
             f"cloud {metrics.cloudRatio:.1%}" if metrics.cloudRatio is not None else "",
             f"PGR {metrics.pgr:.2f}" if metrics.pgr is not None else ""]
    return ", ".join(p for p in parts if p) + f" ({metrics.samples} samples)"


# -- what to evaluate -------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetFile:
    """A Dataset as an evaluation reads it: its verified local file, or why there is none."""

    ref: DatasetRef | None
    dataset: Dataset | None
    path: Path | None
    problem: tuple[str, str] | None  # (reason, message)


def dataset_file(store: ArtifactStore, namespace: str, evaluation: Evaluation,
                 resources: Mapping[ResourceKey, object],
                 statuses: Mapping[ResourceKey, DatasetStatus]) -> DatasetFile:
    """The Dataset `evaluation` names, counted and in the store; else the problem."""
    key = (Dataset.KIND, namespace, evaluation.dataset)
    dataset = resources.get(key)
    if not isinstance(dataset, Dataset):
        return DatasetFile(None, None, None, (Reason.DATASET_NOT_FOUND,
                           f"evaluation.dataset {evaluation.dataset!r}: no Dataset of that name "
                           f"in namespace {namespace}"))
    status = statuses.get(key) or DatasetStatus()
    path = store.file_path(store_name(key), dataset.spec.url, status.sha256) if status.sha256 else None
    if path is None or not path.is_file():
        ready = get_condition(status.conditions, ConditionType.READY)
        why = ready.message if ready is not None else "not counted yet"
        return DatasetFile(None, dataset, None, (Reason.DATASET_NOT_READY,
                           f"dataset {evaluation.dataset} is not ready: {why}"))
    return DatasetFile(DatasetRef(evaluation.dataset, status.sha256), dataset, path, None)


def model_job(store: ArtifactStore, key: ResourceKey, model: InferenceModel, app: ModelApp,
              data: DatasetFile) -> tuple[EvaluationJob, tuple[str, str, str, str]]:
    """The job evaluating `app` (the verified target version) of `model`, and its metrics key."""
    evaluation = model.spec.evaluation
    assert evaluation is not None and data.ref is not None and data.path is not None
    assert data.dataset is not None
    info = model.spec.metadata.model_dump(exclude_none=True) if model.spec.metadata else None
    digest = model_digest(evaluation, info)
    spec, path, ref = data.dataset.spec, data.path, data.ref

    def run(progress: Progress) -> ModelMetrics:
        loaded = LoadedModel.load(app.model_name, app.version,
                                  store.path_for(app.model_name, app.version), info)
        samples = load_samples(path, spec)
        return evaluate_model(loaded, samples, evaluation, ref, digest, progress)

    label = f"{app.version} on {evaluation.dataset}"
    identity = (key, app.version, app.sha256, ref.sha256, digest)
    return EvaluationJob(identity, label, run), (app.version, ref.name, ref.sha256, digest)


def service_job(store: ArtifactStore, key: ResourceKey, service: JointInferenceService,
                edge: ModelApp, cloud: ModelApp | str, data: DatasetFile,
                cutoff: Cutoff | None = None, router: RouterArtifact | None = None
                ) -> tuple[EvaluationJob, tuple[str, str, str, str]]:
    """The job evaluating `service` over its verified edge version and its cloud: a verified
    version, or the infer URL of a remote one (cloudModel.url). `cutoff`: the calibrated cut
    the gateway applies (status.calibration), if there is one."""
    spec = service.spec
    evaluation = spec.evaluation
    assert evaluation is not None and data.ref is not None and data.path is not None
    assert data.dataset is not None
    edge_info = edge.info.model_dump(exclude_none=True) if edge.info else None
    digest = service_digest(spec, edge_info, cutoff, router.sha256 if router is not None else None)
    dataset_spec, path, ref = data.dataset.spec, data.path, data.ref

    def run(progress: Progress) -> ModelMetrics:
        edge_model = load_app(store, edge)
        cloud_tier = cloud if isinstance(cloud, str) else load_app(store, cloud)
        samples = load_samples(path, dataset_spec)
        return evaluate_service(key[2], spec, edge_model, cloud_tier, samples, ref, digest,
                                progress, cutoff, load_router(store, router))

    if isinstance(cloud, str):
        version, cloud_id, cloud_label = service_version(edge.version, None), (cloud,), cloud
    else:
        version = service_version(edge.version, cloud.version)
        cloud_id = (cloud.version, cloud.sha256)
        cloud_label = f"{cloud.model_name} {cloud.version}"
    label = f"{edge.model_name} {edge.version} + {cloud_label} on {evaluation.dataset}"
    identity = (key, edge.version, edge.sha256, *cloud_id, ref.sha256, digest)
    return EvaluationJob(identity, label, run), (version, ref.name, ref.sha256, digest)


def load_app(store: ArtifactStore, app: ModelApp) -> LoadedModel:
    """The verified version `app` names, loaded from `store` as a replica loads it."""
    info = app.info.model_dump(exclude_none=True) if app.info else None
    return LoadedModel.load(app.model_name, app.version,
                            store.path_for(app.model_name, app.version), info)


# -- into the status ------------------------------------------------------------------------


def evaluated(conditions: list[Condition], metrics: list[ModelMetrics],
              states: list[EvaluationState], generation: int | None
              ) -> tuple[list[Condition], list[ModelMetrics]]:
    """`conditions` and `metrics` with `states` applied (the first is spec.evaluation's, whose
    metrics end up first). No states (nothing to evaluate) drops the Evaluated condition and
    keeps the metrics measured before."""
    if not states:
        return [c for c in conditions if c.type != ConditionType.EVALUATED], metrics
    for state in reversed(states):
        if state.metrics is not None:
            metrics = with_metrics(metrics, state.metrics)
    # One condition for all: not done while any runs, False when any failed.
    worst = (next((s for s in states if s.status == "Unknown"), None)
             or next((s for s in states if s.status == "False"), None) or states[0])
    message = "; ".join(s.message for s in states)
    return set_condition(conditions, ConditionType.EVALUATED, worst.status, worst.reason,
                         message, generation), metrics


def known(metrics: list[ModelMetrics], key: tuple[str, str, str, str]) -> EvaluationState | None:
    """The Evaluated state of metrics the status already holds for `key`, if it does."""
    found = next((m for m in metrics if m.key() == key), None)
    if found is None:
        return None
    return EvaluationState("True", Reason.EVALUATED,
                           f"{found.version} on {found.dataset}: {_summary(found)}", found)


def not_evaluable(reason: str, message: str) -> EvaluationState:
    return EvaluationState("False", reason, message)


# -- once, from the command line --------------------------------------------------------------


def evaluate_once(resources: Mapping[ResourceKey, object], target: ResourceKey,
                  store: ArtifactStore, progress: Progress | None = None) -> ModelMetrics:
    """Evaluate `target` (an InferenceModel or JointInferenceService with spec.evaluation)
    now, in this thread: fetch and verify what it needs into `store`, count its Dataset, run.
    `jointserve evaluate` uses it; EvaluationError says what stands in the way."""
    resource = resources[target]
    assert isinstance(resource, (InferenceModel, JointInferenceService))
    evaluation = resource.spec.evaluation
    assert evaluation is not None
    data = _dataset_once(resources, target[1], evaluation, store)
    if isinstance(resource, InferenceModel):
        job, _ = model_job(store, target, resource, _fetched(store, resource), data)
    else:
        edge, cloud = _tiers_once(resources, target[1], resource, store)
        job, _ = service_job(store, target, resource, edge, cloud, data)
    result = job.run(progress or (lambda _done, _total: None))
    assert isinstance(result, ModelMetrics)
    return result


def train_router_once(resources: Mapping[ResourceKey, object], target: ResourceKey,
                      dataset: str, store: ArtifactStore, progress: Progress | None = None,
                      inputs: bool | None = None) -> TrainedRouter:
    """Train a LearnedRouter for the JointInferenceService `target` on Dataset `dataset`, now
    (`jointserve train-router`); `inputs` as train_router takes it."""
    service = resources[target]
    assert isinstance(service, JointInferenceService)
    data = _dataset_once(resources, target[1], Evaluation(dataset=dataset), store)
    assert data.dataset is not None and data.path is not None and data.ref is not None
    edge, cloud = _tiers_once(resources, target[1], service, store)
    cloud_tier = cloud if isinstance(cloud, str) else load_app(store, cloud)
    return train_router(target[2], service.spec, load_app(store, edge), cloud_tier,
                        load_samples(data.path, data.dataset.spec), data.ref, progress=progress,
                        inputs=inputs)


def _dataset_once(resources: Mapping[ResourceKey, object], namespace: str,
                  evaluation: Evaluation, store: ArtifactStore) -> DatasetFile:
    """The evaluation's Dataset, fetched and counted into `store` now."""
    dataset_key = (Dataset.KIND, namespace, evaluation.dataset)
    statuses: dict[ResourceKey, DatasetStatus] = {}
    dataset = resources.get(dataset_key)
    if isinstance(dataset, Dataset):
        outcome = DatasetCounter(store).count(dataset_key, dataset)
        if not outcome.ok:
            raise EvaluationError(outcome.reason, f"dataset {evaluation.dataset}: {outcome.message}")
        statuses[dataset_key] = dataset_status(dataset, outcome, DatasetStatus())
    data = dataset_file(store, namespace, evaluation, resources, statuses)
    if data.problem is not None:
        raise EvaluationError(*data.problem)
    return data


def _tiers_once(resources: Mapping[ResourceKey, object], namespace: str,
                service: JointInferenceService, store: ArtifactStore) -> tuple[ModelApp, ModelApp | str]:
    """The service's edge version and its cloud (a version, or a remote URL), fetched now."""
    edge = _model_named(resources, namespace, service.spec.edgeModel.name, "edgeModel")
    cloud_ref = service.spec.cloudModel
    cloud = (remote_infer_url(cloud_ref) if cloud_ref.url is not None else _fetched(
        store, _model_named(resources, namespace, cloud_ref.name, "cloudModel")))
    return _fetched(store, edge), cloud


def _model_named(resources: Mapping[ResourceKey, object], namespace: str, name: str | None,
                 role: str) -> InferenceModel:
    model = resources.get((InferenceModel.KIND, namespace, name or ""))
    if not isinstance(model, InferenceModel):
        raise EvaluationError(Reason.NOT_EVALUABLE, f"{role} {name!r}: no InferenceModel of that "
                              f"name in namespace {namespace}")
    return model


def _fetched(store: ArtifactStore, model: InferenceModel) -> ModelApp:
    """The model's target version, fetched and verified into `store`."""
    entry = model.spec.target_file()
    if entry is None:
        raise EvaluationError(Reason.NOT_EVALUABLE, f"{model.metadata.name}: spec.image models "
                              "are evaluated by their own server")
    try:
        store.fetch(model.spec.modelName, entry.version, entry.downloadURL, entry.sha256sum)
    except ArtifactError as exc:
        raise EvaluationError(exc.reason, str(exc)) from None
    return ModelApp("", model.spec.modelName, model.spec.deployToLayer, entry.version,
                    entry.downloadURL, entry.sha256sum, info=model.spec.metadata)

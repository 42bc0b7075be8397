"""The reconcile function: desired resources in, Serve config applied, resource status out.

    validate (done by the source) -> fetch + verify the target version -> build the Serve
    config -> apply it if it changed -> read Serve status -> write each resource's status

Both sources (directory, Kubernetes) feed the same `Reconciler`. The rule that keeps users
safe: a version is only ever handed to Serve after its archive downloaded, matched its sha256,
unpacked safely and loaded in onnxruntime. When the target version fails any of that, the
version that was serving keeps serving and the status says why. Datasets are counted in the
same pass (`_datasets`), after Serve has its config; they add no application.

Kubernetes mode adds three hooks, all optional: `events` hears what happened to a resource
(fetching, and every condition that changed: the Events `kubectl describe` shows), `images`
runs spec.image models outside Ray (a Deployment + Service), and `wanted` lets a download be
abandoned once no resource wants its model any more (deleted mid-download).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from jointserve.api import (
    Condition,
    ConditionType,
    Dataset,
    DatasetStatus,
    InferenceModel,
    InferenceModelStatus,
    JointInferenceService,
    JointInferenceServiceSpec,
    JointInferenceServiceStatus,
    Evaluation,
    ModelChoice,
    ModelFile,
    ModelMetrics,
    Reason,
    Resource,
    ResourceKey,
    Selection,
    TrainingModel,
    TrainingModelStatus,
    get_condition,
    set_condition,
)
from jointserve.contract import BatchLimits, CloudTarget, app_name
from jointserve.evaluation import cutoff_of
from jointserve.protocol import LoadedModel
from jointserve.runtime import release_free_memory
from jointserve.store import ArtifactError, ArtifactStore, ProgressCallback, redact_url

from ._calibrations import applied_calibration, calibrated, calibration_job, known_calibration
from ._datasets import DatasetCounter, dataset_status
from ._offload import OffloadWatch, offload_condition, totals
from ._router_training import known_router, training_job
from ._training import TrainingJobs
from ._routers import RouterOutcome, RouterVerifier, router_condition
from ._evaluations import (
    EvaluationJob,
    EvaluationState,
    Evaluator,
    dataset_file,
    evaluated,
    known,
    model_job,
    not_evaluable,
    service_job,
)
from ._joint import (
    CloudResolution,
    JointPlan,
    Problem,
    plan_service,
    remote_infer_url,
    service_status,
)
from ._ray import AppState
from ._retry import settled, with_backoff
from ._selection import Candidate, choose
from ._serve_config import (
    GatewayApp,
    Hosting,
    ModelApp,
    ServeSettings,
    build_serve_config,
    hand_over,
    hosted_routes,
)
from ._status_store import StatusRecords

log = logging.getLogger(__name__)

Status = InferenceModelStatus | JointInferenceServiceStatus | DatasetStatus | TrainingModelStatus
S = TypeVar("S", InferenceModelStatus, JointInferenceServiceStatus, DatasetStatus,
            TrainingModelStatus)

# (resource, type "Normal" | "Warning", reason, message): one Kubernetes Event's worth.
EventSink = Callable[[ResourceKey, str, str, str], None]


class Backend(Protocol):
    """What the reconciler needs of Ray Serve (jointserve.operator._ray.ServeBackend)."""

    def apply(self, config: dict) -> None: ...

    def app_states(self) -> dict[str, AppState]: ...

    def service_counters(self) -> dict[str, dict[str, int]]: ...

    def forget_service_counters(self, app_name: str) -> None: ...


class ImageWorkload(Protocol):
    """What an image runner reports of one spec.image model."""

    url: str
    ready: bool
    message: str


class ImageRunner(Protocol):
    """Runs spec.image models outside Ray (jointserve.operator._kube_workloads.ImageWorkloads).

    `ensure` raises an exception carrying a `reason` when the workload cannot be created."""

    def ensure(self, model: dict[str, Any]) -> ImageWorkload: ...


@dataclass(frozen=True)
class Verification:
    """Outcome of fetching and checking one manifest entry."""

    ok: bool
    reason: str
    message: str
    retry_at: float | None = None  # monotonic time of the next attempt; None = never
    attempts: int = 1
    # What the loaded model said of itself, for model selectors: its metadata (task,
    # labels) and its inputs as (name, datatype, shape).
    info: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Plan:
    """What to serve for one InferenceModel, and why."""

    app: ModelApp | None
    target: ModelFile | None
    verification: Verification
    # The version a JointInferenceService may run in its gateway: `app` before replicas 0
    # took it away (an edge model can live only inside gateways).
    verified: ModelApp | None = None


# How often a pass hands the heap freed since back to the OS: a trim walks the arenas.
TRIM_EVERY_S = 10.0


@dataclass(frozen=True)
class Desired:
    """One pass's decisions: the resources by kind, their plans, and the Serve config."""

    models: dict[ResourceKey, InferenceModel]
    services: dict[ResourceKey, JointInferenceService]
    plans: dict[ResourceKey, Plan]
    joint_plans: dict[ResourceKey, JointPlan]
    config: dict
    hosting: Hosting  # the routes gateways answer besides their own (edge models, services)
    gateways: dict[str, GatewayApp]  # every gateway of `config`, by app name


class Reconciler:
    """Drives Ray Serve towards the resources it is given and reports back their status."""

    def __init__(
        self,
        backend: Backend,
        store: ArtifactStore,
        statuses: StatusRecords,
        settings: ServeSettings,
        public_url: str,
        progress: Callable[[str], ProgressCallback | None] = lambda _label: None,
        *,
        events: EventSink | None = None,
        images: ImageRunner | None = None,
        wanted: Callable[[str], bool] = lambda _model_name: True,
        training: TrainingJobs | None = None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.statuses = statuses
        self.settings = settings
        self.public_url = public_url
        self._progress = progress
        self._events = events
        self._images = images
        self._wanted = wanted
        self._training = training  # TrainingModels run only where the home gives them a place
        self._verified: dict[tuple[str, str, str, str], Verification] = {}
        self._datasets = DatasetCounter(store, progress, events)
        self._offload = OffloadWatch()
        self._routers = RouterVerifier(store)
        self._router_outcomes: dict[ResourceKey, RouterOutcome | None] = {}
        self._evaluator = Evaluator()
        # This pass's selections: each service with its selectors resolved, and the
        # evaluations they need ({model key: dataset names}).
        self._resolved: dict[ResourceKey, tuple[JointInferenceService, dict[str, ModelChoice]]] = {}
        self._wanted_evaluations: dict[ResourceKey, set[str]] = {}
        self._evaluating: set[Any] = set()  # this pass's evaluation jobs, by identity
        self._deployed: dict[ResourceKey, ModelApp] = {}  # last handed to Serve
        self._serving: dict[ResourceKey, ModelApp] = {}  # last seen RUNNING in Serve
        self._applied: dict | None = None
        self._hosting = Hosting()  # the routes gateways answer for others, as last applied
        self._gateways: dict[str, GatewayApp] = {}  # every gateway, as last applied
        self._up: set[str] = set()  # applications RUNNING under a config unchanged for a pass
        self._seen_running: set[str] = set()  # applications this operator saw RUNNING
        self._next_trim = 0.0  # when a pass next hands freed heap back (release_free_memory)
        # Status records as last written, read from disk once: a pass runs every second, and
        # only records that changed need the disk again.
        self._records: dict[ResourceKey, dict] = {
            key: record for key in statuses.keys()
            if key[0] in {InferenceModel.KIND, JointInferenceService.KIND, Dataset.KIND,
                          TrainingModel.KIND}
            and (record := statuses.read(key)) is not None
        }

    def desired(self, resources: Mapping[ResourceKey, Resource],
                deleting: Collection[ResourceKey] = frozenset(), at_once: bool = False) -> Desired:
        """Plan every resource (fetching and verifying archives) and build the Serve config,
        without applying it: `reconcile` applies it, `jointserve export rayservice` prints it,
        so both hand Serve the same verified versions. `deleting`: resources on their way out
        (not in `resources`), which services using them report. `at_once`: a config whose
        applications all start together (an export): gateways host edge models and services
        from the start, not by the hand-over a running Serve needs (`hand_over`)."""
        models = {k: r for k, r in sorted(resources.items()) if isinstance(r, InferenceModel)}
        services = {k: r for k, r in sorted(resources.items()) if isinstance(r, JointInferenceService)}
        plans = {key: self._plan(key, model) for key, model in models.items()}
        plans = _refuse_duplicate_model_names(models, plans)
        joint_plans = self._plan_services(services, models, plans, deleting)
        model_apps = [p.app for p in plans.values() if p.app]
        gateway_apps = [p.app for p in joint_plans.values() if p.app]
        current = {g.app_name for g in gateway_apps}
        # A deleted service's gateway that answers for others stays until their own
        # applications are up (`hand_over`), as it was last applied.
        hosts = set(self._hosting.routes.values())
        leaving = {name: g for name, g in self._gateways.items()
                   if name in hosts and name not in current}
        wanted = hosted_routes(model_apps, gateway_apps, self._hosting.routes)
        hosting = (Hosting.at_once(wanted) if at_once else
                   hand_over(wanted, self._hosting, self._up, current | leaving.keys(),
                             current | {m.app_name for m in model_apps}))
        answering = set(hosting.routes.values())
        gateway_apps += [g for name, g in leaving.items() if name in answering]
        config = build_serve_config(model_apps, self.settings, gateway_apps, hosting,
                                    self._gateways)
        return Desired(models, services, plans, joint_plans, config, hosting,
                       {g.app_name: g for g in gateway_apps})

    def reconcile(self, resources: Mapping[ResourceKey, Resource],
                  deleting: Collection[ResourceKey] = frozenset()) -> dict[ResourceKey, Status]:
        """One pass; safe to call as often as wanted (it applies only on change)."""
        desired = self.desired(resources, deleting)
        models, services, config = desired.models, desired.services, desired.config
        plans, joint_plans = desired.plans, desired.joint_plans
        # Applications whose config this pass leaves as it was, and that were seen running:
        # whatever Serve reports for them while it applies other changes, they are serving
        # what they served (no "deploying v1" for a model nobody touched).
        before = {app["name"]: app for app in (self._applied or {}).get("applications", [])}
        steady = {app["name"] for app in config["applications"]
                  if before.get(app["name"]) == app and app["name"] in self._seen_running}
        hosted = {model: host for model, host in desired.hosting.routes.items()
                  if model in desired.hosting.without_own_app}
        steady |= {model for model, host in hosted.items() if host in steady}
        if config != self._applied:
            log.info("applying Serve config with %d application(s)", len(config["applications"]))
            self.backend.apply(config)
            self._applied = config
            self._hosting, self._gateways = desired.hosting, desired.gateways
        self._deployed = {k: p.verified for k, p in plans.items() if p.verified}
        served_states = self.backend.app_states()
        self._up = {name for name in steady
                    if getattr(served_states.get(name), "status", "") == "RUNNING"}
        states = _with_hosted(served_states, hosted)
        self._seen_running &= set(states)  # an application deleted and redeployed starts over
        self._serving = {key: app for key, app in self._serving.items() if key in models}
        for key, plan in plans.items():
            if plan.app is not None and getattr(states.get(plan.app.app_name), "status", "") == "RUNNING":
                self._serving[key] = plan.app
        out: dict[ResourceKey, Status] = {}
        # After Serve has its config: a large download or count delays no model's rollout.
        # Before the models' statuses: their evaluations read the datasets' files.
        datasets = {k: r for k, r in sorted(resources.items()) if isinstance(r, Dataset)}
        for key, dataset in datasets.items():
            status = dataset_status(dataset, self._datasets.count(key, dataset),
                                    self._saved(key, DatasetStatus))
            out[key] = self._save(key, dataset, status)
        dataset_statuses = {k: s for k, s in out.items() if isinstance(s, DatasetStatus)}
        trainings = {k: r for k, r in sorted(resources.items()) if isinstance(r, TrainingModel)}
        for key, job in trainings.items():
            if self._training is not None:
                status = self._training.status(key, job, resources, dataset_statuses,
                                               self._saved(key, TrainingModelStatus))
                out[key] = self._save(key, job, status)
        if self._training is not None:
            self._training.forget(set(trainings))
        self._evaluating = set()
        for key, model in models.items():
            conflict = plans[key].verification.reason == Reason.MODEL_NAME_CONFLICT
            if model.spec.image and self._images is not None and not conflict:
                status = self._image_status(key, model)
            else:
                status = self._status(key, model, plans[key], states, steady)
            state = self._model_evaluation(key, model, plans[key], resources, dataset_statuses)
            out[key] = self._save(key, model, self._with_evaluation(key, status, state, model))
        counters = self.backend.service_counters() if services else {}
        for key, service in services.items():
            plan = joint_plans[key]
            resolved, choices = self._resolved.get(key, (service, {}))
            state = states.get(plan.app.app_name) if plan.app else None
            status = service_status(resolved, plan, self._saved(key, JointInferenceServiceStatus),
                                    state, app_name(key) in self._seen_running,
                                    counters.get(app_name(key)), self.public_url,
                                    steady=app_name(key) in steady)
            if choices:
                status = status.model_copy(update={"selection": Selection(**choices)})
            evaluation = self._service_evaluation(key, resolved, plan, plans, resources,
                                                  dataset_statuses)
            status = self._with_evaluation(key, status, evaluation, service)
            calibration = self._service_calibration(key, resolved, plan, plans, resources,
                                                    dataset_statuses)
            conditions, found = calibrated(
                status.conditions, self._saved(key, JointInferenceServiceStatus).calibration,
                calibration, service.metadata.generation)
            budget = resolved.spec.hardExampleMining.budget
            realised = (self._offload.observe(key, budget, *totals(counters.get(app_name(key))))
                        if budget is not None else None)
            conditions = offload_condition(conditions, budget, realised,
                                           service.metadata.generation)
            used = plan.app.router if plan.app is not None else None
            training = self._service_router_training(key, resolved, plan, plans, resources,
                                                     dataset_statuses)
            conditions = router_condition(conditions, self._router_outcomes.get(key),
                                          service.metadata.generation, training,
                                          used.sha256 if used is not None else None)
            trained = (training.router or self._saved(key, JointInferenceServiceStatus).router
                       if training is not None else None)
            out[key] = self._save(key, service, status.model_copy(
                update={"conditions": conditions, "calibration": found, "offload": realised,
                        "routerSha256": used.sha256 if used is not None else None,
                        "router": trained}))
        self._seen_running |= {name for name, state in states.items() if state.status == "RUNNING"}
        self._evaluator.forget(self._evaluating)
        self._offload.forget(set(services))
        self._routers.forget(set(services))
        for key in set(self._records) - set(models) - set(services) - set(datasets) - set(trainings):
            self.statuses.delete(key)
            del self._records[key]
            if key[0] == JointInferenceService.KIND:
                self.backend.forget_service_counters(app_name(key))
        if time.monotonic() >= self._next_trim:  # trial loads and evaluations freed heap
            release_free_memory()
            self._next_trim = time.monotonic() + TRIM_EVERY_S
        return out

    def _plan_services(self, services: Mapping[ResourceKey, JointInferenceService],
                       models: Mapping[ResourceKey, InferenceModel],
                       plans: Mapping[ResourceKey, Plan],
                       deleting: Collection[ResourceKey]) -> dict[ResourceKey, JointPlan]:
        # /v2/models/<name> belongs to InferenceModels first, then to services by key order.
        taken = {model.spec.modelName for model in models.values()}
        verified = {key: plan.verified for key, plan in plans.items()}
        self._wanted_evaluations = {}
        self._resolved = {}
        out = {}
        for key, service in services.items():
            resolved, choices = self._select_models(key, service, models, plans)
            saved = self._saved(key, JointInferenceServiceStatus)
            hem = resolved.spec.hardExampleMining
            router, self._router_outcomes[key] = self._routers.verify(
                key, hem, saved.router if hem.train is not None else None)
            applied = applied_calibration(resolved.spec, saved.calibration, router)
            plan = plan_service(key, resolved, models, verified, app_name(key),
                                self.public_url, set(taken), deleting, applied, router)
            out[key] = _unselected(plan, choices)
            self._resolved[key] = (resolved, choices)
            taken.add(key[2])
        return out

    def _select_models(self, key: ResourceKey, service: JointInferenceService,
                       models: Mapping[ResourceKey, InferenceModel],
                       plans: Mapping[ResourceKey, Plan]
                       ) -> tuple[JointInferenceService, dict[str, ModelChoice]]:
        """`service` with each selector replaced by the name of the model it chooses (None:
        none yet), and the choices; the evaluations the choices need are noted in
        `_wanted_evaluations` for this pass's model statuses."""
        spec = service.spec
        refs = {"edge": spec.edgeModel, "cloud": spec.cloudModel}
        if all(ref.selector is None for ref in refs.values()):
            return service, {}
        candidates = [_candidate(k, m, plans[k]) for k, m in models.items()
                      if k[1] == key[1] and plans[k].verified is not None]
        previous = self._saved(key, JointInferenceServiceStatus).selection
        choices: dict[str, ModelChoice] = {}
        updates: dict[str, Any] = {}
        for role, ref in refs.items():
            if ref.selector is None:
                continue
            sha256 = (self._saved((Dataset.KIND, key[1], ref.rankBy.dataset), DatasetStatus).sha256
                      if ref.rankBy else None)
            chosen = choose(ref.selector, ref.rankBy, candidates,
                            lambda k: self._saved(k, InferenceModelStatus).metrics, sha256,
                            getattr(previous, role, None) if previous else None)
            for model_key, datasets in chosen.wanted.items():
                self._wanted_evaluations.setdefault(model_key, set()).update(datasets)
            choices[role] = chosen.choice
            updates[f"{role}Model"] = ref.model_copy(
                update={"name": chosen.choice.model, "selector": None, "rankBy": None})
        resolved = service.model_copy(update={"spec": spec.model_copy(update=updates)})
        return resolved, choices

    def _save(self, key: ResourceKey, resource: Resource, status: Status) -> Status:
        record = _record(resource, status)
        previous = self._records.get(key)
        if record != previous:
            self.statuses.write(key, record)
            self._records[key] = record
            self._report_changes(key, (previous or {}).get("status", {}), status)
        return status

    def _report_changes(self, key: ResourceKey, before: dict, status: Status) -> None:
        """One event per change of this resource's conditions in this pass (status, reason or
        message); conditions that changed to the same message (one failure seen as
        ArtifactVerified, Ready and Progressing) make one event, of the first such condition,
        naming all of them."""
        if self._events is None:
            return
        old = {c["type"]: (c["status"], c.get("reason", ""), c.get("message", ""))
               for c in before.get("conditions", [])}
        changed = [c for c in status.conditions
                   if old.get(c.type) != (c.status, c.reason, c.message)]
        by_message: dict[tuple[str, str], list[Condition]] = {}
        for cond in changed:
            by_message.setdefault((_event_type(cond), cond.message), []).append(cond)
        for (type_, message), conds in by_message.items():
            states = ", ".join(f"{c.type}={c.status}" for c in conds)
            self._events(key, type_, conds[0].reason or conds[0].type, f"{states}: {message}")

    def _saved(self, key: ResourceKey, status_type: type[S]) -> S:
        saved = (self._records.get(key) or {}).get("status")
        return status_type.model_validate(saved) if saved else status_type()

    def _saved_status(self, key: ResourceKey) -> InferenceModelStatus:
        return self._saved(key, InferenceModelStatus)

    def close(self) -> None:
        """Stop the evaluation worker (a running evaluation is abandoned) and the training
        runs (their checkpoints let a new operator resume them)."""
        self._evaluator.close()
        if self._training is not None:
            self._training.close()

    # -- evaluation ---------------------------------------------------------------------

    def _model_evaluation(self, key: ResourceKey, model: InferenceModel, plan: Plan,
                          resources: Mapping[ResourceKey, Resource],
                          datasets: Mapping[ResourceKey, DatasetStatus]) -> list[EvaluationState]:
        """The states of the model's evaluations: spec.evaluation's, then those selectors
        ranking it asked for (on other datasets)."""
        wanted = [model.spec.evaluation] if model.spec.evaluation else []
        asked = self._wanted_evaluations.get(key, set()) - {e.dataset for e in wanted}
        wanted += [Evaluation(dataset=name) for name in sorted(asked)]
        if not wanted:
            return []
        if model.spec.image:
            return [not_evaluable(Reason.NOT_EVALUABLE, "spec.image models are evaluated by "
                                  "their own server; the operator evaluates manifest versions")]
        if plan.verified is None:
            return [not_evaluable(Reason.NOT_EVALUABLE, "no verified version to evaluate yet: "
                                  f"{plan.verification.message}")]
        saved = self._saved_status(key).metrics
        states = []
        for evaluation in wanted:
            data = dataset_file(self.store, key[1], evaluation, resources, datasets)
            if data.problem is not None:
                states.append(not_evaluable(*data.problem))
                continue
            target = model.model_copy(update={"spec": model.spec.model_copy(
                update={"evaluation": evaluation})})
            job, metrics_key = model_job(self.store, key, target, plan.verified, data)
            states.append(self._run(job, metrics_key, saved))
        return states

    def _service_evaluation(self, key: ResourceKey, service: JointInferenceService,
                            plan: JointPlan, plans: Mapping[ResourceKey, Plan],
                            resources: Mapping[ResourceKey, Resource],
                            datasets: Mapping[ResourceKey, DatasetStatus]) -> list[EvaluationState]:
        """`service` has its selectors resolved (the models they chose by name)."""
        spec = service.spec
        if spec.evaluation is None:
            return []
        cloud = self._service_cloud(key, spec, plans)
        if plan.app is None or cloud is None:
            return [not_evaluable(Reason.NOT_EVALUABLE, "the edge and cloud models need verified "
                                  "versions before the service can be evaluated")]
        data = dataset_file(self.store, key[1], spec.evaluation, resources, datasets)
        if data.problem is not None:
            return [not_evaluable(*data.problem)]
        applied = plan.app.calibration
        job, metrics_key = service_job(self.store, key, service, plan.app.edge, cloud, data,
                                       cutoff_of(applied) if applied else None, plan.app.router)
        return [self._run(job, metrics_key, self._saved(key, JointInferenceServiceStatus).metrics)]

    def _service_calibration(self, key: ResourceKey, service: JointInferenceService,
                             plan: JointPlan, plans: Mapping[ResourceKey, Plan],
                             resources: Mapping[ResourceKey, Resource],
                             datasets: Mapping[ResourceKey, DatasetStatus]) -> EvaluationState | None:
        """hardExampleMining.budget's Calibrated state: known, running, or why it cannot run."""
        spec = service.spec
        budget = spec.hardExampleMining.budget
        if budget is None:
            return None
        cloud = self._service_cloud(key, spec, plans)
        if plan.app is None or cloud is None:
            return not_evaluable(Reason.NOT_EVALUABLE, "the edge and cloud models need verified "
                                 "versions before the budget can be calibrated")
        data = dataset_file(self.store, key[1], Evaluation(dataset=budget.dataset), resources,
                            datasets)
        if data.problem is not None:
            return not_evaluable(*data.problem)
        job, wanted = calibration_job(self.store, key, service, plan.app.edge, cloud, data,
                                      plan.app.router)
        saved = self._saved(key, JointInferenceServiceStatus).calibration
        done = known_calibration(saved, wanted)
        if done is not None:
            return done
        self._evaluating.add(job.identity)
        return self._evaluator.state(job)

    def _service_router_training(self, key: ResourceKey, service: JointInferenceService,
                                 plan: JointPlan, plans: Mapping[ResourceKey, Plan],
                                 resources: Mapping[ResourceKey, Resource],
                                 datasets: Mapping[ResourceKey, DatasetStatus]
                                 ) -> EvaluationState | None:
        """hardExampleMining.train's state: trained (its router), training, or why not."""
        spec = service.spec
        train = spec.hardExampleMining.train
        if train is None:
            return None
        cloud = self._service_cloud(key, spec, plans)
        if plan.app is None or cloud is None:
            return not_evaluable(Reason.NOT_EVALUABLE, "the edge and cloud models need verified "
                                 "versions before a router can be trained")
        data = dataset_file(self.store, key[1], Evaluation(dataset=train.dataset), resources,
                            datasets)
        if data.problem is not None:
            return not_evaluable(*data.problem)
        job, wanted = training_job(self.store, key, service, plan.app.edge, cloud, data)
        done = known_router(self._saved(key, JointInferenceServiceStatus).router, wanted)
        if done is not None:
            return done
        self._evaluating.add(job.identity)
        return self._evaluator.state(job)

    @staticmethod
    def _service_cloud(key: ResourceKey, spec: JointInferenceServiceSpec,
                       plans: Mapping[ResourceKey, Plan]) -> ModelApp | str | None:
        """The cloud an evaluation calls: the verified cloud version, or a remote URL."""
        if spec.cloudModel.url is not None:
            return remote_infer_url(spec.cloudModel)  # called over HTTP, as the gateway does
        cloud_plan = plans.get((InferenceModel.KIND, key[1], spec.cloudModel.name or ""))
        return cloud_plan.verified if cloud_plan is not None else None

    def _run(self, job: EvaluationJob, metrics_key: tuple[str, str, str, str],
             saved: list[ModelMetrics]) -> EvaluationState:
        done = known(saved, metrics_key)
        if done is not None:
            return done
        self._evaluating.add(job.identity)
        return self._evaluator.state(job)

    def _with_evaluation(self, key: ResourceKey, status: S, states: list[EvaluationState],
                         resource: InferenceModel | JointInferenceService) -> S:
        saved = self._saved(key, type(status)).metrics  # type: ignore[attr-defined]
        conditions, metrics = evaluated(status.conditions, saved, states,
                                        resource.metadata.generation)
        return status.model_copy(update={"conditions": conditions, "metrics": metrics})

    # -- planning -----------------------------------------------------------------------

    def _plan(self, key: ResourceKey, model: InferenceModel) -> Plan:
        spec = model.spec
        if spec.image:
            if self._images is not None:  # run by the image runner in reconcile(), not Serve
                return Plan(None, None, Verification(True, Reason.IMAGE_REFERENCE, f"image {spec.image}"))
            return Plan(None, None, Verification(
                False, Reason.IMAGE_NOT_SUPPORTED,
                "spec.image models run as Kubernetes Deployments (Kubernetes mode); "
                "embedded mode serves spec.manifest archives"))
        target = spec.target_file()
        assert target is not None  # the schema requires image or manifest
        verification = self._verify(key, spec.modelName, target)
        if verification.ok:
            app: ModelApp | None = ModelApp(
                app_name=app_name(key),
                model_name=spec.modelName,
                layer=spec.deployToLayer,
                version=target.version,
                url=target.downloadURL,
                sha256=target.sha256sum,
                replicas=spec.replicas,
                node_selector=dict(spec.nodeSelector),
                batching=_batching(model),
                autoscaling=spec.autoscaling,
                info=spec.metadata,
            )
        else:
            app = self._keep_serving(key, model)
        verified = app
        if app is not None and spec.replicas == 0:
            app = None
        return Plan(app, target, verification, verified)

    def _keep_serving(self, key: ResourceKey, model: InferenceModel) -> ModelApp | None:
        """The version already deployed for `key`, with the spec's other fields applied."""
        # What Serve ran last, not what it was last handed: a version that verified but never
        # came up (DEPLOY_FAILED) is no version to fall back to.
        previous = (self._serving.get(key) or self._deployed.get(key)
                    or self._from_saved_status(key, model))
        if previous is None or previous.model_name != model.spec.modelName:
            return None
        return replace(previous, layer=model.spec.deployToLayer, replicas=model.spec.replicas,
                       node_selector=dict(model.spec.nodeSelector), batching=_batching(model),
                       autoscaling=model.spec.autoscaling, info=model.spec.metadata)

    def _from_saved_status(self, key: ResourceKey, model: InferenceModel) -> ModelApp | None:
        # After an operator restart: the saved activeVersion, if the manifest still lists it.
        active = self._saved_status(key).activeVersion
        entry = model.spec.file_for(active) if active else None
        if entry is None or not self.store.is_cached(model.spec.modelName, entry.version, entry.sha256sum):
            return None
        return ModelApp(app_name(key), model.spec.modelName, model.spec.deployToLayer,
                        entry.version, entry.downloadURL, entry.sha256sum)

    def _verify(self, key: ResourceKey, model_name: str, entry: ModelFile) -> Verification:
        memo_key = (model_name, entry.version, entry.downloadURL, entry.sha256sum)
        known = self._verified.get(memo_key)
        if known is not None and settled(known):
            return known
        if self._events and not self.store.is_cached(model_name, entry.version, entry.sha256sum):
            self._events(key, "Normal", "Fetching",
                         f"fetching {entry.version} from {redact_url(entry.downloadURL)}")
        result = self._fetch_and_check(model_name, entry)
        if result.reason == "Cancelled":
            return result  # not remembered: a resource that still wants it must fetch again
        result = with_backoff(result, known)
        self._verified[memo_key] = result
        return result

    def _fetch_and_check(self, model_name: str, entry: ModelFile) -> Verification:
        label = f"{model_name} {entry.version}"
        try:
            fetched = self.store.fetch(model_name, entry.version, entry.downloadURL,
                                       entry.sha256sum, progress=self._cancellable(model_name, label))
        except ArtifactError as exc:
            log.error("%s: %s", label, exc)
            return Verification(False, exc.reason, str(exc))
        try:
            loaded = LoadedModel.load(model_name, entry.version, fetched.path)
        except Exception as exc:  # noqa: BLE001 - any load failure means "do not serve this"
            log.error("%s: archive verified but the model does not load: %s", label, exc)
            return Verification(False, Reason.MODEL_INVALID, f"model in {entry.downloadURL} does not load: {exc}")
        # The same words whether it was downloaded now or found in the store: this result is
        # remembered and shown again whenever the spec comes back to this version.
        inputs = tuple((s.name, s.datatype, tuple(s.shape)) for s in loaded.model.inputs)
        return Verification(True, Reason.VERIFIED, f"{entry.version}: sha256 matches, model loads",
                            info=dict(loaded.info), inputs=inputs)

    def _cancellable(self, model_name: str, label: str) -> ProgressCallback:
        """The progress callback, which also gives up once `model_name` is no longer wanted."""
        shown = self._progress(label)

        def report(done: int, total: int | None) -> None:
            if not self._wanted(model_name):
                raise ArtifactError("Cancelled", label, f"fetch of {label} cancelled: "
                                    "no resource wants this model any more")
            if shown is not None:
                shown(done, total)

        return report

    # -- status -------------------------------------------------------------------------

    def _image_status(self, key: ResourceKey, model: InferenceModel) -> InferenceModelStatus:
        """Status of a spec.image model, from the workload its image runner keeps."""
        assert self._images is not None
        generation = model.metadata.generation
        conditions = list(self._saved_status(key).conditions)
        document = {"apiVersion": model.apiVersion, "kind": model.kind,
                    **model.model_dump(mode="json", exclude={"status"}, exclude_none=True)}
        try:
            workload = self._images.ensure(document)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong goes into the status
            reason = getattr(exc, "reason", Reason.WORKLOAD_FAILED)
            for type_ in (ConditionType.READY, ConditionType.PROGRESSING):
                conditions = set_condition(conditions, type_, "False", reason, str(exc), generation)
            return InferenceModelStatus(observedGeneration=generation, conditions=conditions)
        image = f"image {model.spec.image} (pulled and run by the kubelet)"
        conditions = set_condition(conditions, ConditionType.ARTIFACT_VERIFIED, "True", Reason.IMAGE_REFERENCE,
                                   image, generation)
        ready = "True" if workload.ready else "False"
        conditions = set_condition(conditions, ConditionType.READY, ready,
                                   Reason.SERVING if workload.ready else Reason.REPLICAS_NOT_READY,
                                   workload.message, generation)
        conditions = set_condition(conditions, ConditionType.PROGRESSING, "False" if workload.ready else "True",
                                   Reason.COMPLETE if workload.ready else Reason.DEPLOYING,
                                   workload.message, generation)
        return InferenceModelStatus(url=workload.url, observedGeneration=generation,
                                    conditions=conditions)

    def _status(self, key: ResourceKey, model: InferenceModel, plan: Plan,
                states: dict[str, AppState], steady: Collection[str] = frozenset()
                ) -> InferenceModelStatus:
        previous = self._saved_status(key)
        generation = model.metadata.generation
        conditions = list(previous.conditions)
        v = plan.verification
        conditions = set_condition(conditions, ConditionType.ARTIFACT_VERIFIED, "True" if v.ok else "False",
                                   v.reason, v.message, generation)
        app = plan.app
        state = states.get(app.app_name) if app else None
        active = previous.activeVersion
        if app is None:
            reason = Reason.SCALED_TO_ZERO if model.spec.replicas == 0 else v.reason
            message = "spec.replicas is 0" if model.spec.replicas == 0 else v.message
            conditions = set_condition(conditions, ConditionType.READY, "False", reason, message, generation)
            conditions = set_condition(conditions, ConditionType.PROGRESSING, "False", reason, message, generation)
            return InferenceModelStatus(url=None, activeVersion=None,
                                        observedGeneration=generation, conditions=conditions)
        was_ready = get_condition(conditions, ConditionType.READY)
        if (app.app_name in steady and state is not None
                and state.status not in _FAILED | {"RUNNING"} and active == app.version
                and was_ready is not None and was_ready.status == "True"):
            # Untouched by this pass and serving before: Serve applying other applications'
            # changes is not a rollout of this one. Ready stays as it was.
            state = replace(state, status="RUNNING")
        elif state is not None and state.status == "RUNNING":
            active = app.version
            conditions = set_condition(conditions, ConditionType.READY, "True", Reason.SERVING,
                                       f"serving {app.version} on {state.running_replicas} replica(s)",
                                       generation)
        elif state is not None and state.status in _FAILED:
            conditions = set_condition(conditions, ConditionType.READY, "False", _camel(state.status),
                                       state.message[-500:], generation)
        else:
            # During a rollout the previous version keeps answering: still Ready.
            # Only if this operator saw the application running: a status saved by one
            # whose Ray is gone (embedded mode restarted) must not claim Ready.
            serving_old = (app.app_name in self._seen_running and active is not None
                           and was_ready is not None and was_ready.status == "True")
            conditions = set_condition(conditions, ConditionType.READY, "True" if serving_old else "False",
                                       Reason.SERVING if serving_old else Reason.DEPLOYING,
                                       f"deploying {app.version}", generation)
        conditions = set_condition(conditions, ConditionType.PROGRESSING, *_progress_condition(plan, state),
                                   observed_generation=generation)
        return InferenceModelStatus(url=self.public_url, activeVersion=active,
                                    observedGeneration=generation, conditions=conditions)


# Serve application states that mean the application does not serve as configured.
_FAILED = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})


def _with_hosted(states: dict[str, AppState], hosted: Mapping[str, str]) -> dict[str, AppState]:
    """Serve's application states, an edge model or a service a gateway hosts reported as
    that gateway's application (its replicas are theirs)."""
    return states | {model: states[host] for model, host in hosted.items() if host in states}


def _progress_condition(plan: Plan, state: AppState | None) -> tuple[str, str, str]:
    app, target = plan.app, plan.target
    assert app is not None
    if not plan.verification.ok and target is not None:
        return ("False", Reason.TARGET_VERSION_REJECTED,
                f"target {target.version} rejected ({plan.verification.reason}); "
                f"still serving {app.version}")
    if state is None or state.status != "RUNNING":
        return ("True", Reason.DEPLOYING, f"rolling out {app.version}")
    return ("False", Reason.COMPLETE, f"{app.version} rolled out")


# Conditions that report a problem when False; other False conditions (Deploying, scaled to
# zero, rollout complete) are routine.
_ROUTINE_FALSE = {Reason.DEPLOYING, Reason.SCALED_TO_ZERO, Reason.COMPLETE, Reason.REPLICAS_NOT_READY}


def _event_type(cond: Condition) -> str:
    if cond.status == "False" and cond.reason not in _ROUTINE_FALSE:
        return "Warning"
    return "Normal"


def _camel(status: str) -> str:
    return "".join(part.capitalize() for part in status.split("_"))


def _refuse_duplicate_model_names(models: Mapping[ResourceKey, InferenceModel],
                                  plans: dict[ResourceKey, Plan]) -> dict[ResourceKey, Plan]:
    """Two resources cannot own one /v2/models/<name> route; the first (by key) keeps it."""
    owner: dict[str, ResourceKey] = {}
    out = dict(plans)
    for key, model in models.items():
        name = model.spec.modelName
        if name in owner:
            first = owner[name]
            out[key] = Plan(None, plans[key].target, Verification(
                False, Reason.MODEL_NAME_CONFLICT,
                f"modelName {name!r} is already served by {first[0]} {first[1]}/{first[2]}"))
        else:
            owner[name] = key
    return out


def _candidate(key: ResourceKey, model: InferenceModel, plan: Plan) -> Candidate:
    assert plan.verified is not None
    given = model.spec.metadata.model_dump(exclude_none=True) if model.spec.metadata else {}
    return Candidate(key, model, plan.verified.version, {**plan.verification.info, **given},
                     plan.verification.inputs)


def _unselected(plan: JointPlan, choices: Mapping[str, ModelChoice]) -> JointPlan:
    """`plan` with the tiers whose selector chose nothing saying so."""
    edge, cloud = choices.get("edge"), choices.get("cloud")
    if cloud is not None and cloud.model is None:
        why = f"cloudModel.selector: {cloud.reason}"
        app = replace(plan.app, cloud=CloudTarget(transport="none", why=why)) if plan.app else None
        plan = replace(plan, app=app, cloud=CloudResolution(Reason.NO_MODEL_SELECTED, why))
    if edge is not None and edge.model is None:
        plan = replace(plan, app=None, problem=Problem(Reason.NO_MODEL_SELECTED,
                                                       f"edgeModel.selector: {edge.reason}"))
    return plan


def _batching(model: InferenceModel) -> BatchLimits:
    batching = model.spec.batching
    if batching is None:
        return BatchLimits()
    return BatchLimits(max_batch_size=batching.maxBatchSize,
                       batch_wait_timeout_s=batching.batchWaitTimeoutMs / 1000.0)


def _record(resource: Resource, status: Status) -> dict:
    return {
        "resource": resource.model_dump(mode="json", exclude={"status"}, exclude_none=True),
        "status": status.model_dump(mode="json", exclude_none=True),
    }


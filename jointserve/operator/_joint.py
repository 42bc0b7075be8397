"""Planning and status of JointInferenceServices, on top of the InferenceModel plans.

A service is served only from verified versions: its gateway loads the edge InferenceModel's
verified version (the one that model serves, or would serve at replicas 0), and calls the
cloud model that is actually deployed. The cloud model missing is not fatal: the gateway
then answers every input from the edge and says `cloud_unavailable`, and the status says
why under `CloudModelReady`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from jointserve.api import (
    Calibration,
    CloudModelRef,
    ConditionType,
    InferenceModel,
    JointInferenceService,
    JointInferenceServiceStatus,
    Reason,
    ResourceKey,
    ServiceCounters,
    get_condition,
    set_condition,
)
from jointserve.contract import CloudTarget, route_prefix

from ._ray import AppState
from ._routers import RouterArtifact
from ._serve_config import GatewayApp, ModelApp


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class CloudResolution:
    """How the gateway will reach the cloud model (its CloudModelReady condition)."""

    reason: str  # Deployed / Remote, or why there is no cloud to call
    message: str
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason in {Reason.CLOUD_DEPLOYED, Reason.CLOUD_REMOTE}


@dataclass(frozen=True)
class JointPlan:
    """What to serve for one JointInferenceService, and what stands in its way."""

    app: GatewayApp | None
    problem: Problem | None  # why there is no gateway (app is None)
    cloud: CloudResolution


def plan_service(key: ResourceKey, service: JointInferenceService,
                 models: Mapping[ResourceKey, InferenceModel],
                 verified: Mapping[ResourceKey, ModelApp | None],
                 app_name: str, public_url: str, taken_names: set[str],
                 deleting: Collection[ResourceKey] = frozenset(),
                 calibration: Calibration | None = None,
                 router: RouterArtifact | None = None) -> JointPlan:
    """The gateway application of `service`, from the InferenceModel plans of this pass.

    `deleting`: InferenceModels being deleted (Kubernetes mode, finalizer pending); they are
    no longer in `models`, and a service using one says so rather than "not found".
    `calibration`: the cut the gateway applies (hardExampleMining.budget), if any;
    `router`: the verified LearnedRouter archive, if any.
    """
    _, namespace, name = key
    spec = service.spec
    cloud, cloud_problem = _cloud_target(namespace, service, models, verified, public_url,
                                         deleting)
    if name in taken_names:
        return JointPlan(None, Problem(Reason.MODEL_NAME_CONFLICT,
                                       f"/v2/models/{name} is already served by another resource"),
                         cloud_problem)
    edge_key = (InferenceModel.KIND, namespace, spec.edgeModel.name)
    if edge_key in deleting:
        return JointPlan(None, Problem(Reason.EDGE_MODEL_DELETING,
                                       f"edgeModel {spec.edgeModel.name!r} is being deleted: this "
                                       "service is not served until an InferenceModel of that "
                                       "name exists again or spec.edgeModel names another"),
                         cloud_problem)
    if edge_key not in models:
        return JointPlan(None, Problem(Reason.EDGE_MODEL_NOT_FOUND,
                                       f"edgeModel {spec.edgeModel.name!r}: no InferenceModel of "
                                       f"that name in namespace {namespace}"), cloud_problem)
    edge = verified.get(edge_key)
    if edge is None:
        return JointPlan(None, Problem(Reason.EDGE_MODEL_NOT_READY,
                                       f"edgeModel {spec.edgeModel.name!r} has no verified version "
                                       "yet (see its ArtifactVerified condition)"), cloud_problem)
    if spec.replicas == 0:
        return JointPlan(None, Problem(Reason.SCALED_TO_ZERO, "spec.replicas is 0"), cloud_problem)
    app = GatewayApp(
        app_name=app_name,
        service=name,
        edge=edge,
        cloud=cloud,
        spec=spec,
        replicas=spec.replicas,
        node_selector=dict(spec.nodeSelector),
        autoscaling=spec.autoscaling,
        calibration=calibration,
        router=router,
    )
    return JointPlan(app, None, cloud_problem)


def remote_infer_url(ref: CloudModelRef) -> str:
    """The OIP infer URL of a remote cloud model (`cloudModel.url` + `modelName`)."""
    assert ref.url is not None
    return f"{ref.url.rstrip('/')}{route_prefix(ref.modelName or '')}/infer"


def _cloud_target(namespace: str, service: JointInferenceService,
                  models: Mapping[ResourceKey, InferenceModel],
                  verified: Mapping[ResourceKey, ModelApp | None],
                  public_url: str,
                  deleting: Collection[ResourceKey]) -> tuple[CloudTarget, CloudResolution]:
    ref = service.spec.cloudModel
    if ref.url is not None:
        url = remote_infer_url(ref)
        return (CloudTarget(transport="http", infer_url=url),
                CloudResolution(Reason.CLOUD_REMOTE, f"remote model at {url}"))
    cloud_key = (InferenceModel.KIND, namespace, ref.name or "")
    if cloud_key in deleting:
        why = f"cloudModel {ref.name!r} is being deleted: hard inputs get the edge answer"
        return (CloudTarget(transport="none", why=why),
                CloudResolution(Reason.CLOUD_MODEL_DELETING, why))
    if cloud_key not in models:
        why = f"cloudModel {ref.name!r}: no InferenceModel of that name in namespace {namespace}"
        return (CloudTarget(transport="none", why=why),
                CloudResolution(Reason.CLOUD_MODEL_NOT_FOUND, why))
    cloud = verified.get(cloud_key)
    if cloud is None or models[cloud_key].spec.replicas == 0:
        why = f"cloudModel {ref.name!r} is not deployed (no verified version, or replicas 0)"
        return (CloudTarget(transport="none", why=why),
                CloudResolution(Reason.CLOUD_MODEL_NOT_READY, why))
    if ref.effective_transport == "http":
        url = f"{public_url.rstrip('/')}{route_prefix(cloud.model_name)}/infer"
        return (CloudTarget(transport="http", infer_url=url),
                CloudResolution(Reason.CLOUD_DEPLOYED, f"{ref.name} {cloud.version} over http at {url}",
                                cloud.version))
    return (CloudTarget(transport="listener", model_name=cloud.model_name, batching=cloud.batching),
            CloudResolution(Reason.CLOUD_DEPLOYED,
                            f"{ref.name} {cloud.version} at its replicas' listeners", cloud.version))


def service_status(service: JointInferenceService, plan: JointPlan, previous: JointInferenceServiceStatus,
                   state: AppState | None, seen_running: bool, counters: Mapping[str, int] | None,
                   public_url: str, *, steady: bool = False) -> JointInferenceServiceStatus:
    """The status to report: conditions from the plan and Serve, counters from the gateways.

    `seen_running`: this operator saw the gateway app RUNNING before, so during a rollout
    the previous configuration is still answering. `steady`: this pass left the gateway's
    config as it was, so a non-RUNNING state is Serve applying other changes, not a rollout.
    """
    generation = service.metadata.generation
    conditions = list(previous.conditions)
    conditions = set_condition(conditions, ConditionType.CLOUD_MODEL_READY,
                               "True" if plan.cloud.ok else "False",
                               plan.cloud.reason, plan.cloud.message, generation)
    app = plan.app
    was_ready = get_condition(conditions, ConditionType.READY)
    if (steady and state is not None
            and state.status not in {"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"}
            and was_ready is not None and was_ready.status == "True"):
        pass  # Ready stays as it was
    elif app is None:
        assert plan.problem is not None
        conditions = set_condition(conditions, ConditionType.READY, "False", plan.problem.reason,
                                   plan.problem.message, generation)
    elif state is not None and state.status == "RUNNING":
        conditions = set_condition(
            conditions, ConditionType.READY, "True", Reason.SERVING,
            f"edge {app.edge.model_name} {app.edge.version} in {state.running_replicas} gateway "
            f"replica(s); policy {service.spec.hardExampleMining.name}", generation)
    elif state is not None and state.status in {"DEPLOY_FAILED", "UNHEALTHY"}:
        conditions = set_condition(conditions, ConditionType.READY, "False",
                                   "".join(p.capitalize() for p in state.status.split("_")),
                                   state.message[-500:], generation)
    else:
        serving = seen_running and was_ready is not None and was_ready.status == "True"
        conditions = set_condition(conditions, ConditionType.READY, "True" if serving else "False",
                                   Reason.SERVING if serving else Reason.DEPLOYING,
                                   f"deploying edge {app.edge.version}", generation)
    totals = ServiceCounters.model_validate(counters) if counters else previous
    inferences, hard = totals.inferenceNumber, totals.hardExampleNumber
    return JointInferenceServiceStatus(
        url=public_url if app is not None else None,
        observedGeneration=generation,
        conditions=conditions,
        edgeVersion=app.edge.version if app else None,
        cloudVersion=plan.cloud.version,
        uploadCloudRatio=round(hard / inferences, 4) if inferences else 0.0,
        **{name: getattr(totals, name) for name in ServiceCounters.model_fields},
    )

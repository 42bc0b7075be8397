"""Planning and status of JointInferenceServices, on top of the InferenceModel plans.

A service is served only from verified versions: its gateway loads the edge InferenceModel's
verified version (the one that model serves, or would serve at replicas 0), and calls the
cloud model that is actually deployed. The cloud model missing is not fatal: the gateway
then answers every input from the edge and says `cloud_unavailable`, and the status says
why under `CloudModelReady`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jointserve.api import (
    InferenceModel,
    JointInferenceService,
    JointInferenceServiceStatus,
    get_condition,
    set_condition,
)

from ._directory import ResourceKey
from ._ray import AppState
from ._serve_config import GatewayApp, ModelApp, route_prefix

COUNTERS = ("inferenceNumber", "hardExampleNumber", "cloudAnswerNumber", "fallbackNumber")


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
        return self.reason in {"Deployed", "Remote"}


@dataclass(frozen=True)
class JointPlan:
    """What to serve for one JointInferenceService, and what stands in its way."""

    app: GatewayApp | None
    problem: Problem | None  # why there is no gateway (app is None)
    cloud: CloudResolution


def plan_service(key: ResourceKey, service: JointInferenceService,
                 models: Mapping[ResourceKey, InferenceModel],
                 verified: Mapping[ResourceKey, ModelApp | None],
                 app_name: str, public_url: str, taken_names: set[str]) -> JointPlan:
    """The gateway application of `service`, from the InferenceModel plans of this pass."""
    _, namespace, name = key
    spec = service.spec
    cloud, cloud_problem = _cloud_target(namespace, service, models, verified, public_url)
    if name in taken_names:
        return JointPlan(None, Problem("ModelNameConflict",
                                       f"/v2/models/{name} is already served by another resource"),
                         cloud_problem)
    edge_key = (InferenceModel.KIND, namespace, spec.edgeModel.name)
    if edge_key not in models:
        return JointPlan(None, Problem("EdgeModelNotFound",
                                       f"edgeModel {spec.edgeModel.name!r}: no InferenceModel of "
                                       f"that name in namespace {namespace}"), cloud_problem)
    edge = verified.get(edge_key)
    if edge is None:
        return JointPlan(None, Problem("EdgeModelNotReady",
                                       f"edgeModel {spec.edgeModel.name!r} has no verified version "
                                       "yet (see its ArtifactVerified condition)"), cloud_problem)
    if spec.replicas == 0:
        return JointPlan(None, Problem("ScaledToZero", "spec.replicas is 0"), cloud_problem)
    app = GatewayApp(
        app_name=app_name,
        service=name,
        edge=edge,
        cloud=cloud,
        spec=spec.model_dump(mode="json", exclude_none=True),
        replicas=spec.replicas,
        node_selector=dict(spec.nodeSelector),
    )
    return JointPlan(app, None, cloud_problem)


def _cloud_target(namespace: str, service: JointInferenceService,
                  models: Mapping[ResourceKey, InferenceModel],
                  verified: Mapping[ResourceKey, ModelApp | None],
                  public_url: str) -> tuple[dict[str, Any], CloudResolution]:
    ref = service.spec.cloudModel
    if ref.url is not None:
        url = f"{ref.url.rstrip('/')}{route_prefix(ref.modelName or '')}/infer"
        return {"transport": "http", "infer_url": url}, CloudResolution("Remote", f"remote model at {url}")
    cloud_key = (InferenceModel.KIND, namespace, ref.name or "")
    if cloud_key not in models:
        why = f"cloudModel {ref.name!r}: no InferenceModel of that name in namespace {namespace}"
        return {"transport": "none", "why": why}, CloudResolution("CloudModelNotFound", why)
    cloud = verified.get(cloud_key)
    if cloud is None or models[cloud_key].spec.replicas == 0:
        why = f"cloudModel {ref.name!r} is not deployed (no verified version, or replicas 0)"
        return {"transport": "none", "why": why}, CloudResolution("CloudModelNotReady", why)
    if ref.effective_transport == "http":
        url = f"{public_url.rstrip('/')}{route_prefix(cloud.model_name)}/infer"
        return ({"transport": "http", "infer_url": url},
                CloudResolution("Deployed", f"{ref.name} {cloud.version} over http at {url}",
                                cloud.version))
    return ({"transport": "handle", "app_name": cloud.app_name,
             "max_batch_size": cloud.max_batch_size, "batch_wait_s": cloud.batch_wait_timeout_s},
            CloudResolution("Deployed", f"{ref.name} {cloud.version} through a DeploymentHandle",
                            cloud.version))


def service_status(service: JointInferenceService, plan: JointPlan, previous: JointInferenceServiceStatus,
                   state: AppState | None, seen_running: bool, counters: Mapping[str, int] | None,
                   public_url: str) -> JointInferenceServiceStatus:
    """The status to report: conditions from the plan and Serve, counters from the gateways.

    `seen_running`: this operator saw the gateway app RUNNING before, so during a rollout
    the previous configuration is still answering.
    """
    generation = service.metadata.generation
    conditions = list(previous.conditions)
    conditions = set_condition(conditions, "CloudModelReady", "True" if plan.cloud.ok else "False",
                               plan.cloud.reason, plan.cloud.message, generation)
    app = plan.app
    if app is None:
        assert plan.problem is not None
        conditions = set_condition(conditions, "Ready", "False", plan.problem.reason,
                                   plan.problem.message, generation)
    elif state is not None and state.status == "RUNNING":
        conditions = set_condition(
            conditions, "Ready", "True", "Serving",
            f"edge {app.edge.model_name} {app.edge.version} in {state.running_replicas} gateway "
            f"replica(s); policy {service.spec.hardExampleMining.name}", generation)
    elif state is not None and state.status in {"DEPLOY_FAILED", "UNHEALTHY"}:
        conditions = set_condition(conditions, "Ready", "False",
                                   "".join(p.capitalize() for p in state.status.split("_")),
                                   state.message[-500:], generation)
    else:
        was_ready = get_condition(conditions, "Ready")
        serving = seen_running and was_ready is not None and was_ready.status == "True"
        conditions = set_condition(conditions, "Ready", "True" if serving else "False",
                                   "Serving" if serving else "Deploying",
                                   f"deploying edge {app.edge.version}", generation)
    totals = dict(counters) if counters else {c: getattr(previous, c) for c in COUNTERS}
    inferences = totals.get("inferenceNumber", 0)
    hard = totals.get("hardExampleNumber", 0)
    return JointInferenceServiceStatus(
        url=public_url if app is not None else None,
        observedGeneration=generation,
        conditions=conditions,
        edgeVersion=app.edge.version if app else None,
        cloudVersion=plan.cloud.version,
        uploadCloudRatio=round(hard / inferences, 4) if inferences else 0.0,
        **{c: int(totals.get(c, 0)) for c in COUNTERS},
    )

"""Build the declarative Ray Serve config for the resources the operator decided to serve.

The output has the schema of `serve deploy` config files and of KubeRay's RayService
`serveConfigV2` (ray.serve.schema.ServeDeploySchema), so the same document can be applied by
this operator, by `serve deploy`, or by a KubeRay cluster.

Placement: an InferenceModel's `deployToLayer` becomes a Ray custom resource its replicas
require (`jointserve_edge` / `jointserve_cloud`, which edge and cloud nodes advertise; the
local node in embedded mode advertises both), and its `nodeSelector` becomes the replicas'
Ray `label_selector`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jointserve.api import Autoscaling, Calibration, JointInferenceServiceSpec, Layer, ModelInfo
from jointserve.contract import (
    GATEWAY_DEPLOYMENT,
    GATEWAY_IMPORT_PATH,
    MODEL_DEPLOYMENT,
    MODEL_IMPORT_PATHS,
    SERVER_APP,
    SERVER_DEPLOYMENT,
    SERVER_IMPORT_PATH,
    SERVER_ROUTE,
    ArtifactRef,
    BatchLimits,
    CloudTarget,
    FrontDoorArgs,
    GatewayConfig,
    JointServiceConfig,
    ModelReplicaConfig,
    ServerConfig,
    route_prefix,
    user_config,
)

from ._routers import RouterArtifact

# Custom resource each layer's nodes carry. A replica asks for a sliver of it so any number
# of replicas fits on a node that has the resource at all.
LAYER_RESOURCES: dict[str, str] = {"edge": "jointserve_edge", "cloud": "jointserve_cloud"}
LAYER_RESOURCE_PER_REPLICA = 0.001
# The node that runs the front door (HAProxy on the public port) carries this one: the local
# node in embedded mode, the head pod of an exported RayService.
FRONT_DOOR_RESOURCE = "jointserve_front_door"


@dataclass(frozen=True)
class ServeSettings:
    """Cluster-wide serving options, the same for every application."""

    store_root: str
    host: str = "127.0.0.1"
    port: int = 8000
    # Replicas are I/O-bound Python plus microsecond-scale model calls; a whole logical CPU
    # each would make a 2-core node refuse its third replica.
    replica_num_cpus: float = 0.1
    version: str = ""
    # Where replica listeners bind: "" is each node's IP (a cluster, where the front door
    # may be on another node); one machine binds them to its configured host.
    listen_host: str = ""

    def front_door(self) -> FrontDoorArgs:
        return FrontDoorArgs(version=self.version, host=self.host, port=self.port,
                             listen_host=self.listen_host)


@dataclass(frozen=True)
class ModelApp:
    """One InferenceModel as the operator decided to serve it (a verified version)."""

    app_name: str
    model_name: str
    layer: Layer
    version: str
    url: str
    sha256: str
    replicas: int = 1
    node_selector: dict[str, str] = field(default_factory=dict)
    batching: BatchLimits = BatchLimits()
    autoscaling: Autoscaling | None = None
    info: ModelInfo | None = None  # spec.metadata

    def artifact(self, store_root: str) -> ArtifactRef:
        """This version as a replica fetches it into the store at `store_root`."""
        return ArtifactRef(model_name=self.model_name, version=self.version, url=self.url,
                           sha256=self.sha256, store_root=store_root)


@dataclass(frozen=True)
class GatewayApp:
    """One JointInferenceService as the operator decided to serve it.

    `edge` is the verified edge version (a ModelApp of the edge InferenceModel), `cloud` the
    resolved way to the cloud model and `spec` the resource's spec: the gateway replicas get
    all three in their user_config (jointserve.contract.GatewayConfig).
    """

    app_name: str
    service: str
    edge: ModelApp
    cloud: CloudTarget
    spec: JointInferenceServiceSpec
    replicas: int = 1
    calibration: Calibration | None = None  # the cut applied (hardExampleMining.budget)
    router: RouterArtifact | None = None  # LearnedRouter: the verified router archive
    node_selector: dict[str, str] = field(default_factory=dict)
    autoscaling: Autoscaling | None = None


def hosted_routes(models: Sequence[ModelApp], gateways: Sequence[GatewayApp],
                  hosting: Mapping[str, str] | None = None) -> dict[str, str]:
    """The routes a gateway's replicas answer besides their own service's: application ->
    gateway application. A Serve replica is ~120 MiB of PSS, and an edge box has 2-8 GiB.

    Gateways that run the same edge version, placed and scaled alike (`_alike`), share one
    application, the host's: its replicas answer every one of those services over one
    loaded edge model, and the others (guests) get no replicas of their own. The host also
    answers the edge InferenceModel's own route where that model's replicas would be placed
    and scaled as the gateway's are and do no batching (`_can_host`): it runs that model in
    process already.

    `hosting`: the map applied last. A host keeps hosting while it can (a move would leave
    routes without a listener until the new host publishes them); otherwise the first of the
    group by application name hosts.
    """
    by_app = {m.app_name: m for m in models}
    hosts_before = set((hosting or {}).values())
    groups: list[list[GatewayApp]] = []
    for gateway in sorted(gateways, key=lambda g: g.app_name):
        group = next((members for members in groups if _alike(members[0], gateway)), None)
        if group is None:
            groups.append([gateway])
        else:
            group.append(gateway)
    routes: dict[str, str] = {}
    for members in groups:
        host = next((g for g in members if g.app_name in hosts_before), members[0])
        routes |= {g.app_name: host.app_name for g in members if g is not host}
        model = by_app.get(host.edge.app_name)
        if model is not None and _can_host(host, model):
            routes[model.app_name] = host.app_name
    return routes


def _alike(one: GatewayApp, other: GatewayApp) -> bool:
    """Could one gateway's replicas answer the other's service: the same edge version,
    placed and scaled the same way?"""
    return ((one.edge, one.replicas, one.autoscaling, one.node_selector)
            == (other.edge, other.replicas, other.autoscaling, other.node_selector))


def _can_host(gateway: GatewayApp, model: ModelApp) -> bool:
    edge = gateway.edge
    return (model == edge and edge.layer == "edge" and edge.batching.max_batch_size == 1
            and (edge.replicas, edge.autoscaling, edge.node_selector)
            == (gateway.replicas, gateway.autoscaling, gateway.node_selector))


@dataclass(frozen=True)
class Hosting:
    """Which gateway answers which other application's route (an edge model's or a hosted
    service's: application -> gateway application), and which of those applications have
    no replicas of their own."""

    routes: Mapping[str, str] = field(default_factory=dict)
    without_own_app: frozenset[str] = frozenset()

    @classmethod
    def at_once(cls, hosts: Mapping[str, str]) -> Hosting:
        """`hosts` in one step: a config whose applications all start together (an export)."""
        return cls(dict(hosts), frozenset(hosts))


def hand_over(wanted: Mapping[str, str], applied: Hosting, up: Collection[str],
              gateways: Collection[str], owners: Collection[str]) -> Hosting:
    """One step from the `applied` hosting towards the `wanted` one that never leaves a
    route without a listener: a gateway answers a route once its application is up; the
    route's own application goes once a config in which that gateway answers was applied
    and the gateway is up after it; the other way, the hosting gateway answers until the
    route's own application is up again, a deleted gateway too. A route moving to another
    host goes back to its own application first.

    `up`: applications RUNNING under a config left as it was for a whole pass; `gateways`:
    the gateway applications this config can hold, the deleted ones that host included;
    `owners`: the applications of this config whose routes need a listener (a deleted
    resource's do not).
    """
    routes: dict[str, str] = {}
    without: set[str] = set()
    for owner, host in wanted.items():
        before = applied.routes.get(owner)
        if before == host:  # it answers already: a version switch or other change leaves it so
            routes[owner] = host
            if owner in applied.without_own_app or host in up:
                without.add(owner)
        elif (before is None or owner in up) and host in up:
            routes[owner] = host
    for owner, host in applied.routes.items():
        if owner not in routes and host in gateways and owner in owners and owner not in up:
            routes[owner] = host  # until the route's own application is up
    return Hosting(routes, frozenset(without))


def build_serve_config(models: list[ModelApp], settings: ServeSettings,
                       gateways: Sequence[GatewayApp] = (),
                       hosting: Hosting | None = None,
                       applied: Mapping[str, GatewayApp] | None = None) -> dict[str, Any]:
    """The whole desired Serve state: the server app plus one app per model and per service,
    but none for a route a gateway answers alone (`hosting`; by default `hosted_routes` at
    once).

    `applied`: the gateways as last applied, by application. A service leaving its host
    (moved out of its group) is answered there as it was applied until its own application
    is up: its new edge model or placement is not the host's.

    Applications absent from the config are deleted by Serve when it is applied, which is
    how a removed resource loses its application.
    """
    if hosting is None:
        hosting = Hosting.at_once(hosted_routes(models, gateways))
    without = hosting.without_own_app
    routes = hosting.routes
    served = ({m.model_name: routes[m.app_name] if m.app_name in without else m.app_name
               for m in models}
              | {g.service: routes[g.app_name] if g.app_name in without else g.app_name
                 for g in gateways})
    by_app = {g.app_name: g for g in gateways}

    def guests(host: GatewayApp) -> list[GatewayApp]:
        hosted = [by_app[app] for app, to in sorted(routes.items()) if to == host.app_name
                  and app in by_app]
        return [g if _alike(g, host) else (applied or {}).get(g.app_name, g) for g in hosted]

    return {
        # HTTP comes in through the front door (the server application's HAProxy), never
        # through Serve's own proxies.
        "proxy_location": "Disabled",
        "http_options": {"host": settings.host, "port": settings.port},
        "applications": [_quiet(app) for app in
                         [_server_app(served, settings)]
                         + [_model_app(m, settings) for m in sorted(models, key=lambda m: m.app_name)
                            if m.app_name not in without]
                         + [_gateway_app(g, settings, guests(g),
                                         edge_route=routes.get(g.edge.app_name) == g.app_name)
                            for g in sorted(gateways, key=lambda g: g.app_name)
                            if g.app_name not in without]],
    }


def _quiet(app: dict[str, Any]) -> dict[str, Any]:
    """No per-request access log line: formatting and writing it took ~5% of a gateway
    replica's CPU in a py-spy profile at 1,000 req/s. Errors are still logged, and the
    Prometheus metrics count every request."""
    return {**app, "logging_config": {"enable_access_log": False}}


def _server_app(served: dict[str, str], settings: ServeSettings) -> dict[str, Any]:
    return {
        "name": SERVER_APP,
        "route_prefix": SERVER_ROUTE,
        "import_path": SERVER_IMPORT_PATH,
        "args": settings.front_door().model_dump(),
        "deployments": [
            {
                "name": SERVER_DEPLOYMENT,
                "num_replicas": 1,
                "user_config": user_config(ServerConfig(models=dict(sorted(served.items())))),
                "ray_actor_options": {"num_cpus": settings.replica_num_cpus,
                                      "resources": {FRONT_DOOR_RESOURCE: LAYER_RESOURCE_PER_REPLICA}},
            }
        ],
    }


def _actor_options(layer: Layer, node_selector: dict[str, str],
                   settings: ServeSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "num_cpus": settings.replica_num_cpus,
        "resources": {LAYER_RESOURCES[layer]: LAYER_RESOURCE_PER_REPLICA},
    }
    if node_selector:
        options["label_selector"] = dict(node_selector)
    return options


# Serve's default policy scales on the requests Serve itself carried, none now: this one
# scales on what the replicas' listeners report (jointserve.listener).
AUTOSCALING_POLICY = "jointserve.listener:in_flight_autoscaling_policy"


def _replicas(replicas: int, autoscaling: Autoscaling | None) -> dict[str, Any]:
    """A fixed replica count, or Serve's autoscaling on the requests in flight per replica
    that the listeners report (`target_ongoing_requests` is the target of that count)."""
    if autoscaling is None:
        return {"num_replicas": replicas}
    return {"autoscaling_config": {
        "min_replicas": autoscaling.minReplicas,
        "initial_replicas": autoscaling.minReplicas,
        "max_replicas": autoscaling.maxReplicas,
        "target_ongoing_requests": autoscaling.targetInFlight,
        "policy": {"policy_function": AUTOSCALING_POLICY},
    }}


def _replica_config(model: ModelApp, settings: ServeSettings) -> dict[str, Any]:
    """A model replica's user_config."""
    return user_config(ModelReplicaConfig(artifact=model.artifact(settings.store_root),
                                          batching=model.batching, info=model.info))


def _model_app(model: ModelApp, settings: ServeSettings) -> dict[str, Any]:
    return {
        "name": model.app_name,
        "route_prefix": route_prefix(model.model_name),
        "import_path": MODEL_IMPORT_PATHS[model.layer],
        # args are part of the application's code version: keep version-specific data out
        # of them, or a version switch would restart replicas instead of reconfiguring them.
        "args": {"model_name": model.model_name, "listen_host": settings.listen_host},
        "deployments": [
            {
                "name": MODEL_DEPLOYMENT,
                **_replicas(model.replicas, model.autoscaling),
                "user_config": _replica_config(model, settings),
                "ray_actor_options": _actor_options(model.layer, model.node_selector, settings),
            }
        ],
    }


def _gateway_app(gateway: GatewayApp, settings: ServeSettings, guests: Sequence[GatewayApp] = (),
                 edge_route: bool = False) -> dict[str, Any]:
    return {
        "name": gateway.app_name,
        "route_prefix": route_prefix(gateway.service),
        "import_path": GATEWAY_IMPORT_PATH,
        "args": {"service": gateway.service, "listen_host": settings.listen_host},
        "deployments": [
            {
                "name": GATEWAY_DEPLOYMENT,
                **_replicas(gateway.replicas, gateway.autoscaling),
                "user_config": user_config(GatewayConfig(
                    edge=gateway.edge.artifact(settings.store_root),
                    edge_info=gateway.edge.info,
                    services=tuple(_service_config(g, settings) for g in (gateway, *guests)),
                    edge_route=edge_route,
                )),
                # The edge model runs in the gateway: it goes where edge models go.
                "ray_actor_options": _actor_options("edge", gateway.node_selector, settings),
            }
        ],
    }


def _service_config(gateway: GatewayApp, settings: ServeSettings) -> JointServiceConfig:
    return JointServiceConfig(
        service=gateway.service,
        stats_key=gateway.app_name,
        cloud=gateway.cloud,
        spec=gateway.spec,
        calibration=gateway.calibration,
        router=_router_ref(gateway.router, settings.store_root),
    )


def _router_ref(router: RouterArtifact | None, store_root: str) -> ArtifactRef | None:
    if router is None:
        return None
    return ArtifactRef(model_name=router.model_name, version=router.version, url=router.url,
                       sha256=router.sha256, store_root=store_root)

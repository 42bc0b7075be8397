"""The Ray Serve ingress deployment of one JointInferenceService.

The operator deploys one application per service, with this deployment (`gateway`) on edge
nodes. Each replica answers /v2/models/<service name>/... on its own listener, published to
the front door like a model replica's (jointserve.listener). Everything it needs arrives in
its `user_config` (`GatewayConfig`): which edge version to load (fetched through the artifact
store, like a model replica does), how to reach the cloud model, and the resource's spec. A
changed user_config is applied in place by `reconfigure`: the new `JointModel` is built next
to the old one and swapped in with one assignment, so requests never see half a change.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from jointserve.api import Calibration, HardExampleMining, JointInferenceServiceSpec, ModelInfo
from jointserve.contract import GATEWAY_DEPLOYMENT, ArtifactRef, CloudTarget, GatewayConfig, route_prefix
from jointserve.listener import ListenerReplica
from jointserve.registry import Routes, follow
from jointserve.protocol import (
    HttpRequest,
    HttpResponse,
    LoadedModel,
    ModelEndpoint,
    ModelNotFound,
    ModelNotReady,
    answer,
    decode_request,
    json_header_length,
    json_response,
    load_artifact,
    metadata,
    relative_path,
    require_method,
    under_route,
)
from jointserve.routing import (
    ROUTER_FILE,
    Adapt,
    Budgeted,
    Cutoff,
    HemPolicy,
    RouterModel,
    build_policy,
)
from jointserve.runtime import build_pipeline
from jointserve.store import ArtifactStore

from ._breaker import CircuitBreaker
from ._cloud import CloudClient, HttpCloud, ListenerUrls, NoCloud
from ._cloud_batch import BatchingCloud
from ._hard_examples import HardExampleStore, HardExampleWriter
from ._joint import CloudSettings, JointModel
from ._metrics import GatewayMetrics

log = logging.getLogger(__name__)

@serve.deployment(name=GATEWAY_DEPLOYMENT, max_ongoing_requests=256)
class JointGateway(ListenerReplica):
    """One logical model: the edge model in process, the cloud model behind a deadline."""

    def __init__(self, service: str, listen_host: str = "") -> None:
        self.service = service
        self.prefix = route_prefix(service)
        self._init_listener(service, self.handle, listen_host)
        self._cloud_urls: ListenerUrls | None = None
        self._routes: Routes = {}
        self._following: asyncio.Task | None = None
        self.joint: JointModel | None = None
        # The edge InferenceModel's own route, when this gateway answers it (edge_route).
        self._edge_endpoint: ModelEndpoint | None = None
        self._config: GatewayConfig | None = None
        self._edge: tuple[tuple[ArtifactRef, ModelInfo | None], LoadedModel] | None = None
        self._router_model: tuple[ArtifactRef, RouterModel] | None = None
        self._cloud: tuple[CloudTarget, int, CloudClient] | None = None
        self._writer: tuple[Any, HardExampleWriter] | None = None
        self._breaker: tuple[tuple[int, int], CircuitBreaker] | None = None
        self._metrics: GatewayMetrics | None = None
        self._reporter: asyncio.Task | None = None

    # -- configuration ------------------------------------------------------------------

    async def reconfigure(self, user_config: dict) -> None:
        config = GatewayConfig.model_validate(user_config)
        if config == self._config:
            return
        spec = config.spec
        edge = await self._edge_model(config.edge, config.edge_info)
        if self._metrics is None:
            replica = serve.get_replica_context().replica_id.unique_id
            self._metrics = GatewayMetrics(config.service, config.stats_key, replica)
            self._reporter = asyncio.get_running_loop().create_task(self._metrics.report_forever())
        self.joint = JointModel(
            name=config.service,
            edge=edge,
            policy=_policy(spec.hardExampleMining, config.calibration,
                           await self._router(config.router)),
            policy_name=spec.hardExampleMining.name,
            pipeline=build_pipeline(spec.preprocess, spec.postprocess),
            cloud=await self._cloud_client(config.cloud, spec.cloud.maxInFlight),
            settings=CloudSettings(spec.cloud.deadlineMs / 1000.0, spec.cloud.maxInFlight,
                                   self._circuit_breaker(spec)),
            hem_output=spec.hardExampleMining.output,
            recorder=self._metrics,
            hard_examples=self._hard_example_writer(spec),
        )
        self._config = config
        self._edge_endpoint = self._own_edge_endpoint(config, edge)
        await self._publish(also=[config.edge.model_name] if config.edge_route else [])
        log.info("%s: edge %s %s, cloud %s, policy %s", config.service, config.edge.model_name,
                 edge.version, config.cloud.transport, spec.hardExampleMining.name)

    def _own_edge_endpoint(self, config: GatewayConfig, edge: LoadedModel) -> ModelEndpoint | None:
        """The edge model's OIP endpoint over the very model the joint path runs, or None."""
        if not config.edge_route:
            return None
        endpoint = self._edge_endpoint
        if endpoint is None or endpoint.name != config.edge.model_name:
            endpoint = ModelEndpoint(config.edge.model_name)
        endpoint.loaded = edge  # a version switch swaps both routes' model at once
        return endpoint

    async def _router(self, source: ArtifactRef | None) -> RouterModel | None:
        """The LearnedRouter's model, fetched through this node's store (kept while the same)."""
        if source is None:
            return None
        if self._router_model is None or self._router_model[0] != source:
            self._router_model = (source, await asyncio.to_thread(_load_router, source))
        return self._router_model[1]

    async def _edge_model(self, source: ArtifactRef, info: ModelInfo | None) -> LoadedModel:
        if self._edge is None or self._edge[0] != (source, info):
            described = info.model_dump(exclude_none=True) if info else None
            self._edge = ((source, info),
                          await asyncio.to_thread(load_artifact, source, described))
        return self._edge[1]

    async def _cloud_client(self, target: CloudTarget, max_in_flight: int) -> CloudClient:
        if self._cloud is not None and self._cloud[:2] == (target, max_in_flight):
            return self._cloud[2]
        if target.transport == "listener":
            assert target.model_name
            self._cloud_urls = ListenerUrls(target.model_name)
            self._cloud_urls.update(self._routes)
            self._follow_listeners()
            client: CloudClient = HttpCloud(self._cloud_urls, max_in_flight)
            if target.batching.max_batch_size > 1:
                client = BatchingCloud(client, target.batching.max_batch_size,
                                       target.batching.batch_wait_timeout_s)
        elif target.transport == "http":
            assert target.infer_url
            client = HttpCloud(target.infer_url, max_in_flight)
        else:
            client = NoCloud(target.why or "no cloud model is deployed")
        if self._cloud is not None:
            old = self._cloud[2]
            # Requests still in flight on the old client finish or hit their deadline first.
            asyncio.get_running_loop().call_later(60.0, lambda: asyncio.ensure_future(old.aclose()))
        self._cloud = (target, max_in_flight, client)
        return client

    def _follow_listeners(self) -> None:
        """Keep the cloud model's listener addresses current (one long poll per replica)."""
        if self._following is not None:
            return

        async def update(_version: int, routes: Routes) -> None:
            self._routes = routes
            if self._cloud_urls is not None:
                self._cloud_urls.update(routes)

        self._following = asyncio.get_running_loop().create_task(follow(update))

    def _circuit_breaker(self, spec: JointInferenceServiceSpec) -> CircuitBreaker:
        settings = (spec.cloud.breaker.failureThreshold, spec.cloud.breaker.cooldownMs)
        if self._breaker is None or self._breaker[0] != settings:
            self._breaker = (settings, CircuitBreaker(settings[0], settings[1] / 1000.0))
        return self._breaker[1]

    def _hard_example_writer(self, spec: JointInferenceServiceSpec) -> HardExampleWriter | None:
        wanted = spec.saveHardExamples
        if self._writer is not None and self._writer[0] == wanted:
            return self._writer[1]
        if self._writer is not None:
            self._writer[1].close()
            self._writer = None
        if wanted is None:
            return None
        # claim: a subdirectory of its own, so replicas on one node never evict each other's
        store = HardExampleStore.claim(Path(wanted.directory), wanted.maxCount, wanted.maxBytes)
        self._writer = (wanted, HardExampleWriter(store))
        return self._writer[1]

    # -- requests -----------------------------------------------------------------------

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request of the listener; never raises."""
        endpoint = self._edge_endpoint
        if endpoint is not None and under_route(request.path, endpoint.prefix):
            return await endpoint.handle(request)
        return await answer(self._route, request, self.service)

    async def _route(self, request: HttpRequest) -> HttpResponse:
        joint = self.joint  # one read: the whole request sees one configuration
        path = relative_path(request, self.prefix)
        if path == "/infer":
            require_method(request, "POST")
            joint = _configured(joint, self.service)
            inference = decode_request(request.body, json_header_length(request.headers))
            return json_response(await joint.infer(inference))
        if path == "/ready":
            require_method(request, "GET")
            joint = _configured(joint, self.service)
            return json_response({"name": self.service, "ready": True,
                                  "edge_version": joint.edge.version})
        if path == "":
            require_method(request, "GET")
            joint = _configured(joint, self.service)
            inputs = joint.pipeline.client_inputs(joint.edge.model.inputs)
            meta = metadata(joint.edge, inputs).model_dump(exclude_none=True)
            meta["name"] = self.service
            meta["platform"] = "jointserve"
            meta.setdefault("parameters", {})["hem_policy"] = joint.policy_name
            return json_response(meta)
        raise ModelNotFound(f"no route {request.path!r}; see the OIP v2 REST API")


def _policy(hem: HardExampleMining, calibration: Calibration | None,
            router: RouterModel | None = None) -> HemPolicy:
    """The service's policy (a LearnedRouter with its router loaded); with a calibration,
    its score cut where the budget says."""
    policy = build_policy(hem.name, hem.parameters, router)
    if calibration is None:
        return policy
    cutoff = Cutoff(calibration.threshold, calibration.atThreshold)
    budget = hem.budget
    adapt = (Adapt.around(cutoff, budget.cloudRatio, budget.adaptRange)
             if budget is not None and budget.adapt else None)
    return Budgeted(policy, cutoff, adapt=adapt)


def _load_router(source: ArtifactRef) -> RouterModel:
    store = ArtifactStore(Path(source.store_root))
    fetched = store.fetch(source.model_name, source.version, source.url, source.sha256)
    return RouterModel(fetched.path / ROUTER_FILE)


def _configured(joint: JointModel | None, service: str) -> JointModel:
    """The method is checked first: a wrong one is a 405 even before the first configuration."""
    if joint is None:
        raise ModelNotReady(f"model {service!r} is not configured yet")
    return joint


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for Serve config `import_path`;
    args: {"service": str, "listen_host": str ("": this node's IP)}."""
    return JointGateway.bind(service=args["service"], listen_host=args.get("listen_host", ""))

"""The Ray Serve ingress deployment of a JointInferenceService.

The operator deploys one application per service, with this deployment (`gateway`) on edge
nodes; services on the same edge version, placed and scaled alike, share one application
(the first one's), whose replicas answer all of them over one loaded edge model. Each
replica answers /v2/models/<service>/... on its own listener, published to the front door
like a model replica's (jointserve.listener). Everything it needs arrives in its
`user_config` (`GatewayConfig`): which edge version to load (fetched through the artifact
store, like a model replica does), and for each service how to reach the cloud model and
the resource's spec. A changed user_config is applied in place by `reconfigure`: each
service's new `JointModel` is built next to the old one and swapped in with one
assignment, so requests never see half a change.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.serve import Application

from jointserve.api import ModelInfo
from jointserve.contract import GATEWAY_DEPLOYMENT, ArtifactRef, GatewayConfig
from jointserve.listener import ListenerReplica
from jointserve.protocol import HttpRequest, HttpResponse, LoadedModel, ModelEndpoint, load_artifact, under_route
from jointserve.registry import Routes, follow

from ._service import GatewayService

log = logging.getLogger(__name__)


@serve.deployment(name=GATEWAY_DEPLOYMENT, max_ongoing_requests=256)
class JointGateway(ListenerReplica):
    """Logical models over one edge model: the edge model in process, each service's cloud
    model behind a deadline."""

    def __init__(self, service: str, listen_host: str = "") -> None:
        self.service = service
        self._init_listener(service, self.handle, listen_host)
        self._replica = serve.get_replica_context().replica_id.unique_id
        # The application's own service, then the services it hosts (`_guests`).
        self._own = GatewayService(service, self._replica)
        self._guests: dict[str, GatewayService] = {}
        # The edge InferenceModel's own route, when this gateway answers it (edge_route).
        self._edge_endpoint: ModelEndpoint | None = None
        self._config: GatewayConfig | None = None
        self._edge: tuple[tuple[ArtifactRef, ModelInfo | None], LoadedModel] | None = None
        self._routes: Routes = {}
        self._following: asyncio.Task | None = None

    # -- configuration ------------------------------------------------------------------

    async def reconfigure(self, user_config: dict) -> None:
        config = GatewayConfig.model_validate(user_config)
        if config == self._config:
            return
        edge = await self._edge_model(config.edge, config.edge_info)
        config.service(self.service)  # KeyError naming it: a config for another application
        guests = [s.service for s in config.services if s.service != self.service]
        services = {name: self._guests.get(name) or GatewayService(name, self._replica)
                    for name in guests}
        answering = {self.service: self._own, **services}
        for entry in config.services:
            await answering[entry.service].prepare(entry, edge, self._routes)
        routes = [*guests, *([config.edge.model_name] if config.edge_route else [])]
        # What this replica stops answering leaves the front door first: no request for it
        # arrives after it is gone from here.
        await self._unpublish_except(routes)
        for service in answering.values():
            service.install()
        for name in set(self._guests) - set(services):
            self._guests[name].close()
        self._guests = services
        self._edge_endpoint = self._own_edge_endpoint(config, edge)
        self._config = config
        if any(s.cloud_urls is not None for s in answering.values()):
            self._follow_listeners()
        await self._publish(also=routes)

    def _own_edge_endpoint(self, config: GatewayConfig, edge: LoadedModel) -> ModelEndpoint | None:
        """The edge model's OIP endpoint over the very model the joint path runs, or None."""
        if not config.edge_route:
            return None
        endpoint = self._edge_endpoint
        if endpoint is None or endpoint.name != config.edge.model_name:
            endpoint = ModelEndpoint(config.edge.model_name)
        endpoint.loaded = edge  # a version switch swaps both routes' model at once
        return endpoint

    async def _edge_model(self, source: ArtifactRef, info: ModelInfo | None) -> LoadedModel:
        if self._edge is None or self._edge[0] != (source, info):
            described = info.model_dump(exclude_none=True) if info else None
            self._edge = ((source, info),
                          await asyncio.to_thread(load_artifact, source, described))
        return self._edge[1]

    def _follow_listeners(self) -> None:
        """Keep the cloud models' listener addresses current (one long poll per replica)."""
        if self._following is not None:
            return

        async def update(_version: int, routes: Routes) -> None:
            self._routes = routes
            for service in (self._own, *self._guests.values()):
                if service.cloud_urls is not None:
                    service.cloud_urls.update(routes)

        self._following = asyncio.get_running_loop().create_task(follow(update))

    # -- requests -----------------------------------------------------------------------

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request of the listener; never raises."""
        path = request.path
        own = self._own
        if under_route(path, own.prefix):
            return await own.handle(request)
        endpoint = self._edge_endpoint
        if endpoint is not None and under_route(path, endpoint.prefix):
            return await endpoint.handle(request)
        for guest in self._guests.values():
            if under_route(path, guest.prefix):
                return await guest.handle(request)
        return await own.handle(request)  # its 404 names the path


def build_app(args: dict[str, object]) -> Application:
    """Application builder for Serve config `import_path`;
    args: {"service": str, "listen_host": str ("": this node's IP)}."""
    return JointGateway.bind(service=args["service"], listen_host=args.get("listen_host", ""))

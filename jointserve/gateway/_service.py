"""One JointInferenceService inside a gateway replica.

A gateway replica answers its application's own service and the services it hosts (same
edge version, placed and scaled alike), all over one loaded edge model. Each service keeps
its own JointModel, and what a rebuild of that JointModel keeps while unchanged: the
router model, the cloud client (its connection pool), the circuit breaker, the
hard-example writer and the metrics. A changed config builds a new JointModel next to the
old one; `install` swaps it in with one assignment, so a request sees one configuration.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from jointserve.api import Calibration, HardExampleMining, JointInferenceServiceSpec
from jointserve.contract import ArtifactRef, CloudTarget, JointServiceConfig, route_prefix
from jointserve.protocol import (
    HttpRequest,
    HttpResponse,
    LoadedModel,
    ModelNotFound,
    ModelNotReady,
    answer,
    decode_request,
    json_header_length,
    json_response,
    metadata,
    relative_path,
    require_method,
)
from jointserve.registry import Routes
from jointserve.routing import ROUTER_FILE, Adapt, Budgeted, Cutoff, HemPolicy, RouterModel, build_policy
from jointserve.runtime import build_pipeline
from jointserve.store import ArtifactStore

from ._breaker import CircuitBreaker
from ._cloud import CloudClient, HttpCloud, ListenerUrls, NoCloud
from ._cloud_batch import BatchingCloud
from ._hard_examples import HardExampleStore, HardExampleWriter
from ._joint import CloudSettings, JointModel
from ._metrics import GatewayMetrics

log = logging.getLogger(__name__)

# Requests still in flight on a replaced cloud client (or a service that left) finish or
# hit their deadline first.
_IN_FLIGHT_GRACE_S = 60.0


class GatewayService:
    """One service's requests (/v2/models/<service>/...) in a gateway replica."""

    def __init__(self, name: str, replica_id: str) -> None:
        self.name = name
        self.prefix = route_prefix(name)
        self.joint: JointModel | None = None
        # The cloud model's listener addresses, when it calls a cloud model of this cluster:
        # the replica's one long poll of the registry keeps them current (`follow`).
        self.cloud_urls: ListenerUrls | None = None
        self._replica_id = replica_id
        self._next: tuple[JointServiceConfig, JointModel] | None = None
        self._config: JointServiceConfig | None = None
        self._edge: LoadedModel | None = None
        self._router_model: tuple[ArtifactRef, RouterModel] | None = None
        self._cloud: tuple[CloudTarget, int, CloudClient] | None = None
        self._writer: tuple[Any, HardExampleWriter] | None = None
        self._breaker: tuple[tuple[int, int], CircuitBreaker] | None = None
        self._metrics: GatewayMetrics | None = None
        self._reporter: asyncio.Task | None = None

    # -- configuration ------------------------------------------------------------------

    async def prepare(self, config: JointServiceConfig, edge: LoadedModel, routes: Routes) -> None:
        """Build the JointModel `config` and `edge` make; it answers once `install`ed.
        Nothing is built when neither changed."""
        if config == self._config and edge is self._edge:
            return
        spec = config.spec
        if self._metrics is None or self._metrics.stats_key != config.stats_key:
            self._stop_reporting()
            self._metrics = GatewayMetrics(config.service, config.stats_key, self._replica_id)
            self._reporter = asyncio.get_running_loop().create_task(self._metrics.report_forever())
        joint = JointModel(
            name=config.service,
            edge=edge,
            policy=_policy(spec.hardExampleMining, config.calibration,
                           await self._router(config.router)),
            policy_name=spec.hardExampleMining.name,
            pipeline=build_pipeline(spec.preprocess, spec.postprocess),
            cloud=self._cloud_client(config.cloud, spec.cloud.maxInFlight, routes),
            settings=CloudSettings(spec.cloud.deadlineMs / 1000.0, spec.cloud.maxInFlight,
                                   self._circuit_breaker(spec)),
            hem_output=spec.hardExampleMining.output,
            recorder=self._metrics,
            hard_examples=self._hard_example_writer(spec),
        )
        self._next = (config, joint)
        self._edge = edge

    def install(self) -> None:
        """Answer with what `prepare` built (one assignment: a request sees one config)."""
        if self._next is None:
            return
        (config, self.joint), self._next = self._next, None
        self._config = config
        log.info("%s: edge %s %s, cloud %s, policy %s", config.service, self.joint.edge.name,
                 self.joint.edge.version, config.cloud.transport,
                 config.spec.hardExampleMining.name)

    def close(self) -> None:
        """The service left this replica (its route withdrawn from the front door first):
        once what is still in flight had its time, stop its reporter, writer and cloud client."""
        asyncio.get_running_loop().call_later(_IN_FLIGHT_GRACE_S, self._close_now)

    def _close_now(self) -> None:
        self._stop_reporting()
        if self._writer is not None:
            self._writer[1].close()
            self._writer = None
        if self._cloud is not None:
            asyncio.ensure_future(self._cloud[2].aclose())
            self._cloud = None

    def _stop_reporting(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            self._reporter = None

    async def _router(self, source: ArtifactRef | None) -> RouterModel | None:
        """The LearnedRouter's model, fetched through this node's store (kept while the same)."""
        if source is None:
            return None
        if self._router_model is None or self._router_model[0] != source:
            self._router_model = (source, await asyncio.to_thread(_load_router, source))
        return self._router_model[1]

    def _cloud_client(self, target: CloudTarget, max_in_flight: int, routes: Routes) -> CloudClient:
        if self._cloud is not None and self._cloud[:2] == (target, max_in_flight):
            return self._cloud[2]
        self.cloud_urls = None
        if target.transport == "listener":
            assert target.model_name
            self.cloud_urls = ListenerUrls(target.model_name)
            self.cloud_urls.update(routes)
            client: CloudClient = HttpCloud(self.cloud_urls, max_in_flight)
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
            asyncio.get_running_loop().call_later(
                _IN_FLIGHT_GRACE_S, lambda: asyncio.ensure_future(old.aclose()))
        self._cloud = (target, max_in_flight, client)
        return client

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
        """Answer one request for this service; never raises."""
        return await answer(self._route, request, self.name)

    async def _route(self, request: HttpRequest) -> HttpResponse:
        joint = self.joint  # one read: the whole request sees one configuration
        path = relative_path(request, self.prefix)
        if path == "/infer":
            require_method(request, "POST")
            joint = _configured(joint, self.name)
            inference = decode_request(request.body, json_header_length(request.headers))
            return json_response(await joint.infer(inference))
        if path == "/ready":
            require_method(request, "GET")
            joint = _configured(joint, self.name)
            return json_response({"name": self.name, "ready": True,
                                  "edge_version": joint.edge.version})
        if path == "":
            require_method(request, "GET")
            joint = _configured(joint, self.name)
            inputs = joint.pipeline.client_inputs(joint.edge.model.inputs)
            meta = metadata(joint.edge, inputs).model_dump(exclude_none=True)
            meta["name"] = self.name
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

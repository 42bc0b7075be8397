"""The operator's connection to Ray Serve: start it, apply a config, read application states."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from ray.serve.schema import ServeDeploySchema

from jointserve.registry import counter_totals, forget_counters

from ._fate import guard_this_process
from ._ingress import use_serve_env
from ._lean_head import start_lean_head
from ._serve_config import FRONT_DOOR_RESOURCE, LAYER_RESOURCES

log = logging.getLogger(__name__)


# Enough of each layer resource for any realistic number of replicas per node.
_LOCAL_LAYER_CAPACITY = 1000


@dataclass(frozen=True)
class AppState:
    """What Serve says about one application."""

    status: str  # NOT_STARTED, DEPLOYING, DEPLOY_FAILED, RUNNING, UNHEALTHY, DELETING
    message: str
    running_replicas: int


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start an embedded single-node Ray that carries both layers (no cluster needed)."""
    if ray.is_initialized():
        return
    use_serve_env()
    guard_this_process()  # nothing of this Ray outlives this process, even a SIGKILLed one
    # Always a fresh single-node instance, never a cluster that happens to be running on
    # this machine (RAY_ADDRESS or `ray start`); joining one is --ray-address.
    start_lean_head(
        num_cpus=num_cpus,
        resources={name: _LOCAL_LAYER_CAPACITY
                   for name in [*LAYER_RESOURCES.values(), FRONT_DOOR_RESOURCE]},
        log_to_driver=False,
        namespace="jointserve",
    )


def connect_ray(address: str) -> None:
    """Join an existing Ray cluster (its nodes advertise the layer resources themselves)."""
    if not ray.is_initialized():
        ray.init(address=address, namespace="jointserve", log_to_driver=False)


class ServeBackend:
    """Applies Serve configs declaratively and reads back application status."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        # No Serve proxy: the server application's front door owns the public port.
        serve.start(proxy_location="Disabled", http_options={"host": host, "port": port})
        from ray.serve.context import _get_global_client

        self._client = _get_global_client()
        # One thread reads the gateways' counters, so that a pass never waits on the GCS.
        self._asking = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jointserve-counters")
        self._counters: dict[str, dict[str, int]] = {}
        self._counters_asked: Future | None = None

    def apply(self, config: dict[str, Any]) -> None:
        """Validate with Ray's own schema and hand the whole desired state to the controller."""
        self._client.deploy_apps(ServeDeploySchema.model_validate(config))

    def app_states(self) -> dict[str, AppState]:
        """Status of every Serve application, keyed by application name."""
        out = {}
        for name, app in serve.status().applications.items():
            running = sum(
                count
                for dep in app.deployments.values()
                for state, count in dep.replica_states.items()
                if str(getattr(state, "value", state)) == "RUNNING"
            )
            # ApplicationStatus is a str Enum; keep the plain value.
            out[name] = AppState(status=str(app.status.value), message=app.message,
                                 running_replicas=running)
        return out

    def service_counters(self) -> dict[str, dict[str, int]]:
        """Counters of every JointInferenceService, summed over its gateway replicas.

        Never waits: a pass takes the answer to the previous pass's question, if it has
        arrived, and asks again. Counters are at most a pass or two behind.
        """
        asked = self._counters_asked
        if asked is not None:
            if not asked.done():
                return self._counters
            try:
                self._counters = asked.result()
            except Exception as exc:  # noqa: BLE001 - stale counters beat a failed pass
                log.warning("gateway counters not available: %r", exc)
        self._counters_asked = self._asking.submit(counter_totals)
        return self._counters

    def forget_service_counters(self, app_name: str) -> None:
        self._asking.submit(forget_counters, app_name)

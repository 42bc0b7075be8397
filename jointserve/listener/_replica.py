"""What every serving Serve deployment does with its listener (a mixin: models, gateways).

    __init__     `_init_listener(route, handler, host)`: nothing bound yet
    reconfigure  after the model (or joint model) is ready: `_publish()`; later calls only
                 refresh (a version switch is a swap behind the same listener); each call
                 hands the heap the load freed back to the OS
    __del__      Serve calls it (awaited) before it stops the replica: withdraw, drain, close
    record_autoscaling_stats   the listener's requests in flight, which Serve's own count
                 cannot see (they never pass through Serve's request path)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import ray
from ray import serve

from jointserve.protocol import Handler
from jointserve.runtime import release_free_memory

from ._publication import Publication
from ._server import Listener

IN_FLIGHT_METRIC = "in_flight"


def listen_host(configured: str) -> str:
    """The address a listener binds: the configured one, or (empty) this node's IP, where the
    front doors of other nodes can reach it."""
    return configured or ray.util.get_node_ip_address()


class ListenerReplica:
    """Gives a Serve deployment class its own listener, published under `route` and, for a
    gateway that also answers its edge model's route or the services it hosts, under `also`
    routes."""

    _publication: Publication | None = None
    _also: dict[str, Publication] | None = None

    def _init_listener(self, route: str, handle: Handler, host: str) -> None:
        self._publication = Publication(route, "", Listener(handle, listen_host(host)))

    async def _publish(self, also: Collection[str] = ()) -> None:
        """Publish the listener under its route and exactly the `also` routes (each a
        registry entry of its own, withdrawn when a later call leaves it out)."""
        publication = self._publication
        assert publication is not None, "_init_listener first"
        if not publication.key:
            publication.key = serve.get_replica_context().replica_id.unique_id
        await publication.publish()
        await self._unpublish_except(also)
        published = self._also
        assert published is not None
        for route in sorted(set(also) - set(published)):
            extra = Publication(route, f"{publication.key}+{route}", publication.listener)
            await extra.publish()
            published[route] = extra
        release_free_memory()  # what loading the model freed: this replica is ready now

    async def _unpublish_except(self, keep: Collection[str]) -> None:
        """Withdraw the `also` routes not in `keep` from the front door (each returns once
        the front door stopped sending it here)."""
        if self._also is None:
            self._also = {}
        published = self._also
        for route in sorted(set(published) - set(keep)):
            await published.pop(route).unpublish()

    async def __del__(self) -> None:
        for extra in (self._also or {}).values():
            await extra.unpublish()
        self._also = None
        if self._publication is not None:
            publication, self._publication = self._publication, None
            await publication.withdraw()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        publication = self._publication
        return {IN_FLIGHT_METRIC: float(publication.listener.in_flight if publication else 0)}


def in_flight_autoscaling_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Serve autoscaling on the listeners' requests in flight (`record_autoscaling_stats`),
    the way Serve's default policy scales on its own count: replicas = in flight / target.

    Serve's own count sees only requests that came through Serve, which none do now. `ctx`
    is Serve's AutoscalingContext; the controller clamps the answer to min/max replicas.
    """
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, ctx.policy_state
    in_flight = (ctx.aggregated_metrics or {}).get(IN_FLIGHT_METRIC, {})
    target = ctx.config.get_target_ongoing_requests()
    desired = sum(in_flight.values()) / target if target > 0 else ctx.current_num_replicas
    low, high = ctx.capacity_adjusted_min_replicas, ctx.capacity_adjusted_max_replicas
    return min(max(desired, low), high), ctx.policy_state

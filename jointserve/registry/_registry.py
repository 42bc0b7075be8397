"""Who listens where: the cluster's table of replica listeners, by route.

    replica (model or gateway) --publish(route, key, address), every HEARTBEAT_S--> ListenerRegistry
    front door (HAProxy owner) <--watch(after=version)-- long poll --> apply, ack(version)
    gateway (its cloud model's addresses) <--watch-- long poll

The table lives in the server application's replica (jointserve.ingress.OipServer is a
ListenerRegistry), beside the front door that programs HAProxy from it; the other replicas
reach it through a Serve DeploymentHandle (`listener_registry`). So it is part of the Serve
config and works the same in every home: embedded mode, the Kubernetes operator's cluster,
and a KubeRay RayService where no jointserve operator runs. It used to be a detached Ray
actor of its own; every Ray actor is a Python process (~70 MiB PSS), and the
embedded stack has to fit on edge boxes.

Entries are leases: a replica refreshes its own every HEARTBEAT_S, and one not refreshed for
ENTRY_TTL_S (a SIGKILLed replica, a lost node) is dropped. The proxy's health checks take a
dead listener out of rotation long before that; the lease only keeps the table from growing
stale, and the heartbeats refill a table that a restarted server replica lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jointserve.contract import SERVER_APP, SERVER_DEPLOYMENT

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

log = logging.getLogger(__name__)

# Each beat is a Serve handle call (a fraction of a millisecond of CPU on each side) per
# replica: every 2 s keeps an idle stack quiet. The proxy's health checks, not the lease,
# take a dead listener out of rotation.
HEARTBEAT_S = 2.0
ENTRY_TTL_S = 10.0
# A front door that has not polled for this long no longer holds up a withdrawal.
DOOR_TTL_S = 15.0
# A long poll answers at once on a change; the timeout only bounds how long a follower
# waits to notice a registry that went away.
WATCH_TIMEOUT_S = 10.0

Routes = dict[str, list[str]]  # route -> sorted listener addresses


@dataclass
class _Entry:
    route: str
    address: str
    seen_at: float


class ListenerRegistry:
    """route -> {replica key: address}, versioned: every change bumps `version`.

    Its methods are the server deployment's: called through a DeploymentHandle from other
    replicas, directly by the front door in the same replica. All of them run on that
    replica's event loop.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._version = 0
        self._changed = asyncio.Event()
        self._acks: dict[str, tuple[int, float]] = {}  # front door -> (version, when)
        self._expiring: asyncio.Task | None = None

    async def publish(self, key: str, route: str, address: str) -> int:
        """Add or refresh replica `key`'s listener; returns the version that holds it."""
        self._start_expiry()
        entry = self._entries.get(key)
        if entry is not None and (entry.route, entry.address) == (route, address):
            entry.seen_at = time.monotonic()
            return self._version
        self._entries[key] = _Entry(route, address, time.monotonic())
        return self._bump()

    async def withdraw(self, key: str) -> int:
        """Remove replica `key`; returns the first version without it."""
        if self._entries.pop(key, None) is None:
            return self._version
        return self._bump()

    async def watch(self, after: int, timeout_s: float = WATCH_TIMEOUT_S) -> tuple[int, Routes]:
        """The table once its version is past `after` (or after `timeout_s` as it is)."""
        self._start_expiry()
        if self._version <= after:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except TimeoutError:
                pass
        return self._version, self._routes()

    async def ack(self, door: str, version: int) -> None:
        """Front door `door` has put `version` into its proxy."""
        self._acks[door] = (version, time.monotonic())

    async def applied(self, version: int) -> bool:
        """Has every live front door put `version` (or a later one) into its proxy?"""
        now = time.monotonic()
        live = [acked for acked, when in self._acks.values() if now - when < DOOR_TTL_S]
        return all(acked >= version for acked in live)

    def _routes(self) -> Routes:
        routes: Routes = {}
        for entry in self._entries.values():
            routes.setdefault(entry.route, []).append(entry.address)
        return {route: sorted(addresses) for route, addresses in sorted(routes.items())}

    def _bump(self) -> int:
        self._version += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return self._version

    def _start_expiry(self) -> None:
        if self._expiring is None:
            self._expiring = asyncio.get_running_loop().create_task(self._expire_forever())

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            now = time.monotonic()
            stale = [key for key, e in self._entries.items() if now - e.seen_at > ENTRY_TTL_S]
            for key in stale:
                log.warning("listener %s (%s) missed its heartbeats; dropped", key,
                            self._entries[key].address)
                del self._entries[key]
            if stale:
                self._bump()


def listener_registry() -> "DeploymentHandle":
    """A handle to the cluster's ListenerRegistry, the server application's replica.

    Made without asking the controller whether that deployment exists yet: Serve builds
    the applications of one config concurrently, so a model replica can start before the
    server application is there. Calls then wait until it is (callers bound them).
    """
    from ray import serve

    return serve.get_deployment_handle(SERVER_DEPLOYMENT, app_name=SERVER_APP,
                                       _check_exists=False)


async def follow(on_change: Callable[[int, Routes], Awaitable[None]],
                 watch: Callable[[int], Awaitable[tuple[int, Routes]]] | None = None) -> None:
    """Call `on_change(version, routes)` for every new version of the table, forever.

    `watch` is the registry's own method for a follower in its replica (the front door);
    anyone else goes through `listener_registry()`. A registry that cannot be reached (not
    deployed yet, restarting) is asked again after a short wait; the last table passed on
    stays in force meanwhile.
    """
    version = -1
    while True:
        try:
            if watch is None:
                watch = (await asyncio.to_thread(listener_registry)).watch.remote
            new_version, routes = await watch(version)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep following whatever happens
            log.warning("listener registry not reachable (%s); retrying", exc)
            await asyncio.sleep(0.5)
            continue
        if new_version != version:
            version = new_version
            await on_change(version, routes)

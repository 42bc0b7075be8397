"""A replica's listener as the rest of the cluster sees it: published while the replica
serves, withdrawn and drained before it stops.

    first reconfigure: model loaded -> listener started -> published (a heartbeat every HEARTBEAT_S)
    Serve stops the replica (scale-down, deletion, a restart for new code) -> __del__:
        withdraw -> wait until every front door's proxy has it out -> drain in-flight -> close

so a stopping replica takes no new request and finishes the ones it has. A SIGKILLed one
cannot do any of this: the proxy retries its requests on another replica and health checks
take it out; its lease in the registry runs out after ENTRY_TTL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from jointserve.registry import HEARTBEAT_S, listener_registry
from ._server import Listener

log = logging.getLogger(__name__)

# How long a withdrawal waits for the front doors to stop sending (they apply a change in
# milliseconds; this only bounds a stuck one), and for requests in flight to finish.
WITHDRAW_WAIT_S = 3.0
DRAIN_TIMEOUT_S = 15.0
# A registry call answers in about a millisecond; this bounds one made while the server
# replica that keeps the registry is gone (restarting, or deleted before this replica).
REGISTRY_CALL_S = 5.0


class Publication:
    """`listener`, published under `route` (the model name the proxy routes by) as `key`
    (the replica's unique id)."""

    def __init__(self, route: str, key: str, listener: Listener) -> None:
        self.route = route
        self.key = key
        self.listener = listener
        self._registry = None
        self._heartbeat: asyncio.Task | None = None

    async def publish(self) -> None:
        """Start the listener if it is not, and keep it published until `withdraw`."""
        address = await self.listener.start()
        if self._registry is None:
            self._registry = await asyncio.to_thread(listener_registry)
        await self._registry.publish.remote(self.key, self.route, address)
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(address))
        log.info("%s: listening on %s (%s)", self.route, address,
                 type(asyncio.get_running_loop()).__module__)

    async def withdraw(self) -> None:
        """Out of every proxy, then drained and closed; never raises."""
        await self.unpublish()
        if not await self.listener.drain(DRAIN_TIMEOUT_S):
            log.warning("%s: %d request(s) still in flight after %.0f s; closing", self.route,
                        self.listener.in_flight, DRAIN_TIMEOUT_S)
        await self.listener.close()

    async def unpublish(self) -> None:
        """Out of every proxy; the listener goes on answering (another publication of the
        same listener, or the drain of `withdraw`). Never raises."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        try:
            if self._registry is not None:
                version = await asyncio.wait_for(self._registry.withdraw.remote(self.key),
                                                 REGISTRY_CALL_S)
                await self._wait_applied(version)
        except Exception as exc:  # noqa: BLE001 - stopping anyway; health checks cover it
            log.warning("%s: could not withdraw %s from the registry: %s", self.route, self.key, exc)

    async def _wait_applied(self, version: int) -> None:
        deadline = time.monotonic() + WITHDRAW_WAIT_S
        while time.monotonic() < deadline:
            if await asyncio.wait_for(self._registry.applied.remote(version), WITHDRAW_WAIT_S):
                return
            await asyncio.sleep(0.02)
        log.warning("%s: front doors did not confirm the withdrawal within %.0f s",
                    self.route, WITHDRAW_WAIT_S)

    async def _beat(self, address: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(Exception):  # a registry restarting: the next beat
                await asyncio.wait_for(self._registry.publish.remote(self.key, self.route, address),
                                       REGISTRY_CALL_S)

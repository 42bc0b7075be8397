"""The server application: the cluster's listener registry, the front door (HAProxy on the
public port) programmed from it, and the server-level OIP v2 routes, everything under /v2
that is not one served model's.

    GET /v2                 server metadata
    GET /v2/health/live     200 while the server answers
    GET /v2/health/ready    200 when every served model's application is RUNNING, else 503
    *   /v2/models/<other>  404 naming the models that are served

HAProxy sends /v2/models/<name>/... to that model's replica listeners and everything else to
this replica's own listener, its default server. Any other method on the first three is a
405 with `Allow: GET`. The routes themselves are jointserve.protocol.ServerEndpoint
(Ray-free, tested in tests/test_protocol.py); this deployment supplies the served models and
their readiness.

One replica does all three because each Ray actor is a Python process of its own (~70 MiB
PSS): the registry was a detached actor until it moved in here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve
from ray.serve import Application

from jointserve.contract import SERVER_DEPLOYMENT, FrontDoorArgs, ServerConfig
from jointserve.listener import Listener
from jointserve.protocol import ServerEndpoint
from jointserve.registry import ListenerRegistry
from jointserve.runtime import release_free_memory

from ._front_door import FrontDoor

SERVER_NAME = "jointserve"
_STATUS_CACHE_S = 1.0
# Registry calls are what this deployment's handle carries, and each follower (a gateway
# replica watching its cloud model's listeners) parks one long poll here.
_MAX_ONGOING_REGISTRY_CALLS = 1000


@serve.deployment(name=SERVER_DEPLOYMENT, max_ongoing_requests=_MAX_ONGOING_REGISTRY_CALLS)
class OipServer(ListenerRegistry):
    """The listener registry (its methods are this deployment's), the front door that
    follows it, and the listener behind that door that answers the server-wide routes."""

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__()
        self._args = FrontDoorArgs.model_validate(args)
        self._config = ServerConfig()
        self._ready_cache: tuple[float, list[str]] = (0.0, [])
        self._endpoint = ServerEndpoint(SERVER_NAME, self._args.version,
                                        lambda: self._config.models, self._not_ready_models)
        # Beside HAProxy on this node: the public address, or loopback when that is a wildcard.
        host = self._args.host if self._args.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        self._listener = Listener(self._endpoint.handle, host)
        self._door: FrontDoor | None = None

    async def reconfigure(self, user_config: dict) -> None:
        self._config = ServerConfig.model_validate(user_config)
        self._ready_cache = (0.0, [])
        if self._door is None:
            address = await self._listener.start()
            door_id = serve.get_replica_context().replica_id.unique_id
            door = FrontDoor(door_id, self._args.host, self._args.port, address, registry=self)
            await door.start()
            self._door = door
            release_free_memory()  # what starting the front door freed

    async def __del__(self) -> None:
        door, self._door = self._door, None
        if door is not None:
            await door.stop()
        await self._listener.close()

    async def _not_ready_models(self) -> list[str]:
        checked_at, not_ready = self._ready_cache
        if time.monotonic() - checked_at > _STATUS_CACHE_S:
            not_ready = await asyncio.to_thread(self._query_not_ready)
            self._ready_cache = (time.monotonic(), not_ready)
        return not_ready

    def _query_not_ready(self) -> list[str]:
        apps = serve.status().applications
        return sorted(
            model
            for model, app in self._config.models.items()
            if app not in apps or apps[app].status != "RUNNING"
        )


def build_app(args: dict[str, Any]) -> Application:
    """Application builder for the Serve config; args: contract.FrontDoorArgs."""
    return OipServer.bind(args=FrontDoorArgs.model_validate(args).model_dump())

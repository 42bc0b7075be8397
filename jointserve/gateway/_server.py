"""Server-level OIP v2 routes: everything under /v2 that is not one model's own prefix.

    GET /v2                 server metadata
    GET /v2/health/live     200 while the server answers
    GET /v2/health/ready    200 when every served model's application is RUNNING, else 503
    *   /v2/models/<other>  404 naming the models that are served

Ray Serve routes by longest route prefix, so /v2/models/<name>/... reaches that model's own
application and only unknown names fall through to this one. Any other method on the first
three is a 405 with `Allow: GET`. The routes themselves are jointserve.protocol.ServerEndpoint
(Ray-free, tested in tests/test_protocol.py); this deployment supplies the served models and
their readiness.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from jointserve.contract import SERVER_DEPLOYMENT, ServerConfig
from jointserve.protocol import ServerEndpoint

SERVER_NAME = "jointserve"
_STATUS_CACHE_S = 1.0


@serve.deployment(name=SERVER_DEPLOYMENT, max_ongoing_requests=64)
class OipServer:
    """Answers the server-wide OIP routes and 404s for unknown models."""

    def __init__(self, version: str) -> None:
        self._version = version
        self._config = ServerConfig()
        self._ready_cache: tuple[float, list[str]] = (0.0, [])
        self._endpoint = ServerEndpoint(SERVER_NAME, version, lambda: self._config.models,
                                        self._not_ready_models)

    def reconfigure(self, user_config: dict) -> None:
        self._config = ServerConfig.model_validate(user_config)
        self._ready_cache = (0.0, [])

    async def __call__(self, request: Request) -> Response:
        return await self._endpoint.handle(request)

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
    """Application builder for the Serve config; args: {"version": jointserve version}."""
    return OipServer.bind(version=str(args.get("version", "")))

"""Server-level OIP v2 routes: everything under /v2 that is not one model's own prefix.

    GET /v2                 server metadata
    GET /v2/health/live     200 while the server answers
    GET /v2/health/ready    200 when every served model's application is RUNNING, else 503
    *   /v2/models/<other>  404 naming the models that are served

Ray Serve routes by longest route prefix, so /v2/models/<name>/... reaches that model's own
application and only unknown names fall through to this one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from jointserve.protocol import ModelNotFound, json_response, error_response, relative_path

SERVER_NAME = "jointserve"
_STATUS_CACHE_S = 1.0


class ServerConfig(BaseModel):
    """user_config: the models served and the Serve applications behind them."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    models: dict[str, str] = Field(default_factory=dict)  # model name -> Serve application


@serve.deployment(name="server", max_ongoing_requests=64)
class OipServer:
    """Answers the server-wide OIP routes and 404s for unknown models."""

    def __init__(self, version: str) -> None:
        self._version = version
        self._config = ServerConfig()
        self._ready_cache: tuple[float, list[str]] = (0.0, [])

    def reconfigure(self, user_config: dict) -> None:
        self._config = ServerConfig.model_validate(user_config)
        self._ready_cache = (0.0, [])

    async def __call__(self, request: Request) -> Response:
        path = relative_path(request)
        if path == "":
            return json_response({"name": SERVER_NAME, "version": self._version, "extensions": []})
        if path == "/health/live":
            return json_response({"live": True})
        if path == "/health/ready":
            not_ready = await self._not_ready_models()
            if not_ready:
                return json_response({"ready": False, "not_ready": not_ready}, 503)
            return json_response({"ready": True})
        if path.startswith("/models/"):
            name = path[len("/models/"):].split("/", 1)[0]
            served = sorted(self._config.models)
            return error_response(
                ModelNotFound(f"model {name!r} is not served here; served models: {served}")
            )
        return error_response(ModelNotFound(f"no route {request.url.path!r}"))

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

"""HTTP adapter: the OIP v2 REST routes, mapped onto the data plane.

Routes of one model (`ModelEndpoint`), relative to the model's prefix /v2/models/<name>:

    GET  ""                      model metadata
    GET  /ready                  200 when a version is loaded, 503 otherwise
    POST /infer                  inference (JSON, or the binary data extension: the header
                                 Inference-Header-Content-Length gives the JSON part's length)
    ...  /versions/<v>/...       the same, pinned to version <v> (404 if <v> is not the one served)

Server-wide routes (`ServerEndpoint`), relative to /v2:

    GET  ""                      server metadata
    GET  /health/live            200 while the server answers
    GET  /health/ready           200 when every served model is ready, 503 otherwise
    *    /models/<other>/...     404 naming the models that are served

Any other method on a route is a 405 with an `Allow` header naming the one it takes (HEAD is
not taken where GET is: the OIP spec defines GET only). Every failure becomes
`{"error": "..."}` with the status on the exception; no exception escapes to Ray Serve, so a
malformed request never costs a replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ._dataplane import (
    INLINE_MAX_S,
    JSON_LENGTH_HEADER,
    LoadedModel,
    decode_request,
    infer,
    metadata,
)
from ._errors import (
    InferenceError,
    InvalidInput,
    MethodNotAllowed,
    ModelNotFound,
    ModelNotReady,
)

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"


def json_response(payload: Any, status_code: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response without Starlette's JSONResponse re-encoding overhead."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Response(body, status_code=status_code, headers=headers, media_type=JSON_TYPE)


def error_response(exc: InferenceError) -> Response:
    """The OIP error body for `exc`, with the status its class carries and its headers."""
    return json_response({"error": exc.message}, exc.status_code, exc.headers or None)


def relative_path(request: Request) -> str:
    """The request path below the application's route prefix (Ray Serve sets root_path to it)."""
    path: str = request.scope.get("path", "")
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path.rstrip("/")


async def answer(route: Callable[[Request], Awaitable[Response]], request: Request,
                 model_name: str) -> Response:
    """`route(request)`, with every failure turned into its OIP error response; never raises."""
    try:
        return await route(request)
    except InferenceError as exc:
        return error_response(exc)
    except Exception:  # noqa: BLE001 - the replica must survive anything a request does
        log.exception("model %s: unexpected error serving %s", model_name, request.url.path)
        return json_response({"error": "internal error; see the replica log"}, 500)


class ModelEndpoint:
    """The HTTP face of one served model; `loaded` is swapped in place on a version change."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loaded: LoadedModel | None = None

    async def handle(self, request: Request) -> Response:
        """Answer one HTTP request; never raises."""
        return await answer(self._route, request, self.name)

    async def _route(self, request: Request) -> Response:
        loaded = self.loaded  # one read: the whole request sees one version
        path = relative_path(request)
        if path.startswith("/versions/"):
            version, _, rest = path[len("/versions/"):].partition("/")
            if loaded is None or version != loaded.version:
                serving = loaded.version if loaded else "none"
                raise ModelNotFound(
                    f"model {self.name!r} version {version!r} is not served (serving: {serving})"
                )
            path = f"/{rest}" if rest else ""
        if path == "/infer":
            require_method(request, "POST")
            body = await request.body()
            inference = decode_request(body, json_header_length(request.headers))
            if loaded is not None and loaded.call_s > INLINE_MAX_S:  # see run_model
                return json_response(await asyncio.to_thread(infer, loaded, inference))
            return json_response(infer(loaded, inference))
        if path == "/ready":
            require_method(request, "GET")
            loaded = self._require_loaded(loaded)
            return json_response({"name": self.name, "ready": True, "version": loaded.version})
        if path == "":
            require_method(request, "GET")
            return json_response(metadata(self._require_loaded(loaded)).model_dump(exclude_none=True))
        raise ModelNotFound(f"no route {request.url.path!r}; see the OIP v2 REST API")

    def _require_loaded(self, loaded: LoadedModel | None) -> LoadedModel:
        if loaded is None:
            raise ModelNotReady(f"model {self.name!r} has no loaded version yet")
        return loaded


class ServerEndpoint:
    """The HTTP face of the server-wide routes: everything under /v2 but a served model's prefix.

    Ray-free, like ModelEndpoint: the Serve deployment (gateway.OipServer) supplies `served`,
    the names of the models served now, and `not_ready`, those of them that are not ready.
    """

    def __init__(self, name: str, version: str, served: Callable[[], Iterable[str]],
                 not_ready: Callable[[], Awaitable[list[str]]]) -> None:
        self.name = name
        self.version = version
        self._served = served
        self._not_ready = not_ready

    async def handle(self, request: Request) -> Response:
        """Answer one HTTP request; never raises."""
        return await answer(self._route, request, self.name)

    async def _route(self, request: Request) -> Response:
        path = relative_path(request)
        if path == "":
            require_method(request, "GET")
            return json_response({"name": self.name, "version": self.version, "extensions": []})
        if path == "/health/live":
            require_method(request, "GET")
            return json_response({"live": True})
        if path == "/health/ready":
            require_method(request, "GET")
            not_ready = await self._not_ready()
            if not_ready:
                return json_response({"ready": False, "not_ready": not_ready}, 503)
            return json_response({"ready": True})
        if path.startswith("/models/"):  # any method: the model is not there to take one
            name = path[len("/models/"):].split("/", 1)[0]
            served = sorted(self._served())
            raise ModelNotFound(f"model {name!r} is not served here; served models: {served}")
        raise ModelNotFound(f"no route {request.url.path!r}; see the OIP v2 REST API")


def json_header_length(headers: Mapping[str, str]) -> int | None:
    """The binary data extension's Inference-Header-Content-Length, or None when absent.

    `headers`: Starlette's (case-insensitive) Headers, or a dict with lowercase names as ASGI
    gives them. A value that is not a byte count is an InvalidInput (400).
    """
    value = headers.get(JSON_LENGTH_HEADER.lower())
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):  # int() would also take "-1", "+1", "1_0"
        raise InvalidInput(f"{JSON_LENGTH_HEADER} must be a byte count, got {value!r}")
    return int(text)


def require_method(request: Request, method: str, *more: str) -> None:
    """MethodNotAllowed (405, with `Allow: <methods>`) unless `request` uses one of the methods.

    Exact names only: HEAD is not implied by GET.
    """
    allowed = (method, *more)
    if request.method not in allowed:
        accepts = ", ".join(allowed)
        raise MethodNotAllowed(f"{request.url.path} accepts {accepts}, not {request.method}",
                               allowed)

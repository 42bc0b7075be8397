"""HTTP adapter: OIP v2 REST routes of one model, mapped onto the data plane.

Routes, relative to the model's prefix /v2/models/<name>:

    GET  ""                      model metadata
    GET  /ready                  200 when a version is loaded, 503 otherwise
    POST /infer                  inference (JSON, or the binary data extension: the header
                                 Inference-Header-Content-Length gives the JSON part's length)
    ...  /versions/<v>/...       the same, pinned to version <v> (404 if <v> is not the one served)

Every failure becomes `{"error": "..."}` with the status on the exception; no exception escapes
to Ray Serve, so a malformed request never costs a replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
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
from ._errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"


def json_response(payload: Any, status_code: int = 200) -> Response:
    """A JSON response without Starlette's JSONResponse re-encoding overhead."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Response(body, status_code=status_code, media_type=JSON_TYPE)


def error_response(exc: InferenceError) -> Response:
    """The OIP error body for `exc`, with the status its class carries."""
    return json_response({"error": exc.message}, exc.status_code)


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


class MethodNotAllowed(InvalidInput):
    status_code = 405


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


def require_method(request: Request, method: str) -> None:
    """MethodNotAllowed (405) unless `request` uses `method`."""
    if request.method != method:
        raise MethodNotAllowed(f"{request.url.path} accepts {method}, not {request.method}")

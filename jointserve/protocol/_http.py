"""HTTP adapter: the OIP v2 REST routes, mapped onto the data plane.

Routes of one model (`ModelEndpoint`), below the model's prefix /v2/models/<name>:

    GET  ""                      model metadata
    GET  /ready                  200 when a version is loaded, 503 otherwise
    POST /infer                  inference (JSON, or the binary data extension: the header
                                 Inference-Header-Content-Length gives the JSON part's length)
    ...  /versions/<v>/...       the same, pinned to version <v> (404 if <v> is not the one served)

Server-wide routes (`ServerEndpoint`), below /v2:

    GET  ""                      server metadata
    GET  /health/live            200 while the server answers
    GET  /health/ready           200 when every served model is ready, 503 otherwise
    *    /models/<other>/...     404 naming the models that are served

Any other method on a route is a 405 with an `Allow` header naming the one it takes (HEAD is
not taken where GET is: the OIP spec defines GET only). Every failure becomes
`{"error": "..."}` with the status on the exception; no exception escapes, so a malformed
request never costs a replica.

No web framework: a request is an `HttpRequest` (method, path, headers, the whole body) and
the answer an `HttpResponse`; `protocol.asgi_app` puts any handler of that shape on an ASGI
server. On the easy path a framework's request and response objects, routing table and
middleware were most of the replica's own CPU (issue 12's py-spy profile).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ._dataplane import (
    JSON_LENGTH_HEADER,
    LoadedModel,
    decode_request,
    metadata,
    prepare,
    require_loaded,
    respond,
    run_model,
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


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request as the routes see it: `headers` has lowercase names (as ASGI gives
    them) and `path` is the whole path, prefix included."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One answer: always JSON; `headers` are the extra ones (Allow on a 405, say)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def _default(value: Any) -> Any:
    """What orjson does not encode itself: numpy scalars, and arrays of other dtypes."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def dumps(payload: Any) -> bytes:
    """JSON bytes of `payload`; numpy arrays (encode_output's `data`) go straight from their
    buffer, without a Python float object per element."""
    return orjson.dumps(payload, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)


def json_response(payload: Any, status_code: int = 200,
                  headers: Mapping[str, str] | None = None) -> HttpResponse:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return HttpResponse(status_code, body, tuple(headers.items()) if headers else ())


def error_response(exc: InferenceError) -> HttpResponse:
    """The OIP error body for `exc`, with the status its class carries and its headers."""
    return json_response({"error": exc.message}, exc.status_code, exc.headers or None)


def under_route(path: str, prefix: str) -> bool:
    """Is `path` the route `prefix` or below it? (/v2/models/digits-edge is not below
    /v2/models/digits.)"""
    return path == prefix or path.startswith(prefix + "/")


def relative_path(request: HttpRequest, prefix: str) -> str:
    """The request path below `prefix` (a route's own prefix), without a trailing slash."""
    path = request.path
    if path.startswith(prefix):
        path = path[len(prefix):]
    return path.rstrip("/")


async def answer(route: Handler, request: HttpRequest, model_name: str) -> HttpResponse:
    """`route(request)`, with every failure turned into its OIP error response; never raises."""
    try:
        return await route(request)
    except InferenceError as exc:
        return error_response(exc)
    except Exception:  # noqa: BLE001 - the replica must survive anything a request does
        log.exception("model %s: unexpected error serving %s", model_name, request.path)
        return json_response({"error": "internal error; see the replica log"}, 500)


Runner = Callable[[LoadedModel, Any], Awaitable[dict[str, Any]]]


class ModelEndpoint:
    """The HTTP face of one served model; `loaded` is swapped in place on a version change.

    `infer`: how a decoded request is answered; the default runs it through the data plane
    (inline, or on a thread for a slow model); the cloud tier passes its batching queue.
    """

    def __init__(self, name: str, infer_request: Runner | None = None) -> None:
        self.name = name
        self.prefix = f"/v2/models/{name}"
        self.loaded: LoadedModel | None = None
        self._infer = infer_request or _infer_one

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request; never raises."""
        return await answer(self._route, request, self.name)

    async def _route(self, request: HttpRequest) -> HttpResponse:
        loaded = self.loaded  # one read: the whole request sees one version
        path = relative_path(request, self.prefix)
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
            inference = decode_request(request.body, json_header_length(request.headers))
            return json_response(await self._infer(loaded, inference))
        if path == "/ready":
            require_method(request, "GET")
            loaded = self._require_loaded(loaded)
            return json_response({"name": self.name, "ready": True, "version": loaded.version})
        if path == "":
            require_method(request, "GET")
            return json_response(metadata(self._require_loaded(loaded)).model_dump(exclude_none=True))
        raise ModelNotFound(f"no route {request.path!r}; see the OIP v2 REST API")

    def _require_loaded(self, loaded: LoadedModel | None) -> LoadedModel:
        if loaded is None:
            raise ModelNotReady(f"model {self.name!r} has no loaded version yet")
        return loaded


async def _infer_one(loaded: LoadedModel | None, inference: Any) -> dict[str, Any]:
    loaded = require_loaded(loaded)
    feeds, wanted = prepare(loaded, inference)
    outputs = await run_model(loaded, feeds, wanted)  # inline, or on a thread if slow
    return respond(loaded.name, loaded.version, inference, outputs, wanted)


class ServerEndpoint:
    """The HTTP face of the server-wide routes: everything under /v2 but a served model's prefix.

    Ray-free, like ModelEndpoint: the Serve deployment (ingress.OipServer) supplies `served`,
    the names of the models served now, and `not_ready`, those of them that are not ready.
    """

    prefix = "/v2"

    def __init__(self, name: str, version: str, served: Callable[[], Iterable[str]],
                 not_ready: Callable[[], Awaitable[list[str]]]) -> None:
        self.name = name
        self.version = version
        self._served = served
        self._not_ready = not_ready

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request; never raises."""
        return await answer(self._route, request, self.name)

    async def _route(self, request: HttpRequest) -> HttpResponse:
        if not under_route(request.path, self.prefix):
            raise ModelNotFound(f"no route {request.path!r}; see the OIP v2 REST API")
        path = relative_path(request, self.prefix)
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
        raise ModelNotFound(f"no route {request.path!r}; see the OIP v2 REST API")


def json_header_length(headers: Mapping[str, str]) -> int | None:
    """The binary data extension's Inference-Header-Content-Length, or None when absent.

    `headers`: lowercase names, as ASGI gives them. A value that is not a byte count is an
    InvalidInput (400).
    """
    value = headers.get(JSON_LENGTH_HEADER.lower())
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):  # int() would also take "-1", "+1", "1_0"
        raise InvalidInput(f"{JSON_LENGTH_HEADER} must be a byte count, got {value!r}")
    return int(text)


def require_method(request: HttpRequest, method: str, *more: str) -> None:
    """MethodNotAllowed (405, with `Allow: <methods>`) unless `request` uses one of the methods.

    Exact names only: HEAD is not implied by GET.
    """
    allowed = (method, *more)
    if request.method not in allowed:
        accepts = ", ".join(allowed)
        raise MethodNotAllowed(f"{request.path} accepts {accepts}, not {request.method}",
                               allowed)

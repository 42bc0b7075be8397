"""The gateway's two ways to reach the cloud model, behind one small interface.

    HandleCloud  a Serve deployment in the same Ray cluster, through a DeploymentHandle:
                 numpy tensors go by Ray's object transport, no JSON, no HTTP.
    HttpCloud    any OIP v2 server (another cluster, across a WAN), through one pooled
                 aiohttp.ClientSession: connections are reused, so a hard example pays one RTT.

Every failure is mapped here, once, to a `CloudCallError` carrying the reason the client will
see in the response (`cloud_unavailable`, `cloud_error`, `cloud_bad_response`); the caller
adds `cloud_timeout` (its deadline) and `circuit_open` (its breaker).
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import httpx
import numpy as np
from pydantic import ValidationError

from jointserve.protocol import InferenceResponse, encode_output
from jointserve.runtime import numpy_dtype

log = logging.getLogger(__name__)

CLOUD_UNAVAILABLE = "cloud_unavailable"
CLOUD_ERROR = "cloud_error"
CLOUD_BAD_RESPONSE = "cloud_bad_response"


class CloudCallError(Exception):
    """The cloud did not give a usable answer; `reason` is the client-visible fallback note."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CloudAnswer:
    version: str
    outputs: dict[str, np.ndarray]


class CloudClient(Protocol):
    """One cloud model; `infer` raises CloudCallError, never anything else but cancellation."""

    async def infer(self, feeds: Mapping[str, np.ndarray]) -> CloudAnswer: ...

    async def aclose(self) -> None: ...


class HandleCloud:
    """The cloud InferenceModel's Serve deployment, called through a DeploymentHandle."""

    def __init__(self, app_name: str, deployment_name: str = "model") -> None:
        from ray import serve

        self.app_name = app_name
        # _check_exists=False: no controller round trip here (reconfigure must not block on
        # it); a missing deployment shows up as a failed or timed-out call instead.
        handle = serve.get_deployment_handle(deployment_name, app_name, _check_exists=False)
        self._infer = handle.options(method_name="infer_tensors")

    async def infer(self, feeds: Mapping[str, np.ndarray]) -> CloudAnswer:
        try:
            answer = await self._infer.remote(dict(feeds))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a fallback reason
            raise CloudCallError(_handle_failure_reason(exc),
                                 f"{type(exc).__name__}: {_first_line(exc)}") from None
        return CloudAnswer(answer.version, answer.outputs)

    async def aclose(self) -> None:
        return None


def _handle_failure_reason(exc: Exception) -> str:
    """cloud_error when the cloud replica ran and raised, cloud_unavailable when it could not
    be reached (actor died, no replica, app deleted, controller gone, transport broke).

    Over Ray's object transport a replica's exception arrives wrapped in RayTaskError; over
    the gRPC transport (RAY_SERVE_THROUGHPUT_OPTIMIZED) it arrives as its own type. So the
    test is "is it one of the system's errors", not "is it a RayTaskError".
    """
    import grpc
    from ray.exceptions import RayError, RayTaskError
    from ray.serve.exceptions import RayServeException

    if isinstance(exc, RayTaskError):
        return CLOUD_ERROR
    if isinstance(exc, (RayError, RayServeException, grpc.RpcError, ConnectionError, OSError)):
        return CLOUD_UNAVAILABLE
    return CLOUD_ERROR


class HttpCloud:
    """A remote OIP v2 server's model, over pooled keep-alive HTTP connections.

    aiohttp rather than httpx: at c=1 the client's CPU time is on the hard path's latency, and
    an httpx.AsyncClient call took ~1.9 ms of CPU on a 2-core machine where the same aiohttp
    call takes ~0.5 ms (httpx, httpcore, h11 and anyio are layers of pure Python; httpcore also
    tries `import sniffio`, which anyio 4 no longer brings along, four times per call).
    """

    def __init__(self, infer_url: str, max_connections: int) -> None:
        self.infer_url = infer_url
        self._max_connections = max_connections
        # Resolved once, as httpx did when its client was made: aiohttp's trust_env would
        # look up proxies and .netrc on every call, each through a worker thread.
        self._proxy = _env_proxy(infer_url)
        self._ssl = _ssl_context() if urlsplit(infer_url).scheme == "https" else True
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def infer(self, feeds: Mapping[str, np.ndarray]) -> CloudAnswer:
        body = json.dumps({"inputs": [encode_output(n, a) for n, a in feeds.items()]}).encode()
        try:
            try:
                status, content = await self._post(body)
            except aiohttp.ServerDisconnectedError:
                # A kept-alive connection the server closed while idle, before this loop saw
                # the FIN: aiohttp retries that only for idempotent methods, and POST is not
                # one. An OIP infer has no side effects, so try once more on a new connection.
                status, content = await self._post(body)
        except (aiohttp.ClientError, TimeoutError) as exc:  # refused, reset, DNS, garbage, 60 s
            raise CloudCallError(CLOUD_UNAVAILABLE, f"{self.infer_url}: {type(exc).__name__}: {exc}") from None
        if status >= 500:
            raise CloudCallError(CLOUD_ERROR, f"{self.infer_url} answered {status}: {_text(content)}")
        if status != 200:
            # A 4xx means this gateway sent something the cloud model does not take: say so
            # in the log, the client still gets the edge answer.
            log.warning("cloud %s refused a request: %s %s", self.infer_url, status, _text(content))
            raise CloudCallError(CLOUD_ERROR, f"{self.infer_url} answered {status}: {_text(content)}")
        return _decode_answer(self.infer_url, content)

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        # A cancelled call (the caller's deadline, a client gone) closes its connection
        # instead of returning it to the pool, so a late answer is never read as the next.
        async with self._client().post(self.infer_url, data=body, headers=_JSON_HEADERS,
                                       proxy=self._proxy, ssl=self._ssl) as reply:
            return reply.status, await reply.read()

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop it runs on, and a gateway
        # builds its client before that loop serves requests with it.
        if self._closed:
            raise CloudCallError(CLOUD_UNAVAILABLE, f"{self.infer_url}: the client was closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Idle connections are dropped after 4 s, before the 5 s idle timeout of
                # common servers (uvicorn's default) closes them under us.
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=4.0),
                # The caller's deadline bounds the whole call; this only stops a leak if it did not.
                timeout=aiohttp.ClientTimeout(total=60.0),
            )
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()


_JSON_HEADERS = {"Content-Type": "application/json"}


def _env_proxy(url: str) -> str | None:
    """The proxy the environment sets for `url` (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, unless
    NO_PROXY names its host), or None."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def _ssl_context() -> ssl.SSLContext:
    # The CAs httpx trusted before: SSL_CERT_FILE / SSL_CERT_DIR if set, else certifi's bundle.
    return httpx.create_ssl_context()


def _text(content: bytes) -> str:
    return content[:200].decode("utf-8", errors="replace")


class NoCloud:
    """The cloud model is not deployed (yet, or any more): hard inputs get the edge answer."""

    def __init__(self, why: str) -> None:
        self.why = why

    async def infer(self, feeds: Mapping[str, np.ndarray]) -> CloudAnswer:
        raise CloudCallError(CLOUD_UNAVAILABLE, self.why)

    async def aclose(self) -> None:
        return None


def _decode_answer(url: str, content: bytes) -> CloudAnswer:
    try:
        response = InferenceResponse.model_validate_json(content)
        outputs = {
            out.name: np.asarray(out.data, dtype=numpy_dtype(out.datatype)).reshape(out.shape)
            for out in response.outputs
        }
    except (ValidationError, ValueError, TypeError, KeyError) as exc:
        raise CloudCallError(CLOUD_BAD_RESPONSE, f"{url}: not an OIP v2 response: {_first_line(exc)}") from None
    return CloudAnswer(response.model_version or "", outputs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__

"""The gateway's way to reach the cloud model: OIP over pooled HTTP, one code path for both
kinds of cloud.

    in the cluster   the cloud InferenceModel's replica listeners, straight (no proxy hop);
                     their addresses come from the listener registry (`ListenerUrls`)
    remote           any OIP v2 server (another cluster, across a WAN), at a fixed URL

Either way one pooled aiohttp.ClientSession: connections are reused, so a hard example pays
one round trip. A DeploymentHandle was the in-cluster path before: ~3 ms per hard request
at c=1 against ~1.6 ms over HTTP through a TCP proxy (docs/architecture.md, "Measured
figures the code relies on").

Every failure is mapped here, once, to a `CloudCallError` carrying the reason the client will
see in the response (`cloud_unavailable`, `cloud_error`, `cloud_bad_response`); the caller
adds `cloud_timeout` (its deadline) and `circuit_open` (its breaker).
"""

from __future__ import annotations

import itertools
import logging
import ssl
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import httpx
import numpy as np
from pydantic import ValidationError

from jointserve.contract import route_prefix
from jointserve.protocol import InferenceResponse, dumps, encode_output
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


class ListenerUrls:
    """The infer URLs of one in-cluster model's replica listeners, kept current from the
    listener registry's table (`update`, called by the gateway's `follow` task)."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._urls: list[str] = []
        self._turn = itertools.count()

    def update(self, routes: Mapping[str, Sequence[str]]) -> None:
        path = f"{route_prefix(self.model_name)}/infer"
        self._urls = [f"http://{address}{path}" for address in routes.get(self.model_name, ())]

    def rotation(self) -> list[str]:
        """Every URL, starting from the next one in turn: round robin, and the rest are the
        replicas to try when one refuses the connection."""
        urls = self._urls
        if len(urls) <= 1:
            return urls
        start = next(self._turn) % len(urls)
        return urls[start:] + urls[:start]

    def __str__(self) -> str:
        return f"the listeners of model {self.model_name!r}"


class HttpCloud:
    """An OIP v2 model over pooled keep-alive HTTP: at a fixed URL, or at its listeners.

    aiohttp rather than httpx: at c=1 the client's CPU time is on the hard path's latency, and
    an httpx.AsyncClient call took ~1.9 ms of CPU on a 2-core machine where the same aiohttp
    call takes ~0.5 ms (httpx, httpcore, h11 and anyio are layers of pure Python; httpcore also
    tries `import sniffio`, which anyio 4 no longer brings along, four times per call).
    """

    def __init__(self, infer_urls: str | ListenerUrls, max_connections: int) -> None:
        self._urls = infer_urls
        self.infer_url = str(infer_urls)  # for messages
        self._max_connections = max_connections
        remote = isinstance(infer_urls, str)
        # Resolved once, as httpx did when its client was made: aiohttp's trust_env would
        # look up proxies and .netrc on every call, each through a worker thread. Listeners
        # in the cluster are never reached through a proxy.
        self._proxy = _env_proxy(infer_urls) if remote else None
        self._ssl = _ssl_context() if remote and urlsplit(infer_urls).scheme == "https" else True
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def infer(self, feeds: Mapping[str, np.ndarray]) -> CloudAnswer:
        body = dumps({"inputs": [encode_output(n, a) for n, a in feeds.items()]})
        urls = [self._urls] if isinstance(self._urls, str) else self._urls.rotation()
        for attempt, url in enumerate(urls, 1):
            try:
                status, content = await self._post_once_more_if_stale(url, body)
            except aiohttp.ClientConnectorError as exc:
                if attempt < len(urls):  # refused: that replica is gone, try the next one
                    continue
                raise CloudCallError(CLOUD_UNAVAILABLE, f"{url}: {type(exc).__name__}: {exc}") from None
            except (aiohttp.ClientError, TimeoutError) as exc:  # reset, garbage, 60 s
                raise CloudCallError(CLOUD_UNAVAILABLE, f"{url}: {type(exc).__name__}: {exc}") from None
            return _answer(url, status, content)
        raise CloudCallError(CLOUD_UNAVAILABLE, f"{self.infer_url}: no replica listener is published")

    async def _post_once_more_if_stale(self, url: str, body: bytes) -> tuple[int, bytes]:
        try:
            return await self._post(url, body)
        except aiohttp.ServerDisconnectedError:
            # A kept-alive connection the server closed while idle, before this loop saw the
            # FIN: aiohttp retries that only for idempotent methods, and POST is not one. An
            # OIP infer has no side effects, so try once more on a new connection.
            return await self._post(url, body)

    async def _post(self, url: str, body: bytes) -> tuple[int, bytes]:
        # A cancelled call (the caller's deadline, a client gone) closes its connection
        # instead of returning it to the pool, so a late answer is never read as the next.
        async with self._client().post(url, data=body, headers=_JSON_HEADERS,
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


def _answer(url: str, status: int, content: bytes) -> CloudAnswer:
    if status >= 500:
        raise CloudCallError(CLOUD_ERROR, f"{url} answered {status}: {_text(content)}")
    if status != 200:
        # A 4xx means this gateway sent something the cloud model does not take: say so in
        # the log, the client still gets the edge answer.
        log.warning("cloud %s refused a request: %s %s", url, status, _text(content))
        raise CloudCallError(CLOUD_ERROR, f"{url} answered {status}: {_text(content)}")
    return _decode_answer(url, content)


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

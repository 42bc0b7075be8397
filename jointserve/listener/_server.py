"""One replica's own HTTP listener: uvicorn's httptools protocol on the replica's event loop.

Ray's async actors run on uvloop, so the listener shares the loop the replica's code (its
model, its reconfigure) already runs on: no thread hop, no second loop. Only uvicorn's
connection protocol is used (`Server.startup`/`shutdown`, never `serve()`), so it installs
no signal handlers in the Ray worker and runs no tick loop of its own.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jointserve.protocol import Handler, HttpRequest, HttpResponse, asgi_app

# What the front door's health checks ask every listener (HAProxy's `option httpchk`): a
# listener answers it itself, whatever model it serves.
HEALTH_PATH = "/v2/health/live"
_LIVE = HttpResponse(200, b'{"live":true}')

# Longer than anything in front keeps an idle connection (HAProxy pools server connections
# and reuses them): the side that closes an idle connection first races the next request on
# it, so let that side be the proxy, which retries on a fresh connection.
KEEP_ALIVE_S = 300


class Listener:
    """An HTTP server for one handler on `host` (port 0: any free port), with in-flight
    counts for draining and for the autoscaler."""

    def __init__(self, handle: Handler, host: str, port: int = 0) -> None:
        self.host = host
        self.port = port
        self.in_flight = 0
        self._handle = handle
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: uvicorn.Server | None = None

    @property
    def address(self) -> str:
        """host:port, as a proxy dials it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> str:
        """Bind and start answering; returns the address."""
        if self._server is not None:
            return self.address
        sock = _bound_socket(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            asgi_app(self._counted), http=OneWriteHttpToolsProtocol, ws="none", lifespan="off",
            interface="asgi3", access_log=False, log_level="warning", proxy_headers=False,
            server_header=False, date_header=False, timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        config.load()
        # What Server._serve does before startup (lifespan "off": a no-op object); serve()
        # itself would install signal handlers and run a tick loop, which we do not want.
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server = server
        return self.address

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request is in flight (at most `timeout_s`); True if none is."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop accepting, let the requests in flight finish, close every connection."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def _counted(self, request: HttpRequest) -> HttpResponse:
        if request.path == HEALTH_PATH and request.method == "GET":
            return _LIVE
        self.in_flight += 1
        self._idle.clear()
        try:
            return await self._handle(request)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"listener: cannot bind {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, sending each response in one write.

    uvicorn writes a response's head and body with two `transport.write` calls, two
    segments on the wire. A replica killed between them (SIGKILL, OOM) leaves the proxy
    holding half a response, which it can no longer retry elsewhere: the client gets a
    truncated body (seen once in a test killing a gateway replica under load). Joined, the
    response is all there or not at all, and the proxy retries a connection that answered
    nothing (`retry-on empty-response`). One syscall less per response, too.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescedWrites(transport, self.loop))  # type: ignore[arg-type]


class _CoalescedWrites:
    """A transport whose writes within one turn of the event loop go out as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def __getattr__(self, name: str) -> Any:  # everything else: the transport's own
        return getattr(self._transport, name)

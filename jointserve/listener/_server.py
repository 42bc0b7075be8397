"""One replica's own HTTP listener: HTTP/1.1 (`_http1`) on the replica's event loop.

Ray's async actors run on uvloop, so the listener shares the loop the replica's code (its
model, its reconfigure) already runs on: no thread hop, no second loop, no signal handlers
or tick loop of a server framework in the Ray worker.
"""

from __future__ import annotations

import asyncio
import socket

from jointserve.protocol import MAX_BODY_BYTES, Handler, HttpRequest, HttpResponse

from ._http1 import Connections

# What the front door's health checks ask every listener (HAProxy's `option httpchk`): a
# listener answers it itself, whatever model it serves.
HEALTH_PATH = "/v2/health/live"
_LIVE = HttpResponse(200, b'{"live":true}')

# Longer than anything in front keeps an idle connection (HAProxy pools server connections
# and reuses them): the side that closes an idle connection first races the next request on
# it, so let that side be the proxy, which retries on a fresh connection.
KEEP_ALIVE_S = 300
# How long a closing listener lets the requests in flight finish.
GRACEFUL_CLOSE_S = 5.0
_BACKLOG = 1024


class Listener:
    """An HTTP server for one handler on `host` (port 0: any free port), with in-flight
    counts for draining and for the autoscaler."""

    def __init__(self, handle: Handler, host: str, port: int = 0, *,
                 max_body_bytes: int = MAX_BODY_BYTES, keep_alive_s: float = KEEP_ALIVE_S) -> None:
        self.host = host
        self.port = port
        self.in_flight = 0
        self._handle = handle
        self._max_body_bytes = max_body_bytes
        self._keep_alive_s = keep_alive_s
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: asyncio.Server | None = None
        self._connections: Connections | None = None

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
        loop = asyncio.get_running_loop()
        self._connections = Connections(self._counted, loop, self._keep_alive_s,
                                        self._max_body_bytes)
        self._server = await loop.create_server(self._connections.new_connection, sock=sock,
                                                backlog=_BACKLOG)
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
        if server is not None and self._connections is not None:
            server.close()
            await self._connections.close(GRACEFUL_CLOSE_S)

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
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock

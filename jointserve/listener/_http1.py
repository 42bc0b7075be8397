"""HTTP/1.1 for one `Handler`, straight on httptools: a request in, one write out.

Why not uvicorn's protocol under an ASGI app: behind HAProxy, the gateway's own Python work
per request is what bounds an easy request's latency and a core's throughput, and ~17% of
its samples were the ASGI layer itself (uvicorn's `RequestResponseCycle`, its `send` building headers
from message dicts, the app translating scope and messages back into an `HttpRequest`). Here
httptools (the parser uvicorn uses) calls back into one small object per connection, which
hands the `HttpRequest` to the handler and writes the whole response with one `write`.

What it keeps from a production server: keep-alive with an idle timeout, pipelined requests
answered in order (reading pauses while they queue up), `Expect: 100-continue`, chunked
request bodies, limits on header and body size (431 / 413), a 400 for unparsable input that
never reaches the handler, and a graceful close that lets the requests in flight finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from jointserve.protocol import (MAX_BODY_BYTES, JSON_TYPE, Handler, HttpRequest, HttpResponse,
                                 json_response)

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {status.value: status.phrase.encode("latin-1") for status in HTTPStatus}
_HEAD_END = b"content-type: " + JSON_TYPE.encode("latin-1") + b"\r\ncontent-length: "


def encode_response(response: HttpResponse, keep_alive: bool, head: bool = False) -> bytes:
    """Status line, headers and body as one buffer (one `write`, one segment on loopback:
    a replica killed mid-response leaves nothing half-sent that a proxy could not retry)."""
    status = response.status
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"")), _HEAD_END,
             str(len(response.body)).encode("ascii"), b"\r\n"]
    for name, value in response.headers:
        parts.append(b"%s: %s\r\n" % (name.lower().encode("latin-1"), value.encode("latin-1")))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head:  # a HEAD answer has the headers of a GET's, and no body
        parts.append(response.body)
    return b"".join(parts)


def _error(status: int, message: str) -> HttpResponse:
    return json_response({"error": message}, status)


class Connections:
    """What every connection of one listener shares: the handler, the loop, the limits, and
    the set of open connections (for a graceful close)."""

    def __init__(self, handle: Handler, loop: asyncio.AbstractEventLoop, keep_alive_s: float,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.handle = handle
        self.loop = loop
        self.keep_alive_s = keep_alive_s
        self.max_body_bytes = max_body_bytes
        self.open: set[Http1Connection] = set()
        self.closing = False

    def new_connection(self) -> Http1Connection:
        return Http1Connection(self)

    async def close(self, timeout_s: float) -> None:
        """Close idle connections now and busy ones once their responses are written;
        after `timeout_s`, close whatever is left."""
        self.closing = True
        for connection in list(self.open):
            connection.close_when_idle()
        deadline = self.loop.time() + timeout_s
        while self.open and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.open):
            connection.abort()


class Http1Connection(asyncio.Protocol):
    """One client connection (for the front door: one pooled HAProxy server connection)."""

    def __init__(self, shared: Connections) -> None:
        self._shared = shared
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[tuple[HttpRequest, bool]] = deque()  # parsed, not yet answered
        self._busy = False
        self._paused = False  # reading, while pipelined requests wait to be answered
        self._idle_timer: asyncio.TimerHandle | None = None
        self._active_at = 0.0  # loop time of the last data in or answer out
        # The request being parsed.
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._refused: HttpResponse | None = None  # the answer to a request refused unread
        self._broken = False  # the stream is past a point it can be parsed from

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._shared.open.add(self)
        self._active_at = self._shared.loop.time()
        self._arm_idle_timer(self._active_at)

    def connection_lost(self, exc: Exception | None) -> None:
        self._shared.open.discard(self)
        self._cancel_idle_timer()
        self._transport = None
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        self._active_at = self._shared.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request is answered as if it had asked for no upgrade; what follows it
            # would be the other protocol, so the connection ends there.
            self._broken = True
        except httptools.HttpParserError as exc:  # a limit's callback error is one, too
            self._broken = True
            self._refused = self._refused or _error(400, f"malformed HTTP request: {exc}")
        if self._broken and not self._busy:
            # Busy: the requests parsed before it are answered first (see _answer).
            self._refuse_and_close()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        # Lowercase names, as the routes expect; a repeated header keeps its last value.
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._shared.max_body_bytes:
            self._refuse_body()
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._shared.max_body_bytes:
            self._refuse_body()
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = httptools.parse_url(self._url).path.decode("latin-1")
        if "%" in path:
            path = unquote(path)  # as ASGI servers give it
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = HttpRequest(self._parser.get_method().decode("ascii"), path, self._headers, body)
        self._queue.append((request, self._parser.should_keep_alive()))
        if not self._busy:
            self._next()
        elif not self._paused and self._transport is not None:
            # Pipelined: read no more until the queue is answered. Only then, because a
            # pause and a resume per request cost two calls into the loop and a poller update.
            self._paused = True
            self._transport.pause_reading()

    def _refuse_body(self) -> None:
        self._refused = _error(413, f"request body over {self._shared.max_body_bytes} bytes")
        raise httptools.HttpParserCallbackError("body too large")

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refused = _error(431, f"request headers over {MAX_HEADER_BYTES} bytes")
            raise httptools.HttpParserCallbackError("headers too large")

    # -- answering --------------------------------------------------------------------------

    def _next(self) -> None:
        """Answer the oldest parsed request."""
        request, keep_alive = self._queue.popleft()
        self._busy = True
        task = self._shared.loop.create_task(self._answer(request, keep_alive))
        task.add_done_callback(_log_crash)

    async def _answer(self, request: HttpRequest, keep_alive: bool) -> None:
        try:
            response = await self._shared.handle(request)
        except Exception:  # noqa: BLE001 - the handler should never raise; stay up if it does
            log.exception("listener: handler failed on %s %s", request.method, request.path)
            response = _error(500, "internal error; see the replica log")
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = keep_alive and not self._shared.closing
        transport.write(encode_response(response, keep_alive, head=request.method == "HEAD"))
        self._busy = False
        self._active_at = self._shared.loop.time()
        if not keep_alive:
            transport.close()
        elif self._queue:
            self._next()
        elif self._broken:
            self._refuse_and_close()
        elif self._paused:
            self._paused = False
            transport.resume_reading()

    def _refuse_and_close(self) -> None:
        """Answer the request that never reached the handler (if one was refused), and
        close: the rest of the stream cannot be trusted to start at a request boundary."""
        response, self._refused = self._refused, None
        self._queue.clear()
        if self._transport is not None and not self._transport.is_closing():
            if response is not None:
                self._transport.write(encode_response(response, keep_alive=False))
            self._transport.close()

    # -- idle connections -------------------------------------------------------------------

    def close_when_idle(self) -> None:
        if not self._busy and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _arm_idle_timer(self, since: float) -> None:
        # One timer per connection, moved on only when it fires: arming and cancelling one
        # per request was ~2% of a gateway's samples at c=8.
        self._idle_timer = self._shared.loop.call_at(since + self._shared.keep_alive_s,
                                                     self._idle_out)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_out(self) -> None:
        loop, keep_alive_s = self._shared.loop, self._shared.keep_alive_s
        if self._busy or loop.time() - self._active_at < keep_alive_s:
            self._arm_idle_timer(loop.time() if self._busy else self._active_at)
            return
        self._idle_timer = None
        self.close_when_idle()


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("listener: connection task failed", exc_info=task.exception())

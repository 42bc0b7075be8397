"""Any `Handler` (HttpRequest -> HttpResponse) as a bare ASGI application.

What the replicas' listeners run (jointserve.listener) and what tests drive with Starlette's
TestClient. Nothing but reading the body, one call, and two `send`s: no framework routing,
request objects or middleware on the hot path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ._http import JSON_TYPE, Handler, HttpRequest, dumps

# A body larger than this is refused (413) before it is read into memory: OIP bodies of the
# models served here are kilobytes; a 64 MiB image batch still fits.
MAX_BODY_BYTES = 64 * 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_HEADER = (b"content-type", JSON_TYPE.encode())


class BodyTooLarge(Exception):
    pass


def asgi_app(handle: Handler, max_body_bytes: int = MAX_BODY_BYTES) -> AsgiApp:
    """`handle` as an ASGI 3 application (HTTP only; lifespan events are acknowledged)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            body = await _read_body(receive, max_body_bytes)
        except BodyTooLarge:
            await _send(send, 413, dumps({"error": f"request body over {max_body_bytes} bytes"}), ())
            return
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"]}
        response = await handle(HttpRequest(scope["method"], scope["path"], headers, body))
        await _send(send, response.status, response.body, response.headers)

    return app


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        parts.append(chunk)
    return b"".join(parts)


async def _send(send: Send, status: int, body: bytes, extra: tuple[tuple[str, str], ...]) -> None:
    headers = [_JSON_HEADER, (b"content-length", str(len(body)).encode())]
    headers.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

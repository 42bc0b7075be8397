"""A replica's own listener (jointserve.listener.Listener) on a real socket, spoken to raw.

Each test runs the listener on its own uvloop event loop (as in a Ray replica) and talks
to it from a thread through plain sockets, byte for byte as a proxy or a client would.
What is asserted is what goes over the wire; nothing depends on timing beyond bounded waits.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvloop

from jointserve.listener import HEALTH_PATH, Listener
from jointserve.protocol import HttpRequest, HttpResponse, dumps

READ_TIMEOUT_S = 10.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await coro
    uvloop.run(bounded())


class Recorder:
    """A handler answering {"method", "path", "body", "headers"}; `gate` can hold a path."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.gate: dict[str, asyncio.Event] = {}

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        self.seen.append(request.path)
        if request.path in self.gate:
            await self.gate[request.path].wait()
        if request.path == "/boom":
            raise RuntimeError("a handler bug")
        return HttpResponse(200, dumps({"method": request.method, "path": request.path,
                                        "body": request.body.decode(), "headers": dict(request.headers)}),
                            (("X-Extra", "yes"),))


async def exchange(port: int, data: bytes, responses: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    """Send `data` on one connection, read `responses` answers (or until it closes)."""
    return await asyncio.to_thread(_exchange, port, data, responses)


def _exchange(port: int, data: bytes, responses: int) -> list[tuple[int, dict[str, str], bytes]]:
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        answers = []
        while len(answers) < responses:
            answer = _read_response(stream)
            if answer is None:
                break
            answers.append(answer)
        return answers


def _read_response(stream: Any) -> tuple[int, dict[str, str], bytes] | None:
    status_line = stream.readline()
    if not status_line:
        return None
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 100:
        return status, headers, b""
    length = int(headers.get("content-length", "0"))
    return status, headers, stream.read(length)


def closed_after(port: int, data: bytes) -> bool:
    """Whether the listener closes the connection after answering `data` once."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        _read_response(stream)
        return stream.read(1) == b""


def with_listener(test: Callable[[Listener, Recorder], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        handler = Recorder()
        listener = Listener(handler, "127.0.0.1", **options)
        await listener.start()
        try:
            await test(listener, handler)
        finally:
            await listener.close()
    run(main())


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), extra, len(body), body))


def test_keep_alive_answers_in_order_with_lowercase_headers_and_a_json_body() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        answers = await exchange(listener.port, post("/v2/models/m/infer", b'{"a":1}', b"X-Mixed-Case: v\r\n")
                                 + b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\n\r\n", responses=2)
        assert [status for status, _, _ in answers] == [200, 200]
        first, second = (json.loads(body) for _, _, body in answers)
        assert first["method"] == "POST" and first["body"] == '{"a":1}'
        assert first["headers"]["x-mixed-case"] == "v"
        assert second["path"] == "/v2/models/m"
        headers = answers[0][1]
        assert headers["content-type"] == "application/json"
        assert headers["x-extra"] == "yes"
        assert "connection" not in headers  # kept alive
    with_listener(check)


def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slow() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        handler.gate["/slow"] = asyncio.Event()
        pending = asyncio.create_task(exchange(
            listener.port, post("/slow", b"1") + post("/fast", b"2"), responses=2))
        while handler.seen != ["/slow"]:  # the second waits until the first is answered
            await asyncio.sleep(0.01)
        handler.gate["/slow"].set()
        answers = await pending
        assert [json.loads(body)["path"] for _, _, body in answers] == ["/slow", "/fast"]
        assert handler.seen == ["/slow", "/fast"]
    with_listener(check)


def test_a_chunked_body_and_a_percent_encoded_path_arrive_decoded() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        chunked = (b"POST /v2/models/a%2Db/infer?x=1 HTTP/1.1\r\nHost: x\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        [(status, _, body)] = await exchange(listener.port, chunked)
        assert status == 200
        assert json.loads(body)["path"] == "/v2/models/a-b/infer"  # no query, decoded
        assert json.loads(body)["body"] == "abcde"
    with_listener(check)


def test_malformed_input_gets_a_400_naming_it_and_the_listener_keeps_serving() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        [(status, headers, body)] = await exchange(listener.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert status == 400
        assert "malformed HTTP request" in json.loads(body)["error"]
        assert headers["connection"] == "close"
        assert handler.seen == []
        # A good request on the same stream before the junk is still answered, first.
        answers = await exchange(listener.port, post("/ok", b"1") + b"JUNK\r\n\r\n", responses=2)
        assert [status for status, _, _ in answers] == [200, 400]
        [(status, _, _)] = await exchange(listener.port, post("/again", b"1"))
        assert status == 200
    with_listener(check)


def test_a_body_over_the_limit_is_refused_unread_with_413() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        declared = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
        [(status, _, body)] = await exchange(listener.port, declared)
        assert status == 413 and "over 100 bytes" in json.loads(body)["error"]
        chunked = (b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"40\r\n" + b"x" * 64 + b"\r\n" + b"40\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n")
        [(status, _, _)] = await exchange(listener.port, chunked)
        assert status == 413
        assert handler.seen == []
        [(status, _, _)] = await exchange(listener.port, post("/small", b"x" * 100))
        assert status == 200
    with_listener(check, max_body_bytes=100)


def test_headers_over_the_limit_get_431() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        huge = b"GET /h HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n"
        [(status, _, body)] = await exchange(listener.port, huge)
        assert status == 431 and "headers" in json.loads(body)["error"]
        assert handler.seen == []
    with_listener(check)


def test_a_connection_in_use_stays_open_past_the_keep_alive_and_closes_once_idle() -> None:
    keep_alive_s = 0.5

    def use_then_idle(port: int) -> tuple[int, float, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as sock:
            stream = sock.makefile("rb")
            answered, started = 0, time.monotonic()
            # Back to back, for three keep-alive periods: never idle for one.
            while time.monotonic() - started < 3 * keep_alive_s:
                sock.sendall(post("/again", b"{}"))
                answer = _read_response(stream)
                assert answer is not None and answer[0] == 200, answered
                answered += 1
            return answered, time.monotonic() - started, stream.read(1)  # b"": closed

    async def test(listener: Listener, handler: Recorder) -> None:
        answered, used_s, after_idle = await asyncio.to_thread(use_then_idle, listener.port)
        assert used_s >= 3 * keep_alive_s and answered == len(handler.seen)
        assert after_idle == b""

    with_listener(test, keep_alive_s=keep_alive_s)


def test_http10_and_connection_close_end_the_connection_after_the_answer() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        assert await asyncio.to_thread(closed_after, listener.port, b"GET /old HTTP/1.0\r\n\r\n")
        assert await asyncio.to_thread(closed_after, listener.port,
                                       b"GET /c HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert handler.seen == ["/old", "/c"]
    with_listener(check)


def test_expect_100_continue_and_head() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        answers = await exchange(listener.port, post("/e", b"ok", b"Expect: 100-continue\r\n"), responses=2)
        assert [status for status, _, _ in answers] == [100, 200]
        assert json.loads(answers[1][2])["body"] == "ok"
        with socket.create_connection(("127.0.0.1", listener.port), timeout=READ_TIMEOUT_S) as sock:
            await asyncio.to_thread(sock.sendall, b"HEAD /h HTTP/1.1\r\nConnection: close\r\n\r\n")
            raw = await asyncio.to_thread(_read_all, sock)
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head
        assert body == b""  # the length a GET would have, no body
    with_listener(check)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_handler_that_raises_gets_a_500_and_the_listener_stays_up() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        answers = await exchange(listener.port, post("/boom", b"1") + post("/fine", b"2"), responses=2)
        assert [status for status, _, _ in answers] == [500, 200]
        assert "internal error" in json.loads(answers[0][2])["error"]
    with_listener(check)


def test_health_is_answered_without_counting_in_flight() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        [(status, _, body)] = await exchange(listener.port, f"GET {HEALTH_PATH} HTTP/1.0\r\n\r\n".encode())
        assert status == 200 and json.loads(body) == {"live": True}
        assert handler.seen == [] and listener.in_flight == 0
    with_listener(check)


def test_close_finishes_the_request_in_flight_then_refuses_new_connections() -> None:
    async def check(listener: Listener, handler: Recorder) -> None:
        handler.gate["/busy"] = asyncio.Event()
        busy = asyncio.create_task(exchange(listener.port, post("/busy", b"1")))
        idle = socket.create_connection(("127.0.0.1", listener.port), timeout=READ_TIMEOUT_S)
        while handler.seen != ["/busy"]:
            await asyncio.sleep(0.01)
        assert listener.in_flight == 1
        assert not await listener.drain(0.05)
        closing = asyncio.create_task(listener.close())
        assert await asyncio.to_thread(idle.recv, 1) == b""  # the idle connection is closed
        idle.close()
        handler.gate["/busy"].set()
        [(status, headers, _)] = await busy
        assert status == 200 and headers["connection"] == "close"
        await closing
        assert await listener.drain(0.05)
        try:
            socket.create_connection(("127.0.0.1", listener.port), timeout=1).close()
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError("a closed listener still accepts connections")
    with_listener(check)

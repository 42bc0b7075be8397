"""Load generation with vegeta, run as its own process, and a trivial endpoint for its ceiling.

Two load shapes:

* closed loop at concurrency N (`rate=None`): `vegeta attack -rate=0 -workers=N -max-workers=N`
  -- N workers each send a request as soon as their previous one finished;
* open loop at a fixed arrival rate R (`rate=R`): `vegeta attack -rate=R/1s` -- requests are
  issued on a constant schedule whether or not earlier ones came back, so a slow server shows up
  as latency instead of as a quietly lowered request rate (no coordinated omission). vegeta adds
  workers as needed; `concurrency`, if given too, caps them.

Targets use vegeta's JSON format, so many different bodies (e.g. 400 digit samples) are sent
round-robin in order (vegeta reads them all, then hands out target i mod n, lib/targets.go).
Figures come from `vegeta report -type=json`: latencies there are t-digest estimates
(compression 100) in ns; max and mean are exact.

`python -m benchmarks.loadgen` prints the generator's ceiling (vegeta against the trivial
endpoint). That server is a single-threaded Python asyncio responder sharing the 2 cores with
vegeta, so the figure is a lower bound on what vegeta itself can issue, and an upper bound on
what any Python server measured with it could show.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from benchmarks import tools

REPO = Path(__file__).resolve().parent.parent
JSON_HEADERS: Mapping[str, str] = MappingProxyType({"Content-Type": "application/json"})


@dataclass(frozen=True)
class Target:
    """One request vegeta sends; a sequence of them is cycled through in order."""

    url: str
    body: bytes
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))

    def to_vegeta(self) -> dict[str, Any]:
        """vegeta's JSON target: body base64, header values as lists (Go's http.Header)."""
        return {
            "method": self.method,
            "url": self.url,
            "body": base64.b64encode(self.body).decode("ascii"),
            "header": {name: [value] for name, value in self.headers.items()},
        }


@dataclass
class LoadResult:
    """One measured attack. Times in ms; throughput counts 2xx responses only."""

    requests: int
    duration_s: float  # first request issued -> last response received
    throughput_rps: float  # 2xx responses per second over duration_s
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    failures: int  # requests - 2xx responses: non-2xx statuses and transport errors (code "0")
    status_codes: dict[str, int]
    errors: list[str]  # up to MAX_ERRORS distinct error texts
    rate_rps: float = 0.0  # the rate requests were issued at (check it against an open-loop R)
    p95_ms: float = 0.0
    # CPU seconds (user + sys) vegeta spent on the measured attack: on 2 cores this says how
    # much of the machine the generator took from the system under test.
    loadgen_cpu_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_ERRORS = 20


def run_load(
    targets: Sequence[Target],
    *,
    duration_s: float,
    concurrency: int | None = None,
    rate: float | None = None,
    warmup_s: float = 0.0,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Attack `targets` for `duration_s` (after a discarded warm-up) and return the figures."""
    if not targets:
        raise ValueError("run_load needs at least one target")
    if rate is None and not concurrency:
        raise ValueError("give a concurrency (closed loop) or a rate (open loop)")
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    with tempfile.TemporaryDirectory(prefix="jointserve-vegeta-") as tmp:
        targets_file = Path(tmp) / "targets.jsonl"
        _write_targets(targets, targets_file)
        args = _attack_args(targets_file, concurrency=concurrency, rate=rate, timeout_s=timeout_s)
        if warmup_s > 0:
            # Same shape of load, results thrown away, so the server's lazy initialisation,
            # caches and pools are warm. The measured attack is a new vegeta process and opens
            # its own connections again (N loopback handshakes at its start: negligible).
            _attack(args, warmup_s, timeout_s, Path(os.devnull))
        results_file = Path(tmp) / "results.bin"
        cpu_s = _attack(args, duration_s, timeout_s, results_file)
        result = _report(results_file)
        result.loadgen_cpu_s = cpu_s
        return result


def generator_ceiling(duration_s: float = 3.0, concurrency: int = 8) -> LoadResult:
    """vegeta, closed loop, against the trivial endpoint: a lower bound on its own ceiling."""
    with TrivialServer() as server:
        target = Target(url=server.url("/"), body=b'{"inputs": []}')
        return run_load([target], duration_s=duration_s, concurrency=concurrency,
                        warmup_s=min(1.0, duration_s))


# --- vegeta invocation ---------------------------------------------------------------------


def _write_targets(targets: Sequence[Target], path: Path) -> None:
    with path.open("w") as out:
        for target in targets:
            out.write(json.dumps(target.to_vegeta(), separators=(",", ":")) + "\n")


def _go_duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"  # Go's time.ParseDuration rejects "1e-05s"


def _rate_flag(rate: float) -> str:
    # vegeta's rate is an integer count per period: express fractional rates per 1000 s.
    if rate <= 0:
        raise ValueError("rate must be positive (use concurrency for a closed loop)")
    if float(rate).is_integer():
        return f"{int(rate)}/1s"
    return f"{round(rate * 1000)}/1000s"


def _attack_args(
    targets_file: Path, *, concurrency: int | None, rate: float | None, timeout_s: float
) -> list[str]:
    args = [
        "attack",
        "-format=json",
        f"-targets={targets_file}",
        f"-timeout={_go_duration(timeout_s)}",
        # Response bodies are not needed for the figures; keep the results file small.
        "-max-body=0",
        # Plain-HTTP loopback targets: HTTP/1.1 with keep-alive, like a gateway's clients.
        "-http2=false",
    ]
    if rate is None:
        assert concurrency
        # Closed loop: rate=0 means "as fast as workers allow"; vegeta requires max-workers.
        args += ["-rate=0", f"-workers={concurrency}", f"-max-workers={concurrency}"]
    else:
        args.append(f"-rate={_rate_flag(rate)}")
        if concurrency:
            args += [f"-workers={min(concurrency, 10)}", f"-max-workers={concurrency}"]
        # Otherwise vegeta's default: start 10 workers and add more whenever all are busy,
        # so the schedule is kept however slow the server gets.
    return args


def _attack(args: list[str], duration_s: float, timeout_s: float, output: Path) -> float:
    """Run one attack; returns the CPU seconds it used."""
    cmd = [str(tools.vegeta()), *args, f"-duration={_go_duration(duration_s)}",
           f"-output={output}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # vegeta stops issuing at duration and then waits up to timeout for in-flight requests.
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=duration_s + timeout_s + 30, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"vegeta attack failed ({proc.returncode}): {proc.stderr.strip()}")
    # Children reaped in between are only vegeta (the trivial server is reaped after).
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _report(results_file: Path) -> LoadResult:
    proc = subprocess.run([str(tools.vegeta()), "report", "-type=json", str(results_file)],
                          capture_output=True, text=True, check=True)
    return parse_report(json.loads(proc.stdout))


def parse_report(report: Mapping[str, Any]) -> LoadResult:
    """A LoadResult from `vegeta report -type=json` output (durations there are in ns)."""
    lat = report["latencies"]
    codes = {str(k): int(v) for k, v in (report.get("status_codes") or {}).items()}
    requests = int(report["requests"])
    # vegeta's own success counts 2xx and 3xx; an inference endpoint answers 2xx or failed.
    ok = sum(n for code, n in codes.items() if 200 <= int(code) < 300)
    window_s = (report["duration"] + report["wait"]) / 1e9
    return LoadResult(
        requests=requests,
        duration_s=window_s,
        throughput_rps=ok / window_s if window_s > 0 else 0.0,
        p50_ms=lat["50th"] / 1e6,
        p90_ms=lat["90th"] / 1e6,
        p99_ms=lat["99th"] / 1e6,
        mean_ms=lat["mean"] / 1e6,
        max_ms=lat["max"] / 1e6,
        failures=requests - ok,
        status_codes=codes,
        # vegeta lists every distinct error text, and transport errors carry the client port:
        # a failing run can produce thousands. A sample is enough to say what went wrong.
        errors=list(report.get("errors") or [])[:MAX_ERRORS],
        rate_rps=float(report.get("rate", 0.0)),
        p95_ms=lat["95th"] / 1e6,
    )


# --- the trivial endpoint ------------------------------------------------------------------


class TrivialServer:
    """A keep-alive HTTP/1.1 responder in a subprocess: 200 with a fixed body for any path,
    except `/status/<code>` which answers <code> (for failure accounting tests)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> TrivialServer:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.loadgen", "trivial-server"],
            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )
        assert self._proc.stdout is not None
        # The server prints its port once it listens; do not hang if it never does.
        ready, _, _ = select.select([self._proc.stdout], [], [], 15.0)
        line = self._proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"trivial server did not start (said {line!r})")
        self.port = int(line)
        return self

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def __exit__(self, *exc: object) -> None:
        self.stop()


_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}
_BODY = b'{"ok":true}'


class _Responder(asyncio.Protocol):
    """Parses just enough HTTP/1.1 (request line, Content-Length) to answer each request."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (request := self._take_request()) is not None:
            assert self.transport is not None
            self.transport.write(_response(request))

    def _take_request(self) -> bytes | None:
        """The next complete request's request line, consuming it from the buffer."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buffer[:end]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        total = end + 4 + length
        if len(self.buffer) < total:
            return None  # body still arriving
        self.buffer = self.buffer[total:]
        return head.split(b"\r\n", 1)[0]


def _response(request_line: bytes) -> bytes:
    parts = request_line.split(b" ")
    path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
    status = 200
    if path.startswith("/status/") and path[8:].isdigit():
        status = int(path[8:])
    reason = _REASONS.get(status, "Status")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(_BODY)}\r\n\r\n").encode("latin-1") + _BODY


async def _serve_trivial() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Responder, "127.0.0.1", 0, backlog=1024)
    sock: socket.socket = server.sockets[0]
    print(sock.getsockname()[1], flush=True)
    await server.serve_forever()


def _run_trivial_server() -> None:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        # Already installed with uvicorn[standard]: the cheapest event loop at hand.
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve_trivial())


def main(argv: Sequence[str]) -> None:
    if argv[:1] == ["trivial-server"]:
        _run_trivial_server()
        return
    result = generator_ceiling()
    print(f"vegeta ceiling (c=8, trivial endpoint): {result.throughput_rps:.0f} req/s, "
          f"p50 {result.p50_ms:.3f} ms, p99 {result.p99_ms:.3f} ms, "
          f"{result.requests} requests, {result.failures} failed, "
          f"vegeta used {result.loadgen_cpu_s:.2f} CPU-s in {result.duration_s:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1:])

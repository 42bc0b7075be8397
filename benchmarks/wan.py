"""WAN emulation between gateway and cloud: toxiproxy (a fault-injecting TCP proxy) on loopback.

    with Toxiproxy() as wan:
        listen = wan.add_proxy("cloud", upstream="127.0.0.1:8000")  # point the gateway here
        wan.set_rtt("cloud", 50)   # every request/response round trip now takes +50 ms
        wan.cut("cloud")           # the cloud is unreachable: connections refused
        wan.restore("cloud")
        wan.blackhole("cloud")     # a partition instead: requests hang until their timeout
        wan.unblackhole("cloud")

RTT model: toxiproxy's latency toxic delays every chunk flowing in one direction by a fixed
time, pipelined (a chunk waits `latency` after it arrived, not after the previous chunk left).
`set_rtt` puts half the RTT on the upstream (request) stream and half on the downstream
(response) stream, so one request/response exchange gains RTT, as over a link with a one-way
delay of RTT/2. The emulated RTT comes out slightly above the setting: each latency toxic
releases each chunk up to ~1 ms late, because Go's netpoller sleeps in whole milliseconds
(runtime/netpoll_epoll.go rounds a sub-ms remainder up to 1 ms). Measured on an idle 2-core
machine with a raw-socket client: +0.6 ms for one direction, +1.0 ms for both (the same
with headers and body in one write or two). With httpx, as the gateway uses, added-minus-RTT
is ~+2 ms: the extra ~1 ms is most likely client-side (Python code running cold after idling
for an RTT); it is not toxiproxy's. More under CPU load.
So when a figure subtracts the RTT, subtract `added_ms` from `measure_added_latency` (httpx
through the proxy, calibrated on the same machine), not the nominal setting; better still,
measure the other side through the same link, as the WAN scenario does for the gateway's
own cost (benchmarks.scenarios.wan).
What it does not emulate: the TCP handshake (toxiproxy accepts locally and
dials upstream at once, so a fresh connection costs no extra RTT, where a real WAN charges one,
plus more for TLS), bandwidth limits and loss.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from benchmarks import tools
from benchmarks.systems import free_port

_LATENCY = "wan_latency"  # names of the toxics set_rtt manages
_STREAMS = ("upstream", "downstream")
_BLACKHOLE = "wan_blackhole"


class ToxiproxyError(RuntimeError):
    pass


class Toxiproxy:
    """A toxiproxy-server subprocess on a free loopback port, driven over its REST API."""

    def __init__(self, *, start_timeout_s: float = 10.0) -> None:
        self.port = 0
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._api: httpx.Client | None = None
        self._rtt: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Toxiproxy:
        self.port = free_port()  # chosen before the server starts: toxiproxy needs it as a flag
        # toxiproxy logs every connection; keep it out of the benchmark's output but at hand.
        self._log = tempfile.NamedTemporaryFile(prefix="toxiproxy-", suffix=".log")
        self._proc = subprocess.Popen(
            [str(tools.toxiproxy_server()), "-host", "127.0.0.1", "-port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)
        self._wait_ready()
        return self

    def stop(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Toxiproxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- proxies and toxics ---------------------------------------------------------------

    def add_proxy(self, name: str, upstream: str = "127.0.0.1:8000") -> str:
        """Proxy a free loopback port to `upstream`; returns the "127.0.0.1:<port>" to dial."""
        body = {"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": True}
        # toxiproxy binds port 0 itself and reports the port it got, so there is no race
        # between picking a free port here and binding it there.
        listen = self._call("POST", "/proxies", json=body)["listen"]
        self._rtt[name] = 0
        return str(listen)

    def set_rtt(self, name: str, rtt_ms: int) -> None:
        """Emulate a round trip time of `rtt_ms` (jitter 0) on proxy `name`; 0 removes it."""
        if rtt_ms < 0:
            raise ValueError("rtt_ms must be >= 0")
        for stream in _STREAMS:
            if self._rtt.get(name):
                self._call("DELETE", f"/proxies/{name}/toxics/{_LATENCY}_{stream}")
        # Odd RTTs: the extra millisecond goes on the response path.
        up = rtt_ms // 2
        halves = {"upstream": up, "downstream": rtt_ms - up}
        if rtt_ms > 0:
            for stream, latency in halves.items():
                self._call("POST", f"/proxies/{name}/toxics", json={
                    "name": f"{_LATENCY}_{stream}", "type": "latency", "stream": stream,
                    "toxicity": 1.0, "attributes": {"latency": latency, "jitter": 0},
                })
        self._rtt[name] = rtt_ms

    def rtt(self, name: str) -> int:
        return self._rtt[name]

    def cut(self, name: str) -> None:
        """Make the upstream unreachable: open connections are closed, new ones refused."""
        self._call("POST", f"/proxies/{name}", json={"enabled": False})

    def restore(self, name: str) -> None:
        """Undo `cut`: listen again on the same port (toxics are kept)."""
        self._call("POST", f"/proxies/{name}", json={"enabled": True})

    def blackhole(self, name: str) -> None:
        """A partition rather than a refusal: connections open, but no request data gets
        through and nothing comes back, so callers wait for their own timeouts."""
        self._call("POST", f"/proxies/{name}/toxics", json={
            "name": _BLACKHOLE, "type": "timeout", "stream": "upstream", "toxicity": 1.0,
            "attributes": {"timeout": 0},  # 0: never close, just swallow the data
        })

    def unblackhole(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}/toxics/{_BLACKHOLE}")

    def remove_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")
        self._rtt.pop(name, None)

    # --- internals ------------------------------------------------------------------------

    def _call(self, method: str, path: str, json: object | None = None) -> dict[str, Any]:
        if self._api is None:
            raise ToxiproxyError("toxiproxy is not running (use it as a context manager)")
        response = self._api.request(method, path, json=json)
        if response.status_code >= 300:
            raise ToxiproxyError(f"toxiproxy {method} {path} -> {response.status_code}: "
                                 f"{response.text.strip()}")
        return response.json() if response.content else {}

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._api is not None
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ToxiproxyError(f"toxiproxy-server exited ({self._proc.returncode}):\n"
                                     f"{self.log_text()}")
            try:
                if self._api.get("/version").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ToxiproxyError(f"toxiproxy-server API not up within {self._start_timeout_s} s")

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace") if self._log else ""


def measure_added_latency(
    rtts_ms: tuple[int, ...] = (0, 20, 50), samples: int = 50
) -> dict[int, dict[str, float]]:
    """Calibration: per RTT setting, p50 of httpx keep-alive requests to a trivial server
    through the proxy minus p50 direct (`added_ms`), and what exceeds the setting."""
    from benchmarks.loadgen import TrivialServer

    figures: dict[int, dict[str, float]] = {}
    with TrivialServer() as server, Toxiproxy() as wan:
        listen = wan.add_proxy("probe", upstream=f"127.0.0.1:{server.port}")
        direct = _p50_ms(server.url("/"), samples)
        for rtt in rtts_ms:
            wan.set_rtt("probe", rtt)
            through = _p50_ms(f"http://{listen}/", samples)
            figures[rtt] = {"direct_p50_ms": direct, "proxied_p50_ms": through,
                            "added_ms": through - direct, "excess_ms": through - direct - rtt}
    return figures


def _p50_ms(url: str, samples: int) -> float:
    times = []
    with httpx.Client(timeout=10.0) as client:  # one keep-alive connection, as a gateway has
        client.post(url, content=b"{}")  # connect outside the measurement
        for _ in range(samples):
            started = time.perf_counter()
            client.post(url, content=b"{}").raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[len(times) // 2]


if __name__ == "__main__":
    for rtt, fig in measure_added_latency().items():
        print(f"RTT {rtt:3d} ms: direct p50 {fig['direct_p50_ms']:.2f} ms, through toxiproxy "
              f"p50 {fig['proxied_p50_ms']:.2f} ms, added {fig['added_ms']:.2f} ms "
              f"(excess over setting {fig['excess_ms']:+.2f} ms)")

"""The benchmark tooling: vegeta as load generator, toxiproxy as WAN emulator, real processes.

Properties only, no speed claims: on a fresh machine the first test builds both tools from
their Go modules (about a minute or two on 2 cores), afterwards they come from the cache.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks import tools
from benchmarks.loadgen import LoadResult, Target, TrivialServer, parse_report, run_load
from benchmarks.wan import Toxiproxy

# Cold builds of vegeta and toxiproxy happen inside the first test that needs them.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def trivial() -> Iterator[TrivialServer]:
    with TrivialServer() as server:
        yield server


@pytest.fixture(scope="module")
def wan() -> Iterator[Toxiproxy]:
    with Toxiproxy() as proxy:
        yield proxy


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tools_are_built_once_then_reused() -> None:
    first = tools.vegeta()
    mtime = first.stat().st_mtime_ns
    assert tools.vegeta() == first and first.stat().st_mtime_ns == mtime
    assert first.parent.name == f"vegeta-{tools.VEGETA.version}"
    assert tools.toxiproxy_server().name == "toxiproxy-server"


def test_failed_build_names_the_tool_and_quotes_go(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("GOPROXY", "off")  # offline and deterministic: go must refuse to fetch
    bogus = tools.GoTool("vegeta", tools.VEGETA.package, "v12.99.99", "vegeta")
    with pytest.raises(tools.ToolBuildError, match="vegeta") as info:
        tools.ensure(bogus)
    assert "go stderr" in str(info.value) and "GOPROXY=off" in str(info.value)
    assert not tools.tool_path(bogus).exists()


def test_closed_loop_against_trivial_endpoint(trivial: TrivialServer) -> None:
    bodies = [f'{{"inputs": [{i}]}}'.encode() for i in range(10)]
    targets = [Target(url=trivial.url("/"), body=b) for b in bodies]
    result = run_load(targets, duration_s=1.0, concurrency=4, warmup_s=0.2)
    assert isinstance(result, LoadResult)
    assert result.requests > 0
    assert result.failures == 0, result.errors
    assert result.status_codes == {"200": result.requests}
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms
    assert result.throughput_rps > 0
    assert set(result.to_dict()) >= {"p50_ms", "p90_ms", "p99_ms", "failures", "status_codes"}


def test_open_loop_keeps_the_arrival_rate(trivial: TrivialServer) -> None:
    # Constant-rate mode issues on a schedule: 40/s for 1 s is 40 requests, however they fare.
    result = run_load([Target(url=trivial.url("/"), body=b"{}")], duration_s=1.0, rate=40)
    assert 36 <= result.requests <= 44
    assert result.failures == 0


def test_error_statuses_count_as_failures(trivial: TrivialServer) -> None:
    result = run_load([Target(url=trivial.url("/status/500"), body=b"{}")],
                      duration_s=0.5, concurrency=2)
    assert result.requests > 0
    assert result.failures == result.requests
    assert result.status_codes == {"500": result.requests}
    assert result.throughput_rps == 0


def test_refused_connections_count_as_failures() -> None:
    target = Target(url=f"http://127.0.0.1:{_closed_port()}/", body=b"{}")
    result = run_load([target], duration_s=0.5, rate=20, timeout_s=2.0)
    assert result.requests > 0
    assert result.failures == result.requests
    assert result.status_codes == {"0": result.requests}
    assert any("refused" in e for e in result.errors)


def test_parse_report_counts_only_2xx_as_success() -> None:
    # vegeta itself counts 3xx as success; an inference endpoint that redirects has failed.
    ns = 1_000_000
    report = {
        "requests": 10, "duration": 900 * ns, "wait": 100 * ns, "rate": 10.0,
        "latencies": {"50th": 1 * ns, "90th": 2 * ns, "95th": 3 * ns, "99th": 4 * ns,
                      "max": 5 * ns, "mean": 2 * ns},
        "status_codes": {"200": 7, "302": 1, "503": 1, "0": 1},
        "errors": ["503 Service Unavailable"],
    }
    result = parse_report(report)
    assert result.failures == 3
    assert result.throughput_rps == pytest.approx(7.0)
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (1.0, 4.0, 5.0)


def _post_ms(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    client.post(url, content=b"{}").raise_for_status()
    return (time.perf_counter() - started) * 1000


def test_toxiproxy_rtt_adds_latency(trivial: TrivialServer, wan: Toxiproxy) -> None:
    listen = wan.add_proxy("rtt", upstream=f"127.0.0.1:{trivial.port}")
    with httpx.Client(timeout=5.0) as client:
        assert client.post(f"http://{listen}/", content=b"{}").status_code == 200
        wan.set_rtt("rtt", 50)
        client.post(f"http://{listen}/", content=b"{}")  # a connection made under the toxic
        # Every request pays the round trip: a lower bound, whatever the machine's load.
        assert min(_post_ms(client, f"http://{listen}/") for _ in range(3)) >= 40
        wan.set_rtt("rtt", 0)
        assert wan.rtt("rtt") == 0
    wan.remove_proxy("rtt")


def test_toxiproxy_cut_makes_connections_fail(trivial: TrivialServer, wan: Toxiproxy) -> None:
    listen = wan.add_proxy("cut", upstream=f"127.0.0.1:{trivial.port}")
    url = f"http://{listen}/"
    assert httpx.post(url, content=b"{}", timeout=5.0).status_code == 200
    wan.cut("cut")
    with pytest.raises(httpx.TransportError):
        httpx.post(url, content=b"{}", timeout=5.0)
    wan.restore("cut")
    assert httpx.post(url, content=b"{}", timeout=5.0).status_code == 200
    wan.remove_proxy("cut")


def test_toxiproxy_blackhole_makes_requests_time_out(trivial: TrivialServer,
                                                     wan: Toxiproxy) -> None:
    listen = wan.add_proxy("hole", upstream=f"127.0.0.1:{trivial.port}")
    url = f"http://{listen}/"
    wan.blackhole("hole")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, content=b"{}", timeout=0.3)
    wan.unblackhole("hole")
    assert httpx.post(url, content=b"{}", timeout=5.0).status_code == 200
    wan.remove_proxy("hole")

"""The jointserve-only scenarios: batching, WAN, a cloud that goes down, a version switch.

Each takes the runner (for its plan, load generator and results) and a running JointServe,
adds the services it needs as resource files (as a user would), measures, and records one
section of results.json.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks import loadgen
from benchmarks.joint_system import JointServe
from benchmarks.wan import Toxiproxy, measure_added_latency
from benchmarks.workload import Workload

if TYPE_CHECKING:
    from benchmarks.runner import Runner

BATCH_CONCURRENCY = 32
BREAKER_FAILURES = 5
PROBES = 40  # sequential requests per phase of the breaker scenario


def batching(runner: Runner, joint: JointServe, workload: Workload) -> None:
    """Cloud model at c=32 through the gateway (CloudOnly), with and without @serve.batch."""
    on = runner.measure("jointserve", "cloud-batched", joint.infer_url("cloud-batched"),
                        workload.mixed, concurrency=BATCH_CONCURRENCY)
    off = runner.measure("jointserve", "cloud-unbatched", joint.infer_url("cloud-unbatched"),
                         workload.mixed, concurrency=BATCH_CONCURRENCY)
    runner.results.sections["batching"] = {
        "concurrency": BATCH_CONCURRENCY, "max_batch_size": 16, "batch_wait_ms": 2,
        "batched_rps": on.median("throughput_rps"), "unbatched_rps": off.median("throughput_rps"),
        "ratio": on.median("throughput_rps") / off.median("throughput_rps")}


def wan(runner: Runner, joint: JointServe, workload: Workload) -> None:
    """Cloud over HTTP through a latency proxy: hard-path p50 at each RTT, and what is ours."""
    plan = runner.plan
    # What the proxy itself adds at each setting (Go's poller rounds to whole ms): the
    # network part of the hard path is this measured figure, not the nominal RTT.
    network = {rtt: fig["added_ms"] for rtt, fig in measure_added_latency(tuple(plan.rtts_ms)).items()}
    cloud_direct = runner.measure("jointserve", "cloud-direct", joint.infer_url("digits-cloud"),
                                  workload.hard, concurrency=1)
    rows: list[dict[str, Any]] = []
    with Toxiproxy() as proxy:
        listen = proxy.add_proxy("cloud", upstream=f"127.0.0.1:{joint.port}")
        joint.write(joint.service_doc("digits-wan", "MaxProb", {"threshold": 0.6},
                                      cloud={"url": f"http://{listen}", "modelName": "digits-cloud"},
                                      deadlineMs=2000))
        joint.wait_ready(["digits-wan"])
        for rtt in plan.rtts_ms:
            proxy.set_rtt("cloud", rtt)
            hard = runner.measure("jointserve-wan", f"hard rtt={rtt}", joint.infer_url("digits-wan"),
                                  workload.hard, concurrency=1)
            mixed = runner.measure("jointserve-wan", f"mixed rtt={rtt}", joint.infer_url("digits-wan"),
                                   workload.mixed, concurrency=1)
            p50 = hard.median("p50_ms")
            rows.append({"rtt_ms": rtt, "proxy_added_ms": network[rtt], "hard_p50_ms": p50,
                         "mixed_mean_ms": mixed.median("mean_ms"),
                         "gateway_cost_ms": p50 - network[rtt] - cloud_direct.median("p50_ms")})
    runner.results.sections["wan"] = {
        "cloud_direct_p50_ms": cloud_direct.median("p50_ms"),
        "rows": rows,
        "mixed_mean_ms": {str(r["rtt_ms"]): r["mixed_mean_ms"] for r in rows}}


def breaker(runner: Runner, joint: JointServe, workload: Workload) -> None:
    """Hard requests while the cloud is unreachable, before and after the breaker opens."""
    with Toxiproxy() as proxy:
        listen = proxy.add_proxy("cloud", upstream=f"127.0.0.1:{joint.port}")
        joint.write(joint.service_doc(
            "digits-breaker", "MaxProb", {"threshold": 0.6},
            cloud={"url": f"http://{listen}", "modelName": "digits-cloud"},
            deadlineMs=500, breaker={"failureThreshold": BREAKER_FAILURES, "cooldownMs": 600_000}))
        joint.wait_ready(["digits-breaker"])
        url = joint.infer_url("digits-breaker")
        with httpx.Client(timeout=10) as client:
            easy = _timed(client, url, workload.easy, PROBES)
            healthy_hard = _timed(client, url, workload.hard, PROBES)
            proxy.cut("cloud")
            down = _timed(client, url, workload.hard, BREAKER_FAILURES + PROBES)
            proxy.restore("cloud")
    before = [t for t, reason in down if reason != "circuit_open"]
    after = [t for t, reason in down if reason == "circuit_open"]
    easy_p50 = statistics.median(t for t, _ in easy)
    section = {
        "method": "sequential httpx requests (c=1), one keep-alive connection",
        "easy_p50_ms": easy_p50,
        "hard_healthy_p50_ms": statistics.median(t for t, _ in healthy_hard),
        "requests_before_open": len(before),
        "before_open_p50_ms": statistics.median(before) if before else None,
        "reasons_before_open": sorted({r for _, r in down if r != "circuit_open"}),
        "after_open_p50_ms": statistics.median(after) if after else None,
        "added_ms_breaker_open": (statistics.median(after) - easy_p50) if after else None,
        "failed": sum(1 for t, r in down if r == "http_error"),
    }
    runner.results.sections["breaker"] = section
    runner.progress(f"breaker: {len(before)} request(s) paid the failure "
                    f"(p50 {section['before_open_p50_ms']} ms), then circuit_open "
                    f"p50 {section['after_open_p50_ms']} ms vs easy {easy_p50:.2f} ms")


def _timed(client: httpx.Client, url: str, bodies: list[bytes], n: int) -> list[tuple[float, str]]:
    """(latency ms, fallback reason or tier) of n sequential requests."""
    out = []
    for i in range(n):
        started = time.perf_counter()
        response = client.post(url, content=bodies[i % len(bodies)],
                               headers={"content-type": "application/json"})
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            out.append((elapsed, "http_error"))
            continue
        parameters = response.json().get("parameters", {})
        out.append((elapsed, parameters.get("fallback_reason") or parameters.get("tier", "")))
    return out


def version_switch(runner: Runner, joint: JointServe, workload: Workload) -> None:
    """Open-loop mixed traffic on `digits` while the edge model goes v1 -> v2 -> v1."""
    duration = runner.plan.switch_s
    targets = [loadgen.Target(url=joint.infer_url("digits"), body=b) for b in workload.mixed]
    result: dict[str, loadgen.LoadResult] = {}
    attack = threading.Thread(target=lambda: result.update(
        load=loadgen.run_load(targets, duration_s=duration, rate=runner.plan.rate)))
    attack.start()
    edge = joint.model_doc("digits-edge")
    switches = []
    started = time.monotonic()
    for version, at in (("v2", duration / 4), ("v1", duration * 5 / 8)):
        time.sleep(max(0.0, started + at - time.monotonic()))
        edge["spec"]["targetVersion"] = version
        switch_started = time.monotonic()
        joint.write(edge)
        _wait_version(joint, version, timeout=duration)
        switches.append({"to": version, "took_s": time.monotonic() - switch_started})
    attack.join()
    load = result["load"]
    runner.results.sections["version_switch"] = {
        "rate": runner.plan.rate, "duration_s": duration, "switches": switches,
        "requests": load.requests, "failures": load.failures, "status_codes": load.status_codes,
        "p99_ms": load.p99_ms, "max_ms": load.max_ms}
    runner.progress(f"version switch under {runner.plan.rate:g} req/s: {load.requests} requests, "
                    f"{load.failures} failed, switches {[round(s['took_s'], 1) for s in switches]} s")


def _wait_version(joint: JointServe, version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            response = client.get(f"{joint.base_url}/v2/models/digits-edge/ready")
            if response.status_code == 200 and response.json().get("version") == version:
                return
            time.sleep(0.2)
    raise RuntimeError(f"digits-edge did not switch to {version} within {timeout:.0f}s")

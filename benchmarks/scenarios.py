"""The jointserve-only scenarios: batching, WAN, a cloud that goes down, a version switch.

Each takes the runner (for its plan, load generator and results) and a running JointServe,
adds the services it needs as resource files (as a user would), measures, and records one
section of results.json.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks import heavy_model, loadgen
from benchmarks.joint_system import BATCHING, JointServe
from benchmarks.procs import processes_below
from benchmarks.wan import Toxiproxy, measure_added_latency
from benchmarks.workload import Workload

if TYPE_CHECKING:
    from benchmarks.runner import Runner

BATCH_CONCURRENCY = 32
BREAKER_FAILURES = 5
PROBES = 40  # sequential requests per phase of the breaker scenario


def batching(runner: Runner, joint: JointServe, workload: Workload) -> None:
    """Cloud models at c=32 through the gateway (CloudOnly), with and without @serve.batch.

    The heavy model (benchmarks.heavy_model, a few ms a call) is where batching pays, and its
    ratio is the section's (and the target's) `ratio`; the digits cloud model (~13 µs a call)
    is measured beside it, where the serving path, not the model, sets the throughput.
    """
    assert joint.heavy is not None, "JointServe.start() builds the heavy archive"
    joint.add_batching_services()
    # In process, before the load points: jointserve is up but idle, so this is the model's
    # own cost with little else on the cores.
    call = heavy_model.measure_archive(joint.heavy.path)
    heavy_on, heavy_off = (_throughput(runner, joint, workload, name)
                           for name in ("heavy-batched", "heavy-unbatched"))
    digits_on, digits_off = (_throughput(runner, joint, workload, name)
                             for name in ("cloud-batched", "cloud-unbatched"))
    runner.results.sections["batching"] = {
        "concurrency": BATCH_CONCURRENCY, "max_batch_size": BATCHING["maxBatchSize"],
        "batch_wait_ms": BATCHING["batchWaitTimeoutMs"],
        # The top-level figures are the heavy model's; the digits pair's have keys of their own.
        "model": f"{heavy_model.MODEL_NAME} {heavy_model.VERSION}",
        "heavy_params": asdict(joint.heavy.params), "heavy_sha256": joint.heavy.sha256,
        "heavy_call_ms": call.to_dict(),
        "batched_rps": heavy_on, "unbatched_rps": heavy_off, "ratio": heavy_on / heavy_off,
        "digits_batched_rps": digits_on, "digits_unbatched_rps": digits_off,
        "digits_ratio": digits_on / digits_off}
    runner.progress(f"batching at c={BATCH_CONCURRENCY}: heavy model ({call.batch1_ms:.2f} ms a call, "
                    f"{call.batch16_ms_per_row:.3f} ms/row at 16) {heavy_on / heavy_off:.2f}x; "
                    f"digits cloud model {digits_on / digits_off:.2f}x")


def _throughput(runner: Runner, joint: JointServe, workload: Workload, service: str) -> float:
    """Median req/s of mixed traffic on `service` at c=BATCH_CONCURRENCY (one recorded point)."""
    point = runner.measure("jointserve", service, joint.infer_url(service), workload.mixed,
                           concurrency=BATCH_CONCURRENCY)
    return point.median("throughput_rps")


def wan(runner: Runner, joint: JointServe, workload: Workload) -> None:
    """Cloud over HTTP through a latency proxy: hard-path p50 at each RTT, and what is ours.

    The gateway's own cost at an RTT is the hard path's p50 minus the p50 of the same hard
    bodies sent straight to the cloud model over the same proxied link (vegeta, c=1): both
    pay the link and the cloud's serving, including the cloud side waking up after an idle
    RTT, which a cloud figure taken at RTT 0 leaves out and so charged to the gateway. The
    older estimate (minus the proxy's calibrated added latency, minus the cloud at RTT 0) is
    kept beside it as `calibrated_cost_ms`.
    """
    plan = runner.plan
    # What the proxy itself adds at each setting (Go's poller rounds to whole ms).
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
        joint.wait_settled()
        cloud_over_link_url = f"http://{listen}/v2/models/digits-cloud/infer"
        for rtt in plan.rtts_ms:
            proxy.set_rtt("cloud", rtt)
            cloud = runner.measure("cloud-over-wan", f"hard rtt={rtt}", cloud_over_link_url,
                                   workload.hard, concurrency=1)
            hard = runner.measure("jointserve-wan", f"hard rtt={rtt}", joint.infer_url("digits-wan"),
                                  workload.hard, concurrency=1)
            mixed = runner.measure("jointserve-wan", f"mixed rtt={rtt}", joint.infer_url("digits-wan"),
                                   workload.mixed, concurrency=1)
            p50 = hard.median("p50_ms")
            cloud_p50 = cloud.median("p50_ms")
            rows.append({"rtt_ms": rtt, "proxy_added_ms": network[rtt], "hard_p50_ms": p50,
                         "cloud_over_link_p50_ms": cloud_p50,
                         "mixed_mean_ms": mixed.median("mean_ms"),
                         "gateway_cost_ms": p50 - cloud_p50,
                         "calibrated_cost_ms": p50 - network[rtt] - cloud_direct.median("p50_ms")})
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
        joint.wait_settled()
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


SWITCH_CONCURRENCY = 8


def version_switch(runner: Runner, joint: JointServe, workload: Workload) -> None:
    """c=8 mixed traffic on `digits` (one gateway replica) while the edge model goes
    v1 -> v2 -> v1 -> v2 and then the cloud model v1 -> v1b (the same archive as another
    version: a real load-and-swap): how many requests fail (target 0)."""
    steps = [("digits-edge", "v2"), ("digits-edge", "v1"), ("digits-edge", "v2"),
             ("digits-cloud", "v1b")]
    duration = max(runner.plan.switch_s, 2.0 * len(steps))
    targets = [loadgen.Target(url=joint.infer_url("digits"), body=b) for b in workload.mixed]
    result: dict[str, loadgen.LoadResult] = {}
    attack = threading.Thread(target=lambda: result.update(
        load=loadgen.run_load(targets, duration_s=duration, concurrency=SWITCH_CONCURRENCY)))
    attack.start()
    docs = {name: joint.model_doc(name) for name in ("digits-edge", "digits-cloud")}
    switches = []
    started = time.monotonic()
    for index, (model, version) in enumerate(steps):
        time.sleep(max(0.0, started + duration * (index + 0.5) / (len(steps) + 1) - time.monotonic()))
        docs[model]["spec"]["targetVersion"] = version
        switch_started = time.monotonic()
        joint.write(docs[model])
        _wait_version(joint, model, version, timeout=duration)
        switches.append({"model": model, "to": version, "took_s": time.monotonic() - switch_started})
    attack.join()
    load = result["load"]
    runner.results.sections["version_switch"] = {
        "concurrency": SWITCH_CONCURRENCY, "duration_s": duration, "switches": switches,
        "requests": load.requests, "failures": load.failures, "status_codes": load.status_codes,
        "errors": load.errors, "p99_ms": load.p99_ms, "max_ms": load.max_ms}
    runner.progress(f"version switches under c={SWITCH_CONCURRENCY}: {load.requests} requests, "
                    f"{load.failures} failed, switches {[round(s['took_s'], 1) for s in switches]} s")


def replica_killed(runner: Runner, joint: JointServe, workload: Workload) -> None:
    """SIGKILL a replica under c=8 load, twice: one of two gateway replicas (target: 0 failed),
    and the one cloud replica (target: 0 failed; hard inputs get the edge answer meanwhile)."""
    two = joint.service_doc("digits-two", "MaxProb", {"threshold": 0.6})
    two["spec"]["replicas"] = 2
    joint.write(two)
    joint.wait_ready(["digits-two"])
    joint.wait_settled()
    _wait_replicas(joint, "jis.default.digits-two", "gateway", 2)
    section: dict[str, Any] = {}
    # (label, model under load, model killed, its application and deployment, replicas)
    for label, model, killed, app, deployment, replicas in (
            ("gateway", "digits-two", "digits-two", "jis.default.digits-two", "gateway", 2),
            ("cloud", "cloud-unbatched", "digits-cloud", "im.default.digits-cloud", "model", 1)):
        load = _load_while(runner, joint.infer_url(model), workload.mixed,
                           lambda a=app, d=deployment: _kill_replica(joint, a, d))
        section[label] = {"requests": load.requests, "failures": load.failures,
                          "status_codes": load.status_codes, "errors": load.errors,
                          "p99_ms": load.p99_ms, "max_ms": load.max_ms}
        runner.progress(f"{label} replica SIGKILLed under c={SWITCH_CONCURRENCY}: "
                        f"{load.requests} requests, {load.failures} failed")
        _wait_replicas(joint, app, deployment, replicas)
        joint.wait_ready([killed])
    runner.results.sections["replica_killed"] = section


def deletion(runner: Runner, joint: JointServe) -> None:
    """How long a deleted InferenceModel takes to be gone (its route answers 404) after its
    file is removed, with no request in flight (target: within 5 s)."""
    doc = joint.model_doc("digits-edge")
    doc["metadata"]["name"] = doc["spec"]["modelName"] = "doomed-edge"
    joint.write(doc)
    joint.wait_ready(["doomed-edge"])
    started = time.monotonic()
    joint.remove("doomed-edge")
    with httpx.Client(timeout=5) as client:
        while client.get(f"{joint.base_url}/v2/models/doomed-edge/ready").status_code != 404:
            if time.monotonic() - started > 120:
                raise RuntimeError("doomed-edge still served 120 s after its file was removed")
            time.sleep(0.05)
    gone_s = time.monotonic() - started
    runner.results.sections["deletion"] = {"gone_s": gone_s}
    runner.progress(f"deleted InferenceModel gone after {gone_s:.2f} s")


def _load_while(runner: Runner, url: str, bodies: list[bytes], fault: Any) -> loadgen.LoadResult:
    """c=8 closed-loop load for a few seconds with `fault()` a third of the way in."""
    duration = max(runner.plan.switch_s, 6.0)
    targets = [loadgen.Target(url=url, body=b) for b in bodies]
    result: dict[str, loadgen.LoadResult] = {}
    attack = threading.Thread(target=lambda: result.update(
        load=loadgen.run_load(targets, duration_s=duration, concurrency=SWITCH_CONCURRENCY)))
    attack.start()
    time.sleep(duration / 3)
    fault()
    attack.join()
    return result["load"]


def _kill_replica(joint: JointServe, app: str, deployment: str) -> None:
    pids = processes_below(joint.pid, f"ServeReplica:{app}:{deployment}") if joint.pid else []
    if not pids:
        raise RuntimeError(f"no replica process of {app}:{deployment} to kill")
    os.kill(pids[0], signal.SIGKILL)


def _wait_replicas(joint: JointServe, app: str, deployment: str, count: int,
                   timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(processes_below(joint.pid, f"ServeReplica:{app}:{deployment}")) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{app}:{deployment} did not reach {count} replica(s)")
        time.sleep(0.2)


def _wait_version(joint: JointServe, model: str, version: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            response = client.get(f"{joint.base_url}/v2/models/{model}/ready")
            if response.status_code == 200 and response.json().get("version") == version:
                return
            time.sleep(0.2)
    raise RuntimeError(f"{model} did not switch to {version} within {timeout:.0f}s")

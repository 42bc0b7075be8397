"""The benchmark runner: every system under the same load generator, in one run.

    python -m benchmarks [--quick] [--out benchmarks/results]      (or: make bench)

Systems are started one after another (never two Ray clusters at once on 2 cores), each
measured with vegeta in its own process, and the results written to
`<out>/<date>/results.json`, PNG plots and `summary.md`, whose targets section says which of
the issue's targets hold. No figure here is asserted by a test: they are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import loadgen
from benchmarks.figures import Point
from benchmarks.joint_system import JointServe
from benchmarks.procs import TreeMemory, tree_memory
from benchmarks.workload import Workload, load_workload, measure_floor
from jointserve.operator._ingress import SERVE_ENV

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits"
DEFAULT_OUT = ROOT / "benchmarks" / "results"
MEMORY_SETTLE_S = 5.0


@dataclass(frozen=True)
class Plan:
    """How long and how often: the full run, or --quick for a smoke check in a few minutes."""

    duration_s: float
    warmup_s: float
    repeats: int
    concurrencies: tuple[int, ...]
    traffics: tuple[str, ...]
    rate: float  # open-loop arrival rate for the fixed-rate point, requests/s
    rtts_ms: tuple[int, ...]
    seeds: int
    switch_s: float

    @classmethod
    def full(cls) -> Plan:
        return cls(duration_s=5.0, warmup_s=2.0, repeats=3, concurrencies=(1, 8, 32),
                   traffics=("easy", "hard", "mixed"), rate=100.0, rtts_ms=(0, 20, 50, 100),
                   seeds=10, switch_s=20.0)

    @classmethod
    def quick(cls, duration_s: float = 1.0) -> Plan:
        return cls(duration_s=duration_s, warmup_s=0.5, repeats=1, concurrencies=(1, 8),
                   traffics=("easy", "mixed"), rate=50.0, rtts_ms=(0, 20), seeds=2,
                   switch_s=max(6.0, 4 * duration_s))


@dataclass
class Results:
    meta: dict[str, Any]
    points: list[Point] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "points": [p.to_dict() for p in self.points], **self.sections}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Results:
        points = [Point(p["system"], p["traffic"], p["mode"], p["level"], p["runs"]) for p in data["points"]]
        sections = {k: v for k, v in data.items() if k not in {"meta", "points", "targets"}}
        return cls(meta=data["meta"], points=points, sections=sections)


class Progress:
    """One line per step, numbered, with elapsed time: enough to follow a 20-minute run."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.step = 0

    def __call__(self, message: str) -> None:
        self.step += 1
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.0f}s] {self.step:3d}. {message}", flush=True)


class Runner:
    def __init__(self, plan: Plan, out: Path, command: str) -> None:
        self.plan = plan
        self.out = out
        self.progress = Progress()
        self.results = Results(meta=_meta(plan, command))
        self.workdir = Path(tempfile.mkdtemp(prefix="jointserve-bench-models-"))

    # -- measuring ---------------------------------------------------------------------

    def measure(self, system: str, traffic: str, url: str, bodies: Sequence[bytes],
                concurrency: int | None = None, rate: float | None = None) -> Point:
        mode, level = ("c", concurrency) if concurrency else ("rate", rate)
        point = Point(system, traffic, mode, float(level))
        targets = [loadgen.Target(url=url, body=b) for b in bodies]
        for _ in range(self.plan.repeats):
            result = loadgen.run_load(targets, duration_s=self.plan.duration_s,
                                      warmup_s=self.plan.warmup_s,
                                      concurrency=concurrency, rate=rate)
            point.runs.append(result.to_dict())
        self.results.points.append(point)
        self.progress(f"{point.label}: p50 {point.median('p50_ms'):.2f} ms, "
                      f"p99 {point.median('p99_ms'):.2f} ms, "
                      f"{point.median('throughput_rps'):.0f} req/s, {point.failures} failed")
        return point

    def sweep(self, system: str, url: str, workload: Workload, traffics: Sequence[str]) -> None:
        for traffic in traffics:
            for c in self.plan.concurrencies:
                self.measure(system, traffic, url, workload.bodies(traffic), concurrency=c)
        mixed = "mixed" if "mixed" in traffics else traffics[0]
        self.measure(system, mixed, url, workload.bodies(mixed), rate=self.plan.rate)

    # -- the run -----------------------------------------------------------------------

    def run(self) -> Path:
        try:
            return self._run()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)  # the unpacked models

    def _run(self) -> Path:
        from benchmarks.systems import NaiveRayServe, PlainHttp, SednaStyle, unpack_example_models

        models = unpack_example_models(EXAMPLE / "archives", self.workdir / "models")
        workload = load_workload(EXAMPLE, models["edge"])
        self.results.meta["offload_ratio"] = workload.offload_ratio
        self._floor(models)
        self._ceiling()
        with PlainHttp(models["edge"]) as plain:
            self.progress(f"plain HTTP baseline up at {plain.infer_url()}")
            self.sweep(plain.name, plain.infer_url(), workload, ("easy",))
            plain_memory = tree_memory(plain.process.pid)
        with SednaStyle(models["edge"], models["cloud"]) as sedna:
            self.progress(f"Sedna-style two services up at {sedna.infer_url()}")
            self.sweep(sedna.name, sedna.infer_url(), workload, self.plan.traffics)
        with NaiveRayServe(models["edge"], models["cloud"]) as naive:  # same ingress as jointserve
            self.progress(f"naive Ray Serve composition up at {naive.infer_url()}")
            self.sweep(naive.name, naive.infer_url(), workload, self.plan.traffics)
        with JointServe(EXAMPLE) as joint:  # `jointserve serve`, default ingress
            self.progress(f"jointserve up at {joint.infer_url()}")
            self.sweep(joint.name, joint.infer_url(), workload, self.plan.traffics)
            from benchmarks import scenarios

            scenarios.batching(self, joint, workload)
            scenarios.wan(self, joint, workload)
            scenarios.breaker(self, joint, workload)
            scenarios.version_switch(self, joint, workload)
            scenarios.replica_killed(self, joint, workload)
            scenarios.deletion(self, joint)
        self._memory(plain_memory)
        self._routing()
        return self.write()

    def _floor(self, models: dict[str, Path]) -> None:
        X = np.load(EXAMPLE / "samples.npz")["X"]
        floor = measure_floor(models["edge"], models["cloud"], X)
        self.results.sections["floor"] = asdict(floor)
        self.progress(f"floor (onnxruntime in process): edge {floor.edge_us:.1f} µs, "
                      f"cloud {floor.cloud_us:.1f} µs, cloud batch of 32 "
                      f"{floor.cloud_batch32_us_per_row:.2f} µs/row")

    def _ceiling(self) -> None:
        result = loadgen.generator_ceiling(duration_s=max(self.plan.duration_s, 1.0), concurrency=8)
        self.results.sections["generator_ceiling"] = result.to_dict()
        self.progress(f"load generator ceiling (vegeta vs a trivial endpoint, c=8): "
                      f"{result.throughput_rps:.0f} req/s, p50 {result.p50_ms:.2f} ms")

    def _memory(self, plain: TreeMemory) -> None:
        """PSS of the stack `make serve` runs (the example's two models and two services),
        idle after start-up, beside the plain server's."""
        with JointServe(EXAMPLE, example_only=True) as stack:
            time.sleep(MEMORY_SETTLE_S)  # settled (JointServe.start), first reports sent
            joint = tree_memory(stack.pid)
        self.results.sections["memory"] = {
            "jointserve_pss_mib": joint.pss_mib, "jointserve_rss_mib": joint.rss_mib,
            "jointserve_processes": joint.processes, "jointserve_by_name": joint.by_name,
            "plain_pss_mib": plain.pss_mib, "plain_processes": plain.processes}
        self.progress(f"memory: jointserve serve (digits example) {joint.pss_mib:.0f} MiB PSS in "
                      f"{joint.processes} processes; plain HTTP {plain.pss_mib:.0f} MiB")

    def _routing(self) -> None:
        from benchmarks import routing
        from benchmarks.figures import find

        joint = self.results.points
        easy = find(joint, "jointserve", "easy", "c", 1)
        wan = self.results.sections.get("wan", {})
        self.progress(f"routing quality on digits, {self.plan.seeds} seeds")
        result = routing.routing_quality(
            seeds=self.plan.seeds,
            t_edge_ms=easy.median("p50_ms") if easy else None,
            t_cloud_ms=wan.get("cloud_direct_p50_ms"),
            measured_ms={float(k): v for k, v in wan.get("mixed_mean_ms", {}).items()} or None)
        self.results.sections["routing"] = result
        self.progress(f"routing: best policy {result['best_policy']}")

    # -- output ------------------------------------------------------------------------

    def write(self) -> Path:
        from benchmarks import report

        self.out.mkdir(parents=True, exist_ok=True)
        data = self.results.to_dict()
        data["targets"] = report.targets(self.results)
        (self.out / "results.json").write_text(json.dumps(data, indent=1, default=float))
        plots = report.plots(self.results, self.out)
        (self.out / "summary.md").write_text(report.summary(self.results, data["targets"], plots))
        self.progress(f"wrote {self.out}/results.json, summary.md and {len(plots)} plots")
        for target in data["targets"]:
            verdict = "holds" if target["holds"] else "MISSED"
            print(f"  {verdict:6s}  {target['name']}: {target['value']}  (target {target['target']})")
        return self.out


# jointserve's Serve switches (its own front door and listeners); the naive composition runs
# on Serve's own fastest path (naive_serve.serve_haproxy_env), its best settings.
SERVE_MODE_ENV = SERVE_ENV


def _meta(plan: Plan, command: str) -> dict[str, Any]:
    import onnxruntime
    import ray

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command, "plan": asdict(plan),
            "machine": {"cpus": _cpus(), "python": platform.python_version(),
                        "platform": platform.platform(), "ray": ray.__version__,
                        "onnxruntime": onnxruntime.__version__},
            "serve_env": SERVE_MODE_ENV}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short points, one repeat: a few minutes")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per measured point (default 5, or 1 with --quick)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="results go to OUT/<date>/ (default benchmarks/results)")
    args = parser.parse_args(argv)
    plan = Plan.quick(args.duration or 1.0) if args.quick else Plan.full()
    if args.duration and not args.quick:
        plan = Plan(**{**asdict(plan), "duration_s": args.duration})
    out = args.out / datetime.now().strftime("%Y-%m-%d")
    command = "python -m benchmarks " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
    Runner(plan, out, command.strip()).run()
    return 0

"""The requests the benchmarks send: digits test samples as OIP v2 bodies, split easy / hard.

"Easy" and "hard" are decided by the edge model itself with the example service's policy
(MaxProb 0.6), so easy-only traffic never reaches the cloud and hard-only traffic always
does; mixed traffic is the test split in order, at its real offload ratio.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jointserve.runtime import OnnxModel

HARD_BELOW = 0.6  # examples/digits/digits.yaml: MaxProb threshold


@dataclass(frozen=True)
class Workload:
    easy: list[bytes]
    hard: list[bytes]
    mixed: list[bytes]

    @property
    def offload_ratio(self) -> float:
        return len(self.hard) / len(self.mixed)

    def bodies(self, traffic: str) -> list[bytes]:
        return {"easy": self.easy, "hard": self.hard, "mixed": self.mixed}[traffic]


def oip_body(sample: np.ndarray) -> bytes:
    row = sample.astype(np.float32).ravel()
    return json.dumps({"inputs": [{"name": "input", "shape": [1, row.size], "datatype": "FP32",
                                   "data": row.tolist()}]}).encode()


def load_workload(example: Path, edge_dir: Path) -> Workload:
    X = np.load(example / "samples.npz")["X"]
    probabilities = OnnxModel(edge_dir).run({"input": X.astype(np.float32)})["probabilities"]
    hard = probabilities.max(axis=1) < HARD_BELOW
    bodies = [oip_body(x) for x in X]
    return Workload(easy=[b for b, h in zip(bodies, hard) if not h],
                    hard=[b for b, h in zip(bodies, hard) if h], mixed=bodies)


@dataclass(frozen=True)
class Floor:
    """The models' own cost, in process: what no server can go below."""

    edge_us: float
    cloud_us: float
    cloud_batch32_us_per_row: float


def measure_floor(edge_dir: Path, cloud_dir: Path, X: np.ndarray, calls: int = 2000) -> Floor:
    edge, cloud = OnnxModel(edge_dir), OnnxModel(cloud_dir)
    one = {"input": X[:1].astype(np.float32)}
    batch = {"input": np.resize(X, (32, X.shape[1])).astype(np.float32)}
    return Floor(edge_us=_median_us(lambda: edge.run(one), calls),
                 cloud_us=_median_us(lambda: cloud.run(one), calls),
                 cloud_batch32_us_per_row=_median_us(lambda: cloud.run(batch), calls // 10) / 32)


def _median_us(call, calls: int) -> float:
    for _ in range(min(calls, 200)):  # warm-up: first calls allocate
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e6)

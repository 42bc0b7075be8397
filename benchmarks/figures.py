"""Measured points and their aggregation: every figure is the median of its repeats, with
the spread (min..max) beside it, so a reader sees how much one run can be trusted."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FIGURES = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_rps")


@dataclass
class Point:
    """One system under one load, measured `repeats` times."""

    system: str
    traffic: str  # easy | hard | mixed | any
    mode: str  # "c" (closed loop, concurrency) or "rate" (open loop, requests/s)
    level: float
    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self, figure: str) -> float:
        return statistics.median(run[figure] for run in self.runs)

    def spread(self, figure: str) -> tuple[float, float]:
        values = [run[figure] for run in self.runs]
        return min(values), max(values)

    @property
    def failures(self) -> int:
        return sum(run["failures"] for run in self.runs)

    @property
    def requests(self) -> int:
        return sum(run["requests"] for run in self.runs)

    @property
    def label(self) -> str:
        load = f"c={self.level:g}" if self.mode == "c" else f"{self.level:g} req/s"
        return f"{self.system} {self.traffic} {load}"

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "traffic": self.traffic, "mode": self.mode,
                "level": self.level, "runs": self.runs,
                "median": {f: self.median(f) for f in FIGURES},
                "spread": {f: self.spread(f) for f in FIGURES},
                "failures": self.failures, "requests": self.requests}


def find(points: Sequence[Point], system: str, traffic: str, mode: str = "c",
         level: float | None = None) -> Point | None:
    for point in points:
        if (point.system, point.traffic, point.mode) == (system, traffic, mode) and \
                (level is None or point.level == level):
            return point
    return None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_spread(point: Point, figure: str, digits: int = 2) -> str:
    low, high = point.spread(figure)
    middle = point.median(figure)
    if len(point.runs) < 2:
        return f"{middle:.{digits}f}"
    return f"{middle:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"

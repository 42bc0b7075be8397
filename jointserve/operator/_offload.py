"""The live offload share of each budgeted service, against its budget: the OffloadBudget
condition.

The gateways' cumulative counters (inferenceNumber, hardExampleNumber, summed over replicas)
arrive with every pass; `OffloadWatch` keeps a short history of them per service and takes
the share of hard inputs between now and the newest reading at least windowSeconds old (or
the oldest there is). Totals that went down (a replica gone with its counts) start the
history again. In memory: after an operator restart the window fills anew.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping

from jointserve.api import (
    Condition,
    ConditionType,
    OffloadBudget,
    Reason,
    RealisedOffload,
    ResourceKey,
    set_condition,
)

Reading = tuple[float, int, int]  # monotonic time, inferences, hard examples


class OffloadWatch:
    """Per service, the counters of recent passes, and the share of hard inputs they show."""

    def __init__(self) -> None:
        self._history: dict[ResourceKey, deque[Reading]] = {}

    def observe(self, key: ResourceKey, budget: OffloadBudget, inferences: int, hard: int,
                now: float | None = None) -> RealisedOffload | None:
        """Record this pass's totals; the share over the window, once there are two readings."""
        now = time.monotonic() if now is None else now
        history = self._history.setdefault(key, deque())
        if history and (inferences < history[-1][1] or hard < history[-1][2]):
            history.clear()  # totals went down: counts of a replica that is gone
        history.append((now, inferences, hard))
        # Keep one reading at or before the window's start, as its baseline.
        while len(history) > 2 and history[1][0] <= now - budget.windowSeconds:
            history.popleft()
        since, base_inferences, base_hard = history[0]
        samples = inferences - base_inferences
        if samples <= 0:
            return None
        return RealisedOffload(cloudRatio=round((hard - base_hard) / samples, 4),
                               samples=samples, windowSeconds=int(now - since))

    def forget(self, keep: set[ResourceKey]) -> None:
        for key in [k for k in self._history if k not in keep]:
            del self._history[key]


def offload_condition(conditions: list[Condition], budget: OffloadBudget | None,
                      realised: RealisedOffload | None,
                      generation: int | None) -> list[Condition]:
    """`conditions` with OffloadBudget set from `realised` (dropped without a budget)."""
    if budget is None:
        return [c for c in conditions if c.type != ConditionType.OFFLOAD_BUDGET]
    wanted = f"budget {budget.cloudRatio:.1%} ± {budget.tolerance:.1%}"
    if realised is None or realised.samples < budget.minSamples:
        seen = realised.samples if realised else 0
        return set_condition(conditions, ConditionType.OFFLOAD_BUDGET, "Unknown",
                             Reason.NOT_ENOUGH_TRAFFIC,
                             f"{seen} of the {budget.minSamples} samples needed in the last "
                             f"{budget.windowSeconds} s; {wanted}", generation)
    off = realised.cloudRatio - budget.cloudRatio
    status, reason = ("True", Reason.WITHIN_BUDGET)
    if off > budget.tolerance:
        status, reason = "False", Reason.OVER_BUDGET
    elif off < -budget.tolerance:
        status, reason = "False", Reason.UNDER_BUDGET
    return set_condition(conditions, ConditionType.OFFLOAD_BUDGET, status, reason,
                         f"{realised.cloudRatio:.1%} of {realised.samples} samples hard in the "
                         f"last {realised.windowSeconds} s; {wanted}", generation)


def totals(counters: Mapping[str, int] | None) -> tuple[int, int]:
    counters = counters or {}
    return int(counters.get("inferenceNumber", 0)), int(counters.get("hardExampleNumber", 0))

"""The live share of hard inputs against a service's offload budget (operator/_offload.py):
the window over the gateways' cumulative counters, and the OffloadBudget condition; then
through the Reconciler with the counters a (fake) Serve reports."""

from __future__ import annotations

from jointserve.api import OffloadBudget
from jointserve.operator._offload import OffloadWatch, offload_condition

KEY = ("JointInferenceService", "default", "digits")
BUDGET = OffloadBudget(cloudRatio=0.2, dataset="d", tolerance=0.05, windowSeconds=60,
                       minSamples=100)


def condition(realised) -> tuple[str, str, str]:
    (cond,) = offload_condition([], BUDGET, realised, 1)
    return cond.status, cond.reason, cond.message


def test_the_share_is_taken_over_the_window() -> None:
    watch = OffloadWatch()
    assert watch.observe(KEY, BUDGET, 0, 0, now=0.0) is None  # one reading: no share yet
    watch.observe(KEY, BUDGET, 1000, 500, now=30.0)  # a burst, half hard
    realised = watch.observe(KEY, BUDGET, 2000, 700, now=60.0)
    assert (realised.cloudRatio, realised.samples, realised.windowSeconds) == (0.35, 2000, 60)
    # 95 s: the reading at 30 s is the newest at least 60 s old, the baseline now.
    realised = watch.observe(KEY, BUDGET, 3000, 900, now=95.0)
    assert (realised.cloudRatio, realised.samples, realised.windowSeconds) == (0.2, 2000, 65)


def test_totals_that_go_down_start_again() -> None:
    watch = OffloadWatch()
    watch.observe(KEY, BUDGET, 5000, 1000, now=0.0)
    assert watch.observe(KEY, BUDGET, 100, 90, now=1.0) is None  # a replica gone with its counts
    assert watch.observe(KEY, BUDGET, 300, 130, now=2.0).cloudRatio == 0.2


def test_the_condition_says_over_under_within_or_not_enough() -> None:
    watch = OffloadWatch()
    watch.observe(KEY, BUDGET, 0, 0, now=0.0)
    assert condition(watch.observe(KEY, BUDGET, 50, 40, now=1.0))[:2] == (
        "Unknown", "NotEnoughTraffic")
    assert condition(watch.observe(KEY, BUDGET, 1000, 400, now=2.0)) == (
        "False", "OverBudget", "40.0% of 1000 samples hard in the last 2 s; budget 20.0% ± 5.0%")
    other = OffloadWatch()
    other.observe(KEY, BUDGET, 0, 0, now=0.0)
    assert condition(other.observe(KEY, BUDGET, 1000, 100, now=1.0))[:2] == ("False", "UnderBudget")
    other.observe(KEY, BUDGET, 0, 0, now=0.0)
    assert condition(other.observe(KEY, BUDGET, 1000, 180, now=1.0))[:2] == ("True", "WithinBudget")
    assert offload_condition([], None, None, 1) == []  # no budget, no condition

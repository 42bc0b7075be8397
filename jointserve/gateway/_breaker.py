"""Circuit breaker for the gateway's calls to the cloud tier.

When the cloud model is down or overloaded, every hard example would otherwise wait for its
own timeout before falling back to the edge answer. The gateway asks `allow()` before each
cloud call and reports the outcome; after `failure_threshold` consecutive failures the breaker
opens and hard examples fall back at once (fallback reason `circuit_open`). After `cooldown_s`
one probe call is let through: its success closes the breaker, its failure reopens it.

    closed --N consecutive failures--> open --cooldown_s--> half_open --probe ok--> closed
                                         ^-------------------probe failed------------'

Calls admitted before the breaker opened may report afterwards; while open those outcomes are
ignored (they say nothing new, and must not stretch or cut short the cooldown).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a single half-open probe.

    Not thread-safe, by design: it lives in one gateway replica and is used from that
    replica's single asyncio event loop, where no two methods run at once. `clock` is
    injectable (monotonic seconds) so tests step time instead of sleeping.

    Every `allow()` that returns True must be followed by exactly one of `record_success()`,
    `record_failure()` or `release()` (the call was abandoned, e.g. the client went away).
    A probe that never reports is not fatal: once it has been outstanding for `cooldown_s`
    another probe is let through.
    """

    def __init__(
        self,
        failure_threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        is_int = isinstance(failure_threshold, int) and not isinstance(failure_threshold, bool)
        if not is_int or failure_threshold < 1:
            raise ValueError(
                f"failure_threshold must be an integer >= 1, got {failure_threshold!r}"
            )
        if not cooldown_s >= 0:  # also rejects NaN
            raise ValueError(f"cooldown_s must be a number >= 0, got {cooldown_s!r}")
        self._threshold = failure_threshold
        self._cooldown_s = float(cooldown_s)
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_count = 0
        self._opened_at = 0.0
        self._probe_started: float | None = None  # half_open: when the outstanding probe began

    @property
    def state(self) -> BreakerState:
        """The state as of the last call; an open breaker turns half_open only in `allow()`."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def opened_count(self) -> int:
        """How many times the breaker has opened (including reopening after a failed probe)."""
        return self._opened_count

    def allow(self) -> bool:
        """May the caller try the cloud now? True admits one call (see the class docstring)."""
        if self._state == "closed":
            return True
        now = self._clock()
        if self._state == "open":
            if now - self._opened_at < self._cooldown_s:
                return False
            self._state = "half_open"
            self._probe_started = now
            return True
        # half_open: one probe at a time, unless the outstanding one looks lost.
        if self._probe_started is not None and now - self._probe_started < self._cooldown_s:
            return False
        self._probe_started = now
        return True

    def record_success(self) -> None:
        """An admitted call succeeded: reset the failure count; a successful probe closes."""
        if self._state == "open":
            return
        self._state = "closed"
        self._failures = 0
        self._probe_started = None

    def record_failure(self) -> None:
        """An admitted call failed: count it (opening at the threshold); a failed probe reopens."""
        if self._state == "open":
            return
        if self._state == "half_open":
            self._open()
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._open()

    def release(self) -> None:
        """An admitted call ended without an outcome: free the probe slot if it held it."""
        if self._state == "half_open":
            self._probe_started = None

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._opened_count += 1
        self._probe_started = None

"""Tests of the gateway's circuit breaker, on a fake clock the tests step by hand."""

from __future__ import annotations

import pytest

from jointserve.gateway._breaker import CircuitBreaker

COOLDOWN = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, cooldown_s=COOLDOWN, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def opened(clock: FakeClock) -> CircuitBreaker:
    breaker = make(clock)
    fail(breaker, 3)
    assert breaker.state == "open"
    return breaker


def test_starts_closed_and_allows(clock: FakeClock) -> None:
    breaker = make(clock)
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(10))
    assert breaker.opened_count == 0
    assert breaker.consecutive_failures == 0


def test_opens_after_threshold_consecutive_failures_not_before(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 2
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened_count == 1
    assert not breaker.allow()


def test_success_in_between_resets_the_count(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker, 1)
    assert breaker.state == "open"


def test_threshold_one_opens_on_first_failure(clock: FakeClock) -> None:
    breaker = make(clock, threshold=1)
    fail(breaker, 1)
    assert breaker.state == "open"


def test_stays_open_during_cooldown(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(COOLDOWN - 0.001)
    assert not breaker.allow()
    assert breaker.state == "open"


def test_exactly_one_probe_after_cooldown(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(COOLDOWN)
    assert breaker.allow()
    assert breaker.state == "half_open"
    assert [breaker.allow() for _ in range(5)] == [False] * 5


def test_probe_success_closes(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(COOLDOWN)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 0
    assert all(breaker.allow() for _ in range(5))


def test_probe_failure_reopens_with_fresh_cooldown(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(COOLDOWN + 5)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened_count == 2
    clock.advance(COOLDOWN - 0.001)  # measured from the failed probe, not the first opening
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.allow()
    assert breaker.state == "half_open"


def test_release_frees_the_probe_slot(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(COOLDOWN)
    assert breaker.allow()
    breaker.release()
    assert breaker.state == "half_open"
    assert breaker.allow()  # the next caller probes
    assert not breaker.allow()


def test_release_is_a_noop_when_closed_or_open(clock: FakeClock) -> None:
    breaker = make(clock)
    assert breaker.allow()
    breaker.release()
    assert breaker.state == "closed"
    fail(breaker, 3)
    breaker.release()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_stuck_probe_lets_another_probe_through(clock: FakeClock) -> None:
    breaker = opened(clock)
    clock.advance(COOLDOWN)
    assert breaker.allow()  # this probe never reports back
    clock.advance(COOLDOWN - 0.001)
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"


def test_late_outcomes_while_open_are_ignored(clock: FakeClock) -> None:
    breaker = opened(clock)
    breaker.record_success()  # a call admitted before opening, finishing now
    assert breaker.state == "open"
    clock.advance(COOLDOWN / 2)
    breaker.record_failure()  # must not restart the cooldown
    clock.advance(COOLDOWN / 2)
    assert breaker.allow()
    assert breaker.opened_count == 1


def test_opened_count_counts_every_opening(clock: FakeClock) -> None:
    breaker = make(clock, threshold=1)
    for expected in (1, 2, 3):
        fail(breaker, 1)
        assert breaker.opened_count == expected
        clock.advance(COOLDOWN)
        assert breaker.allow()
        breaker.record_success()


def test_zero_cooldown_probes_at_once(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=0, clock=clock)
    fail(breaker, 1)
    assert breaker.allow()
    assert breaker.state == "half_open"


@pytest.mark.parametrize(
    ("threshold", "cooldown", "message"),
    [
        pytest.param(0, 1.0, "failure_threshold must be an integer >= 1", id="threshold-zero"),
        pytest.param(-1, 1.0, "failure_threshold must be an integer >= 1", id="threshold-negative"),
        pytest.param(1.5, 1.0, "failure_threshold must be an integer >= 1", id="threshold-float"),
        pytest.param(True, 1.0, "failure_threshold must be an integer >= 1", id="threshold-bool"),
        pytest.param(1, -0.1, "cooldown_s must be a number >= 0", id="cooldown-negative"),
        pytest.param(1, float("nan"), "cooldown_s must be a number >= 0", id="cooldown-nan"),
    ],
)
def test_rejects_bad_arguments(threshold: object, cooldown: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(failure_threshold=threshold, cooldown_s=cooldown)  # type: ignore[arg-type]

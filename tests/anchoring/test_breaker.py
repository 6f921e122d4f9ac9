"""The anchor client's circuit breaker, on a clock the test moves."""

from __future__ import annotations

from stateset_sequencer.anchoring.breaker import BreakerPolicy, BreakerState, CircuitBreaker


def state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # read afresh: the state moves with the clock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_in_the_window_open_it_for_sixty_seconds() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(4):
        assert breaker.allow()
        breaker.failed("connection refused")
    assert state(breaker) is BreakerState.CLOSED
    breaker.failed("connection refused")
    assert state(breaker) is BreakerState.OPEN and not breaker.allow()
    status = breaker.status()
    assert status.retry_in_s == 60.0 and status.last_error == "connection refused"
    clock.now += 59.9
    assert not breaker.allow()
    clock.now += 0.1
    assert state(breaker) is BreakerState.HALF_OPEN


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(4):
        breaker.failed("timeout")
    clock.now += 120.5
    breaker.failed("timeout")
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.status().recent_failures == 1


def test_half_open_lets_one_trial_through_and_two_successes_close_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(5):
        breaker.failed("down")
    clock.now += 60
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.succeeded()
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()
    breaker.succeeded()
    assert state(breaker) is BreakerState.CLOSED and breaker.status().last_error is None
    assert breaker.status().recent_failures == 0


def test_a_failed_trial_reopens_for_twice_as_long_up_to_three_hundred_seconds() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(5):
        breaker.failed("down")
    waits = []
    for _ in range(5):
        wait = breaker.status().retry_in_s
        assert wait is not None
        waits.append(wait)
        clock.now += wait
        assert breaker.allow()
        breaker.failed("still down")
    assert waits == [60.0, 120.0, 240.0, 300.0, 300.0]
    # Closing resets the backoff: the next opening is 60 s again.
    clock.now += 300
    breaker.allow()
    breaker.succeeded()
    breaker.allow()
    breaker.succeeded()
    for _ in range(5):
        breaker.failed("again")
    assert breaker.status().retry_in_s == 60.0


def test_a_slow_success_counts_as_a_failure() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2), clock=clock)
    breaker.succeeded(elapsed_s=31)
    breaker.succeeded(elapsed_s=45)
    assert state(breaker) is BreakerState.OPEN
    assert "45.0 s" in (breaker.status().last_error or "")

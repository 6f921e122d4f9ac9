"""The anchor client's circuit breaker, with the reference's numbers (docs/ANCHORING.md):
after 5 failures within 120 s it opens and refuses calls for 60 s; then one trial call is
let through (half-open); 2 successes in a row close it, a failure re-opens it for twice as
long as before, up to 300 s. A call slower than 30 s counts as a failure.

An open breaker keeps a node that is down from holding every anchoring caller for a full
RPC timeout, and tells ``/health/detailed`` why anchoring stands still.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5
    failure_window_s: float = 120.0
    open_for_s: float = 60.0
    half_open_calls: int = 1
    close_after_successes: int = 2
    backoff_factor: float = 2.0
    max_open_for_s: float = 300.0
    slow_call_s: float = 30.0


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    state: BreakerState
    recent_failures: int
    retry_in_s: float | None  # while open: how long until a trial call is let through
    last_error: str | None


class CircuitBreaker:
    def __init__(
        self, policy: BreakerPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._open_for = self.policy.open_for_s
        self._trials = 0  # calls let through while half-open and not yet finished
        self._successes = 0
        self.last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        self._advance()
        return self._state

    def _advance(self) -> None:
        now = self._clock()
        if self._state is BreakerState.OPEN and now - self._opened_at >= self._open_for:
            self._state = BreakerState.HALF_OPEN
            self._trials = 0
            self._successes = 0
        while self._failures and now - self._failures[0] > self.policy.failure_window_s:
            self._failures.popleft()

    def allow(self) -> bool:
        """Whether a call may go out now; a True while half-open reserves a trial, which
        the caller must end with :meth:`succeeded` or :meth:`failed`."""
        self._advance()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False
        if self._trials >= self.policy.half_open_calls:
            return False
        self._trials += 1
        return True

    def succeeded(self, elapsed_s: float = 0.0) -> None:
        if elapsed_s > self.policy.slow_call_s:
            self.failed(f"a call took {elapsed_s:.1f} s")
            return
        self._advance()
        if self._state is BreakerState.HALF_OPEN:
            self._trials = max(self._trials - 1, 0)
            self._successes += 1
            if self._successes >= self.policy.close_after_successes:
                self._state = BreakerState.CLOSED
                self._failures.clear()
                self._open_for = self.policy.open_for_s
                self.last_error = None

    def failed(self, error: str) -> None:
        self._advance()
        self.last_error = error
        now = self._clock()
        if self._state is BreakerState.HALF_OPEN:
            self._open_for = min(
                self._open_for * self.policy.backoff_factor, self.policy.max_open_for_s
            )
            self._open(now)
            return
        if self._state is BreakerState.OPEN:
            return
        self._failures.append(now)
        if len(self._failures) >= self.policy.failure_threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._trials = 0
        self._successes = 0

    def status(self) -> BreakerStatus:
        self._advance()
        retry = None
        if self._state is BreakerState.OPEN:
            retry = max(self._open_for - (self._clock() - self._opened_at), 0.0)
        return BreakerStatus(self._state, len(self._failures), retry, self.last_error)

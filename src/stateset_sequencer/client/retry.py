"""When a call is tried again, and how long to wait first.

A call is retried on a transport failure (connection refused or reset, read or write
errors, timeouts, a connection closed without an answer) and on the statuses of
:data:`RETRY_STATUSES`; never on another 4xx. Only an idempotent call is retried once the
request may have reached the server: one that is not (minting a key, registering an agent)
is sent again only after a failure that proves it never left, a refused connection.

The wait before retry ``n`` (1-based) is full jitter, ``uniform(0, min(max_delay,
base_delay * 2**(n-1)))``, or the answer's ``Retry-After`` (seconds or an HTTP date), at
most ``max_delay``. No retry starts later than ``deadline`` seconds after the call began:
a wait that would end past it ends the call instead, with the last failure. The attempt
in flight keeps its own timeout.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

# 408 Request Timeout, 425 Too Early, 429 Too Many Requests, and the 5xx a proxy or an
# overloaded node answers; 501 and the rest of 5xx say something a retry will not change.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# Methods whose repetition has the effect of one call (RFC 9110 §9.2.2). POST is
# idempotent only where the route says so (ingest, key registration, …): the caller marks it.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a call is tried. ``attempts`` counts the first try
    (1: no retry). ``sleep``, ``jitter`` (a number in [0, 1)) and ``clock`` are there to be
    replaced in tests, so that the delays asked for are checked exactly, never waited."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    deadline: float = 30.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)
    jitter: Callable[[], float] = field(default=random.random, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts counts the first try: at least 1")
        for name in ("base_delay", "max_delay", "deadline"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds, 0 or more")

    @classmethod
    def none(cls) -> RetryPolicy:
        """One try, whatever happens."""
        return cls(attempts=1)

    def backoff(self, retry: int) -> float:
        """The full-jitter wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * float(2 ** min(retry - 1, 62)))
        return ceiling * self.jitter()

    def wait(self, retry: int, retry_after: float | None, elapsed: float) -> float | None:
        """How long to wait before retry ``retry``, or None when no retry may start: the
        attempts are spent, or the wait would end past the deadline."""
        if retry >= self.attempts:
            return None
        delay = self.backoff(retry) if retry_after is None else min(retry_after, self.max_delay)
        if elapsed + delay > self.deadline:
            return None
        return delay


def retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds (0 for a date passed), or
    None when it is absent or unreadable."""
    text = headers.get("retry-after", "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def never_sent(exc: httpx.RequestError) -> bool:
    """Whether the request provably never reached the server: no connection was made
    (refused, unresolvable, connect timeout, no connection free in the pool)."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def transient(exc: httpx.RequestError) -> bool:
    """A transport failure another attempt (or another URL) may not meet. Not: a URL or
    protocol the client cannot speak, a proxy's refusal, a body that cannot be decoded."""
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)

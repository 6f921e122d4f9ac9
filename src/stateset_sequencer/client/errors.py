"""What the SDK raises. Every exception is a :class:`SequencerClientError`, so one
``except`` catches them all:

* :class:`SequencerError`: the server answered with a status of 400 or more (after the
  retries the call was allowed, the last such answer; ``attempts`` lists them all).
* :class:`SequencerUnavailable`: no answer at all, every attempt failed in transport
  (connection refused or reset, timeouts, a connection closed without an answer). It is
  also an ``httpx.TransportError``, so code that caught httpx's errors before the SDK
  retried catches it still.
* :class:`UnexpectedResponse`: a 2xx answer that is not what the route promises (not
  JSON, or without the fields the method reads).
* :class:`ReceiptMismatch` and :class:`UnsignedReceipt`: a receipt that does not answer
  its event, or has no signature.
* :class:`InvalidBaseURL`: a base URL the client cannot use (also a ``ValueError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Any

import httpx

# Here as well, for code that decides what to retry where it decides what to catch.
from .retry import RetryPolicy as RetryPolicy


class SequencerClientError(Exception):
    """Anything the SDK raises."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a call: the base URL it went to and how it ended. ``reached`` is false
    only when the request provably never left (the connection was never made), the one
    case in which a call that is not idempotent may be sent again."""

    url: str
    outcome: str
    reached: bool


def _listed(attempts: tuple[Attempt, ...]) -> str:
    # Consecutive failures alike are counted, not repeated: one line however many tries.
    parts = []
    for (url, outcome), group in groupby(attempts, key=lambda a: (a.url, a.outcome)):
        count = len(list(group))
        parts.append(f"{url} ({outcome})" + (f" x{count}" if count > 1 else ""))
    return "; ".join(parts)


class SequencerError(SequencerClientError):
    """A non-2xx answer. ``code`` is the body's code in whichever of the reference's three
    error shapes it came; ``reason`` our finer cause when the server gave one."""

    def __init__(
        self, status: int, code: str, message: str, body: Any, reason: str | None = None
    ) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.reason = reason
        # Set by the client: every try of the call, this answer last.
        self.attempts: tuple[Attempt, ...] = ()


class SequencerUnavailable(SequencerClientError, httpx.TransportError):
    """Every attempt of a call failed before an answer came. ``attempts`` says where each
    went and why it failed (one line, in ``str()``); the last transport error is the
    ``__cause__``. ``reached_server`` tells whether any attempt may have been applied:
    after a timeout the server may have done the work without answering."""

    def __init__(self, method: str, path: str, attempts: tuple[Attempt, ...]) -> None:
        tries = f"{len(attempts)} attempt" + ("s" if len(attempts) != 1 else "")
        super().__init__(f"{method} {path}: no answer after {tries}: {_listed(attempts)}")
        self.method = method
        self.path = path
        self.attempts = attempts

    @property
    def urls(self) -> tuple[str, ...]:
        """The base URLs tried, each once, in the order first tried."""
        return tuple(dict.fromkeys(a.url for a in self.attempts))

    @property
    def reached_server(self) -> bool:
        return any(a.reached for a in self.attempts)


class UnexpectedResponse(SequencerClientError):
    """A successful status with a body the route does not answer: not JSON, or not the
    shape the method reads (say, another service on that port)."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what}: {problem}")
        self.what = what
        self.problem = problem


class InvalidBaseURL(SequencerClientError, ValueError):
    """A base URL that is not ``http(s)://host[:port][/prefix]``."""


class ReceiptMismatch(SequencerClientError):
    """A receipt that does not answer the event it claims to (wrong hash or signature)."""


class UnsignedReceipt(ReceiptMismatch):
    """A receipt without a signature (alg ``none``), refused unless explicitly allowed."""


def error_from(response: httpx.Response) -> SequencerError:
    """The :class:`SequencerError` of an answer of 400 or more."""
    try:
        body: Any = response.json()
    except ValueError:
        return SequencerError(response.status_code, "HTTP_ERROR", response.text[:300], None)
    code, message, reason = "HTTP_ERROR", response.text[:300], None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # ApiError
            code = str(error.get("code", code))
            message = str(error.get("message", message))
            details = error.get("details")
            if isinstance(details, dict) and details.get("reason"):
                reason = str(details["reason"])
        elif isinstance(error, str):  # auth middleware or agent handlers
            code = str(body.get("code", code))
            message = error
    return SequencerError(response.status_code, code, message, body, reason)


TRANSPORT_ERRORS: tuple[type[Exception], ...] = (SequencerUnavailable, httpx.TransportError)
"""What a call that got no answer raises: :class:`SequencerUnavailable` from the client
(itself an ``httpx.TransportError``), a bare ``httpx.TransportError`` from httpx used
directly."""

"""Sending one call: its attempts (:mod:`.retry`) across the base URLs.

The base URLs are tried round robin: after a transport failure or a retryable status the
next attempt goes to the next URL. The URL that last answered is remembered, and the next
call starts there, so a node that is down costs one failed connection, not one per call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import Attempt, InvalidBaseURL, SequencerUnavailable
from .retry import RETRY_STATUSES, RetryPolicy, never_sent, retry_after, transient


def base_urls(base_url: str | Sequence[str]) -> tuple[str, ...]:
    """Each base URL checked and without its trailing slash: ``http(s)://host[:port]``
    with an optional path prefix, nothing else."""
    given = [base_url] if isinstance(base_url, str) else list(base_url)
    if not given:
        raise InvalidBaseURL("no base URL given")
    checked = []
    for text in given:
        if not isinstance(text, str):
            raise InvalidBaseURL(f"a base URL is text, not {type(text).__name__}")
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as exc:
            raise InvalidBaseURL(f"{text!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidBaseURL(f"{text!r} is not an http:// or https:// URL with a host")
        if url.query or url.fragment:
            raise InvalidBaseURL(f"{text!r}: a base URL has no query or fragment")
        checked.append(text.rstrip("/"))
    return tuple(checked)


@dataclass(slots=True)
class Answer:
    response: httpx.Response
    attempts: tuple[Attempt, ...]


class Dispatcher:
    """The attempts of each call over one httpx client and the base URLs."""

    def __init__(self, http: httpx.AsyncClient, urls: tuple[str, ...], policy: RetryPolicy):
        self.http = http
        self.urls = urls
        self.policy = policy
        self._current = 0

    @property
    def current(self) -> str:
        return self.urls[self._current]

    async def send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Answer:
        """The answer of the last attempt, whatever its status (the caller reads it), or
        :class:`SequencerUnavailable` when the last attempt had none. A status in
        ``accept`` is an answer the caller wants as it is, never retried."""
        policy = self.policy
        started = policy.clock()
        attempts: list[Attempt] = []
        index = self._current
        for number in range(1, policy.attempts + 1):
            base = self.urls[index]
            try:
                response = await self.http.request(
                    method, base + path, json=json, params=params, content=content, headers=headers
                )
            except httpx.RequestError as exc:
                sent = not never_sent(exc)
                attempts.append(Attempt(base, _described(exc), sent))
                again = transient(exc) and (idempotent or not sent)
                wait = policy.wait(number, None, policy.clock() - started) if again else None
                if wait is None:
                    raise SequencerUnavailable(method, path, tuple(attempts)) from exc
            else:
                status = response.status_code
                if status not in RETRY_STATUSES or status in accept:
                    self._current = index
                    return Answer(response, (*attempts, Attempt(base, f"HTTP {status}", True)))
                attempts.append(Attempt(base, f"HTTP {status}", True))
                asked = retry_after(response.headers)
                elapsed = policy.clock() - started
                wait = policy.wait(number, asked, elapsed) if idempotent else None
                if wait is None:
                    return Answer(response, tuple(attempts))
            index = (index + 1) % len(self.urls)
            await policy.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _described(exc: httpx.RequestError) -> str:
    text = " ".join(str(exc).split())  # one line, whatever the OS put in the message
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

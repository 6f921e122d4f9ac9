"""Connection limits uvicorn does not have: a deadline for a request head, and a cap on
open connections answered with our 503.

uvicorn times out only an idle keep-alive connection: one that never completes a request
head (a connection opened and left silent, or a head sent a byte at a time) is held for
ever. :func:`protocol_class` returns its HTTP/1.1 protocol (h11) with

* ``header_timeout``: from the moment a connection opens, or the first byte of a later
  request on it, the whole head must arrive within this many seconds, else the
  connection is closed;
* ``keepalive_timeout``: an idle connection between requests is closed after this long
  (uvicorn's own timer, set here so that both are one configuration);
* a body the application answered without reading (a refused credential, a body over
  its limit) is read and dropped for at most ``header_timeout`` more seconds, then the
  connection is closed;
* ``max_connections``: a connection opened while this many are open is answered 503
  ``SERVICE_UNAVAILABLE`` (reason ``TOO_MANY_CONNECTIONS``) on its first request and
  closed; one that sends nothing is closed at its header deadline like any other.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import ApiError

RETRY_AFTER_SECONDS = 1


async def over_capacity(scope: Scope, receive: Receive, send: Send) -> None:
    response = ApiError(
        "SERVICE_UNAVAILABLE",
        "Too many open connections; retry shortly",
        reason="TOO_MANY_CONNECTIONS",
        retry_after=RETRY_AFTER_SECONDS,
    ).response()
    response.headers["connection"] = "close"
    await response(scope, receive, send)


class GuardedH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    max_connections: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.keepalive_timeout  # type: ignore[assignment]
        self._head_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.app = over_capacity
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            # Part of a head has come: the deadline runs (from the connection's start for
            # its first request, from this first byte for a later one).
            self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            # Answered before the body was read (a refused credential, a body over its
            # limit): the rest is read and dropped, so that the client sees the answer
            # rather than a reset, but only until the deadline.
            self._drain_timer = self.loop.call_later(self.header_timeout, self._drain_timed_out)

    def _drain_timed_out(self) -> None:
        self._drain_timer = None
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.transport.close()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_class(
    *, header_timeout: float, keepalive_timeout: float, max_connections: int | None
) -> type[GuardedH11Protocol]:
    """uvicorn's ``http=`` for the given limits (uvicorn builds one instance per
    connection from the class, so the limits ride on a subclass)."""
    return type(
        "ConfiguredH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout": header_timeout,
            "keepalive_timeout": keepalive_timeout,
            "max_connections": max_connections,
        },
    )

"""A stream's events as Server-Sent Events: ``GET /api/v1/ves/events/stream``.

The same subscription as gRPC ``StreamEvents`` (``sequencer/live.py``), for browsers and
scripts: history from ``from`` (or after ``Last-Event-ID``), then every event committed on
any server process, each as ``id: <sequence>`` / ``event: event`` / ``data: <the item of
GET /api/v1/ves/events>``. A ``heartbeat`` carries the position read so far as its id, so
a reconnecting ``EventSource`` resumes past the events a filter skipped. docs/STREAMS.md
has the wire format and the cut-off rule.

The edge's request timeout does not apply here (``middleware.LONG_LIVED_PATHS``): the
stream ends when the client goes, when the server stops, or when the client stops taking
bytes for ``STREAM_STALL_TIMEOUT_MS`` (then an ``error`` event names where to resume, if
it can still be written, and the connection closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ...sequencer.live import EventFilter, Heartbeat, Subscription, TooManySubscribers
from ...ves.codec import format_rfc3339
from .deps import Auth, ServicesDep
from .errors import ApiError, responses
from .events import U63, StoreQ, TenantQ, read_stream, ves_item

log = structlog.get_logger("stateset_sequencer.stream")

router = APIRouter(prefix="/api/v1", tags=["events"])

STREAM_PATH = "/api/v1/ves/events/stream"
DEFAULT_HEARTBEAT_MS = 15_000
# What a browser's EventSource waits before reconnecting.
RETRY_MS = 2_000
# Once a client is cut off for not reading, the goodbye gets this long to leave.
GOODBYE_TIMEOUT_S = 0.5
MAX_FILTER_VALUES = 64


def sse_message(event: str, data: Any, ident: int | None = None) -> bytes:
    """One SSE message. Compact JSON holds no raw newline, so ``data`` is one line."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: {text}\n\n".encode()


class EventStreamResponse(Response):
    """An ASGI response that writes a subscription as SSE and watches the client.

    Starlette's ``StreamingResponse`` would wait on a stalled client forever; here every
    write has a deadline, and a client that goes away ends the subscription at once
    rather than at the next event."""

    media_type = "text/event-stream"

    def __init__(
        self, subscription: Subscription, stall_s: float, on_cutoff: Callable[[], None]
    ) -> None:
        super().__init__(media_type=self.media_type)
        self._sub = subscription
        self._stall_s = stall_s
        self._on_cutoff = on_cutoff

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    # Proxies (nginx) would otherwise hold events back to fill a buffer.
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        pump = asyncio.ensure_future(self._pump(send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
            for task in (pump, gone):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._sub.close()
        if pump.done() and not pump.cancelled() and pump.exception() is None and pump.result():
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(
                    send({"type": "http.response.body", "body": b"", "more_body": False}),
                    GOODBYE_TIMEOUT_S,
                )

    async def _pump(self, send: Send) -> bool:
        """Write until the subscription ends; False when the client stalled."""
        sub = self._sub
        if not await self._write(send, f"retry: {RETRY_MS}\n\n".encode()):
            return False
        async for item in sub:
            if isinstance(item, Heartbeat):
                chunk = sse_message(
                    "heartbeat",
                    {"position": item.position, "at": format_rfc3339(item.at)},
                    item.position,
                )
            else:
                chunk = sse_message("event", ves_item(item), item.sequence_number)
            if not await self._write(send, chunk):
                self._on_cutoff()
                resume = sub.position + 1 if isinstance(item, Heartbeat) else item.sequence_number
                log.warning(
                    "stream subscriber too slow; cut off",
                    tenant_id=str(sub.stream.tenant_id),
                    store_id=str(sub.stream.store_id),
                    resume_from=resume,
                )
                goodbye = sse_message(
                    "error",
                    {
                        "code": "subscriber_too_slow",
                        "message": "the client took nothing for "
                        f"{self._stall_s:g} s; reconnect from sequence {resume}",
                        "resume_from": resume,
                    },
                )
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(_body(send, goodbye), GOODBYE_TIMEOUT_S)
                return False
        return True

    async def _write(self, send: Send, chunk: bytes) -> bool:
        try:
            await asyncio.wait_for(_body(send, chunk), self._stall_s)
        except TimeoutError:
            return False
        return True


async def _body(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


def _last_event_id(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    value = text.strip()
    if not value.isdigit() or int(value) > U63:
        raise ApiError(
            "INVALID_FIELD_VALUE",
            "Last-Event-ID must be a sequence number (a whole number 0 or more)",
            reason="last_event_id",
        )
    return int(value)


def _filter_values(name: str, values: list[str]) -> list[str]:
    if len(values) > MAX_FILTER_VALUES:
        raise ApiError(
            "INVALID_FIELD_VALUE",
            f"{name}: at most {MAX_FILTER_VALUES} values",
            reason="too_many_filter_values",
        )
    return values


@router.get(
    STREAM_PATH.removeprefix("/api/v1"),
    response_class=EventStreamResponse,
    status_code=200,
    responses=responses(503),
    summary="Follow a stream's events live (Server-Sent Events)",
)
async def stream_ves_events(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    tenant_id: TenantQ,
    store_id: StoreQ,
    from_: Annotated[
        int | None,
        Query(
            alias="from",
            ge=0,
            le=U63,
            description="First sequence wanted; absent: live events only, from the head",
        ),
    ] = None,
    heartbeat_ms: Annotated[
        int, Query(ge=0, le=3_600_000, description="Heartbeat interval; 0: none")
    ] = DEFAULT_HEARTBEAT_MS,
    entity_type: Annotated[list[str] | None, Query(description="Only these entity types")] = None,
    event_type: Annotated[list[str] | None, Query(description="Only these event types")] = None,
    agent_id: Annotated[list[uuid.UUID] | None, Query(description="Only these agents")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventStreamResponse:
    """History from ``from`` (or after ``Last-Event-ID``, which wins), then live events,
    with no gap and no duplicate; heartbeats carry the position read so far."""
    stream = read_stream(ctx, request, tenant_id, store_id)
    resume = _last_event_id(last_event_id)
    after = resume if resume is not None else (None if from_ is None else max(from_, 1) - 1)
    agents = agent_id or []
    _filter_values("agent_id", [str(a) for a in agents])
    wanted = EventFilter.of(
        entity_types=_filter_values("entity_type", entity_type or []),
        event_types=_filter_values("event_type", event_type or []),
        agents=agents,
    )
    try:
        sub = await services.live.subscribe(
            stream,
            after=after,
            wanted=wanted,
            heartbeat_s=heartbeat_ms / 1000 if heartbeat_ms else None,
        )
    except TooManySubscribers as exc:
        raise ApiError("SERVICE_UNAVAILABLE", str(exc), reason="too_many_subscribers") from None
    cutoffs = services.metrics.stream_cutoffs.labels("sse")
    return EventStreamResponse(sub, services.settings.STREAM_STALL_TIMEOUT_MS / 1000, cutoffs.inc)

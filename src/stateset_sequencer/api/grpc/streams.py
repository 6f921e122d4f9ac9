"""The live streams of ``stateset.sequencer.v2.Sequencer``: ``StreamEvents``,
``SubscribeEntity`` and ``SyncStream``, over the process's live-event hub
(``sequencer/live.py``), so they see every event committed on any server process,
whichever API sequenced it (the reference broadcasts only gRPC pushes of its own
process).

**Writes and slow clients.** Every message goes out through :class:`Writer`: one write at
a time, each within ``STREAM_STALL_TIMEOUT_MS``. ``context.write`` waits while HTTP/2 flow
control holds the stream (the client's window is full because it reads nothing), so a
client that stops reading costs the server at most its window and one message; once the
deadline passes the call ends RESOURCE_EXHAUSTED ``subscriber_too_slow: resume
from_sequence=N`` with trailing metadata ``x-resume-from-sequence: N``. N is the first
event the client may not have received: the message whose write stalled can still
arrive, so resuming from N may repeat one event, never skip one. A server shutting down
ends each stream UNAVAILABLE with the same metadata.

**StreamEvents.** ``include_history``: from ``from_sequence`` (0 reads as 1), then live;
otherwise live from the head at subscription. Filters narrow what is sent, not the
position. ``heartbeat_interval_ms`` > 0 sends, whenever that long passes with nothing to
send, a ``SequencedEvent`` with no envelope: ``sequence_number`` is the position read so
far (filtered events included) and ``sequenced_at`` the server's time; intervals under
:data:`MIN_HEARTBEAT_MS` are raised to it.

**SubscribeEntity.** One entity's events: its history from the entity index up to the
stream's head at subscription, then live events after that head, so nothing is missed
or repeated at the seam.

**SyncStream.** Bidirectional, one session per call:

- ``push`` is answered ``push_response`` and ``pull`` ``pull_response``, exactly as the
  unary ``Push`` and ``PullEvents``;
- ``ack`` raises the agent's cursor through the ``AgentCursors`` port, the row the REST
  cursor route writes (docs/CURSORS.md), to ``agent_head_sequence`` (the highest
  contiguous durable sequence; ``sequence_numbers`` never move it across a gap, and none
  of them may exceed the head), and is answered ``sync_state`` with the acknowledged
  sequence and lag. The stream is the ack's ``tenant_id``/``store_id``, or the session's
  when they are empty. The agent is the credential's, else (for an admin) the
  ``x-agent-id`` metadata or the agent of the session's first push; without one the ack
  is refused, as the reference refuses it;
- ``heartbeat`` is echoed as ``server_heartbeat`` with its ``last_seen_sequence``;
- messages only a server sends are ignored, as the reference ignores them.

The session's stream is the one its first ``push``, ``pull`` or ``ack`` names; from then
on every event committed to it (the client's own pushes included) is forwarded as
``event``, live from the head at that moment, when the credential may read it. One
stream per session keeps the rule simple and honest: a client following several streams
opens a session per stream. A refusal ends the session with its status, as in the
reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import structlog

from ...proto import sequencer_v2_pb2 as pb
from ...runtime import Services
from ...sequencer import cursors
from ...sequencer.auth import AuthError, ensure_read
from ...sequencer.cursors import CursorError
from ...sequencer.live import EventFilter, Heartbeat, Subscription, TooManySubscribers
from ...store.errors import StoreError
from ...store.records import StreamKey
from ..http.events import entity_fault
from .calls import Call, Context, Malformed
from .convert import (
    heartbeat_event,
    now_timestamp,
    sequenced_event,
    stream_of,
    uuid_field,
)
from .errors import (
    INTERNAL_MESSAGE,
    RESUME_METADATA,
    GrpcError,
    invalid,
    refusal,
    store_fault,
)

log = structlog.get_logger("stateset_sequencer.grpc")

MIN_HEARTBEAT_MS = 50
MAX_FILTER_VALUES = 100  # the reference's bound on each filter list
AGENT_METADATA = "x-agent-id"
ACK_NEEDS_AGENT = "durable acknowledgements require agent-scoped authentication"


def too_slow(resume_from: int | None) -> GrpcError:
    if resume_from is None:
        return GrpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "subscriber_too_slow")
    return GrpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"subscriber_too_slow: resume from_sequence={resume_from}",
        ((RESUME_METADATA, str(resume_from)),),
    )


class Writer:
    """Messages to one call's client, one at a time, each within the stall deadline."""

    def __init__(self, services: Services, context: Context, call: Call) -> None:
        self._context = context
        self._call = call
        self._stall_s = services.settings.STREAM_STALL_TIMEOUT_MS / 1000
        self._cutoffs = services.metrics.stream_cutoffs.labels("grpc")
        self._lock = asyncio.Lock()
        self.sent = 0

    async def send(self, message: object) -> None:
        try:
            async with asyncio.timeout(self._stall_s), self._lock:
                await self._context.write(message)
        except TimeoutError:
            self._cutoffs.inc()
            resume = self._call.resume_from
            log.warning(
                "grpc subscriber too slow; cut off",
                method=self._call.method,
                request_id=self._call.request_id,
                resume_from=resume,
            )
            self._call.fields["cut_off"] = True
            raise too_slow(resume) from None
        self.sent += 1
        self._call.fields["messages_sent"] = self.sent


async def subscribe(
    services: Services,
    stream: StreamKey,
    *,
    after: int | None,
    wanted: EventFilter | None = None,
    heartbeat_s: float | None = None,
) -> Subscription:
    try:
        return await services.live.subscribe(
            stream, after=after, wanted=wanted, heartbeat_s=heartbeat_s
        )
    except TooManySubscribers as exc:
        raise GrpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None


async def pump(sub: Subscription, writer: Writer, call: Call) -> None:
    """Send a subscription's events (and heartbeats) until the client goes."""
    call.resume_from = sub.position + 1
    async for item in sub:
        if isinstance(item, Heartbeat):
            await writer.send(heartbeat_event(item.position, item.at))
        else:
            call.resume_from = item.sequence_number
            await writer.send(sequenced_event(item))
        call.resume_from = sub.position + 1


def page_bytes(services: Services) -> int:
    """A read page's byte cap: ``MAX_PAGE_BYTES``, within half of
    ``GRPC_MAX_MESSAGE_BYTES``, so that an answer of one page always fits a message (an
    event is smaller as protobuf than the stored text its size is counted in)."""
    settings = services.settings
    return max(1, min(settings.MAX_PAGE_BYTES, settings.GRPC_MAX_MESSAGE_BYTES // 2))


def read_scope(call: Call, stream: StreamKey) -> None:
    try:
        ensure_read(call.ctx, stream.tenant_id, stream.store_id)
    except AuthError as exc:
        raise refusal(exc) from None


def filter_values(name: str, values: list[str]) -> list[str]:
    if len(values) > MAX_FILTER_VALUES:
        raise invalid(f"{name} must not exceed {MAX_FILTER_VALUES} entries")
    return values


def agent_filter(values: list[str]) -> list[uuid.UUID]:
    return [uuid_field(v, "agent_filter entry") for v in filter_values("agent_filter", values)]


def entity_text(entity_type: str, entity_id: str) -> bool:
    """:func:`entity_fault` on an entity's names: a length fault is INVALID_ARGUMENT."""
    storable, length_fault = entity_fault(entity_type, entity_id)
    if length_fault is not None:
        raise invalid(length_fault)
    return storable


# --- StreamEvents and SubscribeEntity --------------------------------------------------------


async def stream_events(
    services: Services, request: pb.StreamEventsRequest, context: Context, call: Call
) -> None:
    stream = stream_of(request.tenant_id, request.store_id)
    call.bind(stream)
    wanted = EventFilter.of(
        entity_types=filter_values("entity_type_filter", list(request.entity_type_filter)),
        event_types=filter_values("event_type_filter", list(request.event_type_filter)),
        agents=agent_filter(list(request.agent_filter)),
    )
    read_scope(call, stream)
    after = max(request.from_sequence, 1) - 1 if request.include_history else None
    interval = request.heartbeat_interval_ms
    heartbeat_s = max(interval, MIN_HEARTBEAT_MS) / 1000 if interval else None
    sub = await subscribe(services, stream, after=after, wanted=wanted, heartbeat_s=heartbeat_s)
    async with sub:
        await pump(sub, Writer(services, context, call), call)


async def subscribe_entity(
    services: Services, request: pb.SubscribeEntityRequest, context: Context, call: Call
) -> None:
    stream = stream_of(request.tenant_id, request.store_id)
    call.bind(stream)
    storable = entity_text(request.entity_type, request.entity_id)
    read_scope(call, stream)
    wanted = EventFilter.of(entity_types=[request.entity_type], entity_id=request.entity_id)
    # History is read from the entity index up to this head, live events after it.
    head = await services.store.head(stream)
    sub = await subscribe(services, stream, after=head, wanted=wanted)
    writer = Writer(services, context, call)
    async with sub:
        if request.include_history and storable:
            await _entity_history(services, stream, request, head, writer, call)
        await pump(sub, writer, call)


async def _entity_history(
    services: Services,
    stream: StreamKey,
    request: pb.SubscribeEntityRequest,
    head: int,
    writer: Writer,
    call: Call,
) -> None:
    offset = 0
    page_events = services.settings.STREAM_PAGE_EVENTS
    while True:
        events, total = await services.store.read_entity(
            stream,
            request.entity_type,
            request.entity_id,
            offset,
            page_events,
            page_bytes(services),
        )
        for event in events:
            if event.sequence_number > head:
                return
            call.resume_from = event.sequence_number
            await writer.send(sequenced_event(event))
        offset += len(events)
        if not events or offset >= total:
            return


# --- SyncStream ----------------------------------------------------------------------------

PushFn = Callable[[Call, pb.PushRequest], Awaitable[pb.PushResponse]]
PullFn = Callable[[Call, pb.PullEventsRequest], Awaitable[pb.PullEventsResponse]]


class SyncSession:
    """One ``SyncStream`` call (module docstring): the reader of the client's messages runs
    in the call's task, the follower of the session's stream in a task of its own; the
    follower's fault ends the call through the reader."""

    def __init__(
        self,
        services: Services,
        context: Context,
        call: Call,
        *,
        push: PushFn,
        pull: PullFn,
    ) -> None:
        self._services = services
        self._call = call
        self._push = push
        self._pull = pull
        self._writer = Writer(services, context, call)
        self._stream: StreamKey | None = None
        self._agent: uuid.UUID | None = None
        self._sub: Subscription | None = None
        self._follower: asyncio.Task[None] | None = None
        self._main: asyncio.Task[object] | None = None
        self._failure: GrpcError | None = None

    async def run(self, requests: AsyncIterator[pb.SyncMessage | Malformed]) -> None:
        self._main = asyncio.current_task()
        try:
            async for message in requests:
                await self._handle(message)
        except asyncio.CancelledError:
            failure = self._failure
            if failure is None:
                raise
            if self._main is not None:
                self._main.uncancel()
            raise failure from None
        finally:
            await self._stop_following()

    async def _handle(self, message: pb.SyncMessage | Malformed) -> None:
        if isinstance(message, Malformed):
            raise message.refusal()
        kind = message.WhichOneof("message")
        self._call.fields["last_message"] = kind
        if kind == "push":
            push = message.push
            stream = stream_of(push.tenant_id, push.store_id)
            if self._agent is None and push.agent_id:
                self._agent = uuid_field(push.agent_id, "agent_id")
            await self._name(stream)
            response = await self._push(self._call, push)
            await self._writer.send(pb.SyncMessage(push_response=response))
        elif kind == "pull":
            pull = message.pull
            await self._name(stream_of(pull.tenant_id, pull.store_id))
            answer = await self._pull(self._call, pull)
            await self._writer.send(pb.SyncMessage(pull_response=answer))
        elif kind == "ack":
            state = await self._ack(message.ack)
            await self._writer.send(pb.SyncMessage(sync_state=state))
        elif kind == "heartbeat":
            echo = pb.Heartbeat(
                timestamp=now_timestamp(), last_seen_sequence=message.heartbeat.last_seen_sequence
            )
            await self._writer.send(pb.SyncMessage(server_heartbeat=echo))

    async def _name(self, stream: StreamKey) -> None:
        """The first stream a message names becomes the session's, and is followed when
        the credential may read it."""
        if self._stream is not None:
            return
        self._stream = stream
        self._call.bind(stream)
        try:
            ensure_read(self._call.ctx, stream.tenant_id, stream.store_id)
        except AuthError:
            return  # a write-only credential pushes without being sent the stream
        self._sub = await subscribe(self._services, stream, after=None)
        self._call.resume_from = self._sub.position + 1
        self._follower = asyncio.ensure_future(self._follow(self._sub))

    async def _follow(self, sub: Subscription) -> None:
        try:
            async for item in sub:
                if isinstance(item, Heartbeat):
                    continue
                self._call.resume_from = item.sequence_number
                await self._writer.send(pb.SyncMessage(event=sequenced_event(item)))
                self._call.resume_from = sub.position + 1
        except asyncio.CancelledError:
            raise
        except GrpcError as exc:
            self._fail(exc)
        except StoreError as exc:
            log.error(
                "grpc sync follower store fault",
                request_id=self._call.request_id,
                error=type(exc).__name__,
                detail=str(exc)[:500],
            )
            self._fail(store_fault(exc))
        except Exception:
            log.exception("grpc sync follower fault", request_id=self._call.request_id)
            self._fail(GrpcError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE))

    def _fail(self, failure: GrpcError) -> None:
        self._failure = failure
        if self._main is not None and not self._main.done():
            self._main.cancel()

    async def _stop_following(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None and not follower.done():
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        if self._sub is not None:
            self._sub.close()

    async def _ack(self, ack: pb.EventAck) -> pb.SyncState:
        if ack.tenant_id or ack.store_id:
            stream = stream_of(ack.tenant_id, ack.store_id)
        elif self._stream is not None:
            stream = self._stream
        else:
            raise invalid("an ack names its tenant_id and store_id until the session has a stream")
        await self._name(stream)
        agent = self._ack_agent()
        store = self._services.store
        head = await store.head(stream)
        highest = max([ack.agent_head_sequence, *ack.sequence_numbers])
        if highest > head:
            raise invalid("acknowledged sequences cannot exceed the stream head")
        try:
            view = await cursors.acknowledge(
                store, self._call.ctx, stream, agent, ack.agent_head_sequence
            )
        except (AuthError, CursorError) as exc:
            raise refusal(exc) from None
        return pb.SyncState(
            tenant_id=str(stream.tenant_id),
            store_id=str(stream.store_id),
            head_sequence=view.head_sequence,
            timestamp=now_timestamp(),
            acknowledged_sequence=view.acknowledged_sequence,
            lag=view.lag,
        )

    def _ack_agent(self) -> uuid.UUID:
        ctx = self._call.ctx
        if ctx.agent_id is not None:
            return ctx.agent_id
        named = self._call.metadata.get(AGENT_METADATA)
        if named:
            return uuid_field(named, AGENT_METADATA)
        if self._agent is not None:
            return self._agent
        raise GrpcError(grpc.StatusCode.PERMISSION_DENIED, ACK_NEEDS_AGENT)

"""``stateset.sequencer.v2.Sequencer``: the VES API, on the services HTTP uses.

Where we answer otherwise than the reference (REFERENCE_MAP §2.2), on purpose:

- ``Push`` runs the HTTP ingest pipeline whole (``Sequencer.ingest``), schema
  validation, payload limit and agent policies included: one rule for every way in. An
  unknown ``ves_version`` is a per-event rejection (INVALID_FORMAT), as over HTTP, not a
  refused call. A policy's refusal has no member in the proto's enum: it is
  UNSPECIFIED, with its message.
- ``PullEvents`` reads ``from_sequence`` 0 as 1 (the reference's window would then be one
  event short), and a page the byte cap (``MAX_PAGE_BYTES``, within half a message) cut
  short ends at its last event: ``has_more`` is true and ``next_sequence`` continues it.
  A hole in the stream is OUT_OF_RANGE rather than a short page.
- ``GetInclusionProof`` answers a commitment whose stored events no longer give its root
  DATA_LOSS, naming it, where the reference says INTERNAL.
- Every read accepts the events of any process and API, since the store is the source.
"""

# The methods carry the proto's names: grpc calls them by those.
# ruff: noqa: N802

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import ClassVar

import grpc
from google.protobuf import empty_pb2

from ...proto import sequencer_v2_pb2 as pb
from ...proto import sequencer_v2_pb2_grpc as pb_grpc
from ...runtime import Services
from ...sequencer.auth import NIL, AuthError, ensure_write
from ...sequencer.commitments import MAX_SEQUENCE, CommitmentError, CommitmentIntegrityError
from ...sequencer.ingest import BatchRejected
from ...sequencer.live import EventFilter
from ...store.records import StoredEvent, StreamKey
from ...ves.storable import utf8_size
from ..http.events import contiguous
from ..http.ingest import counted_ingest
from .calls import Call, Context, Gate, Malformed, streaming, unary
from .convert import (
    commitment_to_proto,
    datetime_timestamp,
    envelope_from_proto,
    push_response,
    sequenced_event,
    stream_of,
    uuid_field,
)
from .errors import GrpcError, Metadata, invalid, not_found, refusal
from .streams import (
    SyncSession,
    agent_filter,
    entity_text,
    filter_values,
    page_bytes,
    read_scope,
    stream_events,
    subscribe_entity,
)

SERVICE = "stateset.sequencer.v2.Sequencer"
DEFAULT_PULL = 100
MAX_PULL = 1000
MAX_ENTITY_HISTORY = 100


# --- Push and PullEvents (also SyncStream's) -------------------------------------------------


async def push(services: Services, call: Call, request: pb.PushRequest) -> pb.PushResponse:
    """Sequence one batch: the request's checks, then the ingest pipeline HTTP runs."""
    count = len(request.events)
    limit = services.sequencer.limits.max_events_per_batch
    if count == 0:
        raise invalid("events must not be empty")
    if count > limit:
        raise GrpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"batch of {count} events exceeds {limit} (MAX_EVENTS_PER_BATCH)",
        )
    stream = stream_of(request.tenant_id, request.store_id)
    call.bind(stream)
    ctx = call.ctx
    try:
        ensure_write(ctx, stream.tenant_id, stream.store_id)
    except AuthError as exc:
        raise refusal(exc) from None
    agent_id = uuid_field(request.agent_id, "agent_id")
    strict = services.sequencer.strict_format
    events = []
    for index, item in enumerate(request.events):
        env = envelope_from_proto(item, strict_format=strict)
        if StreamKey(env.tenant_id, env.store_id) != stream:
            raise invalid(f"events[{index}]: tenant_id and store_id must be the request's")
        if env.source_agent_id != agent_id:
            raise invalid(f"events[{index}]: source_agent must be the request's agent_id")
        events.append(env)
    try:
        result = await counted_ingest(services, ctx, agent_id, events)
    except (BatchRejected, AuthError) as exc:
        raise refusal(exc) from None
    call.fields["events"] = count
    call.fields["accepted"] = result.events_accepted
    return push_response(result, request.request_id)


def _bounded_text(name: str, value: str, limit: int) -> str:
    size = utf8_size(value)
    if size is None or size > limit:
        raise invalid(f"{name} must not exceed {limit} bytes of UTF-8")
    return value


async def pull_events(
    services: Services, call: Call, request: pb.PullEventsRequest
) -> pb.PullEventsResponse:
    """The window ``[from, from+limit-1]`` (``from`` 0 read as 1), then the filters: they
    narrow the page, ``next_sequence`` stays the window's."""
    stream = stream_of(request.tenant_id, request.store_id)
    call.bind(stream)
    limit = DEFAULT_PULL if request.limit == 0 else min(request.limit, MAX_PULL)
    wanted = EventFilter.of(
        entity_types=[_bounded_text("entity_type_filter", request.entity_type_filter, 128)],
        entity_id=_bounded_text("entity_id_filter", request.entity_id_filter, 512),
        event_types=filter_values("event_type_filter", list(request.event_type_filter)),
        agents=agent_filter(list(request.agent_filter)),
    )
    read_scope(call, stream)
    store = services.store
    start = max(request.from_sequence, 1)
    end = min(start + limit - 1, MAX_SEQUENCE)
    # The head first: an append between the two reads adds events past it, never a hole.
    head = await store.head(stream)
    events: list[StoredEvent] = []
    truncated = False
    if start <= MAX_SEQUENCE:
        page = await store.read_page(stream, start, end, page_bytes(services))
        events, truncated = page.events, page.truncated
    if not contiguous(events, start, end, head, truncated):
        raise GrpcError(
            grpc.StatusCode.OUT_OF_RANGE,
            f"the stream has a gap in sequence numbers {start}..{min(end, head)}; "
            "run sequencer-cli verify-events",
        )
    if events:
        head = max(head, events[-1].sequence_number)
        if truncated:
            end = events[-1].sequence_number
    has_more = head > end
    return pb.PullEventsResponse(
        events=[sequenced_event(e) for e in events if wanted.matches(e)],
        next_sequence=end + 1 if has_more else head + 1,
        has_more=has_more,
        head_sequence=head,
    )


# --- the service ----------------------------------------------------------------------------


class SequencerV2(pb_grpc.SequencerServicer):
    service_name: ClassVar[str] = SERVICE
    initial_metadata: ClassVar[Metadata] = ()

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.services = gate.services

    @unary
    async def Push(self, request: pb.PushRequest, call: Call) -> pb.PushResponse:
        return await push(self.services, call, request)

    @unary
    async def PullEvents(self, request: pb.PullEventsRequest, call: Call) -> pb.PullEventsResponse:
        return await pull_events(self.services, call, request)

    @unary
    async def GetSyncState(self, request: pb.GetSyncStateRequest, call: Call) -> pb.SyncState:
        """The head, the latest commitment and its state root, and (added) the calling
        agent's acknowledged sequence and lag when the credential is bound to an agent
        (both 0 otherwise: no cursor is the caller's)."""
        stream = stream_of(request.tenant_id, request.store_id)
        call.bind(stream)
        read_scope(call, stream)
        store = self.services.store
        head = await store.head(stream)
        latest = await store.last_commitment(stream)
        acknowledged = lag = 0
        if call.ctx.agent_id is not None:
            cursor = await store.get_cursor(stream, call.ctx.agent_id)
            acknowledged = 0 if cursor is None else cursor.acknowledged_sequence
            lag = max(head - acknowledged, 0)
        state = pb.SyncState(
            tenant_id=request.tenant_id,
            store_id=request.store_id,
            head_sequence=head,
            state_root=b"" if latest is None else bytes(latest.new_state_root),
            timestamp=datetime_timestamp(datetime.now(UTC)),
            acknowledged_sequence=acknowledged,
            lag=lag,
        )
        if latest is not None:
            state.latest_commitment.CopyFrom(commitment_to_proto(latest))
        return state

    @unary
    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, call: Call
    ) -> pb.GetInclusionProofResponse:
        stream = stream_of(request.tenant_id, request.store_id)
        call.bind(stream)
        read_scope(call, stream)
        store = self.services.store
        selector = request.WhichOneof("selector")
        event: StoredEvent | None = None
        if selector == "event_id":
            event = await store.get_event(uuid_field(request.event_id, "event_id"))
            if event is not None and (
                StreamKey(event.envelope.tenant_id, event.envelope.store_id) != stream
            ):
                event = None  # another stream's event is answered as a missing one
        elif selector == "sequence_number":
            seq = request.sequence_number
            if 1 <= seq <= MAX_SEQUENCE:
                found = await store.read_range(stream, seq, seq)
                event = found[0] if found else None
        else:
            raise invalid("a selector is required: event_id or sequence_number")
        if event is None:
            raise not_found("event not found")
        try:
            proof = await self.services.commitments.proof(stream, event.sequence_number)
        except CommitmentError as exc:
            raise refusal(exc) from None
        except CommitmentIntegrityError as exc:
            raise GrpcError(grpc.StatusCode.DATA_LOSS, str(exc)) from None
        row = proof.commitment
        if request.expected_root and bytes(row.merkle_root) != request.expected_root:
            raise GrpcError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the commitment holding sequence {event.sequence_number} (batch "
                f"{row.batch_id}) has another merkle_root than expected_root",
            )
        path = proof.proof
        return pb.GetInclusionProofResponse(
            included=True,
            proof=pb.InclusionProof(
                merkle_root=path.merkle_root,
                leaf_index=path.leaf_index,
                proof_hashes=list(path.proof_path),
                leaf_count=row.leaf_count,
                leaf_hash=path.leaf_hash,
            ),
            event=sequenced_event(event),
        )

    @unary
    async def GetCommitment(
        self, request: pb.GetCommitmentRequest, call: Call
    ) -> pb.BatchCommitment:
        """By batch id, or by a sequence of the caller's one stream (the reference's
        rule: a sequence number names no stream, so the credential's scope must)."""
        ctx = call.ctx
        if not (ctx.can_read or ctx.can_admin):
            raise GrpcError(grpc.StatusCode.PERMISSION_DENIED, "read permission required")
        store = self.services.store
        selector = request.WhichOneof("selector")
        if selector == "batch_id":
            row = await store.get_commitment(uuid_field(request.batch_id, "batch_id"))
        elif selector == "sequence_number":
            if ctx.tenant_id == NIL:
                raise invalid("sequence_number lookup requires tenant-scoped auth")
            if len(ctx.store_ids) != 1:
                raise invalid("sequence_number lookup requires single-store scope")
            seq = request.sequence_number
            stream = StreamKey(ctx.tenant_id, ctx.store_ids[0])
            row = await store.commitment_covering(stream, seq) if seq <= MAX_SEQUENCE else None
        else:
            raise invalid("a selector is required: batch_id or sequence_number")
        if row is None:
            raise not_found("commitment not found")
        owner = StreamKey(row.tenant_id, row.store_id)
        call.bind(owner)
        read_scope(call, owner)
        return commitment_to_proto(row)

    @unary
    async def GetEntityHistory(
        self, request: pb.GetEntityHistoryRequest, call: Call
    ) -> pb.GetEntityHistoryResponse:
        """Versions are 1-based positions in the entity's events; at most 100 a call."""
        stream = stream_of(request.tenant_id, request.store_id)
        call.bind(stream)
        storable = entity_text(request.entity_type, request.entity_id)
        read_scope(call, stream)
        first = request.from_version or 1
        if request.to_version and first > request.to_version:
            raise invalid("from_version must be less than or equal to to_version")
        span = request.to_version - first + 1 if request.to_version else MAX_ENTITY_HISTORY
        limit = min(span, request.limit or MAX_ENTITY_HISTORY, MAX_ENTITY_HISTORY)
        if not storable:
            return pb.GetEntityHistoryResponse()
        events, total = await self.services.store.read_entity(
            stream,
            request.entity_type,
            request.entity_id,
            min(first - 1, MAX_SEQUENCE),
            limit,
            page_bytes(self.services),
        )
        return pb.GetEntityHistoryResponse(
            events=[sequenced_event(e) for e in events], current_version=total
        )

    @unary
    async def GetHealth(self, request: empty_pb2.Empty, call: Call) -> pb.HealthResponse:
        return pb.HealthResponse(
            healthy=True,
            version=self.services.version,
            timestamp=datetime_timestamp(datetime.now(UTC)),
        )

    @streaming
    async def StreamEvents(  # type: ignore[override]
        self, request: pb.StreamEventsRequest, context: Context, call: Call
    ) -> None:
        await stream_events(self.services, request, context, call)

    @streaming
    async def SubscribeEntity(  # type: ignore[override]
        self, request: pb.SubscribeEntityRequest, context: Context, call: Call
    ) -> None:
        await subscribe_entity(self.services, request, context, call)

    @streaming
    async def SyncStream(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[pb.SyncMessage | Malformed],
        context: Context,
        call: Call,
    ) -> None:
        services = self.services
        session = SyncSession(
            services,
            context,
            call,
            push=lambda session_call, request: push(services, session_call, request),
            pull=lambda session_call, request: pull_events(services, session_call, request),
        )
        await session.run(request_iterator)

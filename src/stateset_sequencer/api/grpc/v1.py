"""``stateset.sequencer.v1.Sequencer``, deprecated: the reference's legacy service, kept
for its older clients. It reads the VES store, as the legacy HTTP reads do
(``api/http/events.py``): this service has one event path. Every answer carries the
initial metadata ``x-sequencer-v1-deprecated: true``, and the log warns once a minute per
method that a client still calls it.

``Push`` is UNIMPLEMENTED: a version 1 event carries no agent key id and no VES
signature, so it cannot be verified, and this service sequences nothing unsigned (nor
does it serve the legacy HTTP ingest). Signed events go to
``stateset.sequencer.v2.Sequencer/Push``.

``Pull`` is a server stream of chunks of ``batch_size`` events (1-1000) from
``from_sequence`` up to the head read when the call began, then ends; as in the
reference, its filters and ``wait_for_new`` are not applied.
"""

# The methods carry the proto's names: grpc calls them by those.
# ruff: noqa: N802

from __future__ import annotations

from typing import ClassVar

import grpc

from ...proto import sequencer_pb2 as v1
from ...proto import sequencer_pb2_grpc as v1_grpc
from ...sequencer.commitments import MAX_SEQUENCE, CommitmentError, CommitmentIntegrityError
from ...store.records import StreamKey
from ..http.events import contiguous
from .calls import Call, Context, Gate, streaming, unary
from .convert import stream_of, uuid_field, v1_commitment, v1_sequenced_event
from .errors import GrpcError, Metadata, invalid, not_found, refusal
from .streams import Writer, entity_text, page_bytes, read_scope

SERVICE = "stateset.sequencer.v1.Sequencer"
SUCCESSOR = "stateset.sequencer.v2.Sequencer"
DEPRECATED_METADATA = "x-sequencer-v1-deprecated"
MAX_BATCH = 1000
MAX_ENTITY_HISTORY = 100
PUSH_UNIMPLEMENTED = (
    "stateset.sequencer.v1 cannot sequence events: a version 1 event carries no agent key "
    "id and no VES signature; push signed VES events with stateset.sequencer.v2.Sequencer/Push"
)


class SequencerV1(v1_grpc.SequencerServicer):
    service_name: ClassVar[str] = SERVICE
    initial_metadata: ClassVar[Metadata] = ((DEPRECATED_METADATA, "true"),)

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.services = gate.services

    @unary
    async def Push(self, request: v1.PushRequest, call: Call) -> v1.PushResponse:
        self.gate.deprecated(call, f"{SUCCESSOR}/Push")
        raise GrpcError(grpc.StatusCode.UNIMPLEMENTED, PUSH_UNIMPLEMENTED)

    @streaming
    async def Pull(  # type: ignore[override]
        self, request: v1.PullRequest, context: Context, call: Call
    ) -> None:
        self.gate.deprecated(call, f"{SUCCESSOR}/PullEvents")
        stream = stream_of(request.tenant_id, request.store_id)
        call.bind(stream)
        read_scope(call, stream)
        batch = min(max(request.batch_size, 1), MAX_BATCH)
        store = self.services.store
        head = await store.head(stream)
        start = max(request.from_sequence, 1)
        writer = Writer(self.services, context, call)
        while True:
            events = []
            if start <= head:
                end = min(start + batch - 1, head)
                page = await store.read_page(stream, start, end, page_bytes(self.services))
                events = page.events
                if not contiguous(events, start, end, head, page.truncated):
                    raise GrpcError(
                        grpc.StatusCode.OUT_OF_RANGE,
                        f"the stream has a gap in sequence numbers {start}..{end}; run "
                        "sequencer-cli verify-events",
                    )
            next_sequence = events[-1].sequence_number + 1 if events else start
            call.resume_from = start
            await writer.send(
                v1.PullResponse(
                    events=[v1_sequenced_event(e) for e in events],
                    next_sequence=next_sequence,
                    has_more=next_sequence <= head,
                    head_sequence=head,
                )
            )
            if next_sequence > head:
                return
            start = next_sequence

    @unary
    async def GetHead(self, request: v1.GetHeadRequest, call: Call) -> v1.GetHeadResponse:
        self.gate.deprecated(call, f"{SUCCESSOR}/GetSyncState")
        stream = stream_of(request.tenant_id, request.store_id)
        call.bind(stream)
        read_scope(call, stream)
        store = self.services.store
        answer = v1.GetHeadResponse(head_sequence=await store.head(stream))
        latest = await store.last_commitment(stream)
        if latest is not None:
            answer.latest_commitment.CopyFrom(v1_commitment(latest))
        return answer

    @unary
    async def GetInclusionProof(
        self, request: v1.GetInclusionProofRequest, call: Call
    ) -> v1.GetInclusionProofResponse:
        self.gate.deprecated(call, f"{SUCCESSOR}/GetInclusionProof")
        batch_id = uuid_field(request.batch_id, "batch_id")
        event_id = uuid_field(request.event_id, "event_id")
        store = self.services.store
        row = await store.get_commitment(batch_id)
        if row is None:
            raise not_found("commitment not found")
        stream = StreamKey(row.tenant_id, row.store_id)
        call.bind(stream)
        read_scope(call, stream)
        event = await store.get_event(event_id)
        if event is None or StreamKey(event.envelope.tenant_id, event.envelope.store_id) != stream:
            raise not_found("event not found")
        try:
            proof = await self.services.commitments.proof(stream, event.sequence_number, batch_id)
        except CommitmentError as exc:
            raise refusal(exc) from None
        except CommitmentIntegrityError as exc:
            raise GrpcError(grpc.StatusCode.DATA_LOSS, str(exc)) from None
        path = proof.proof
        return v1.GetInclusionProofResponse(
            event=v1_sequenced_event(event),
            proof=v1.InclusionProof(
                merkle_root=path.merkle_root,
                leaf_index=path.leaf_index,
                proof_hashes=list(path.proof_path),
                leaf_count=row.leaf_count,
            ),
            commitment=v1_commitment(row),
        )

    @unary
    async def GetCommitment(
        self, request: v1.GetCommitmentRequest, call: Call
    ) -> v1.GetCommitmentResponse:
        self.gate.deprecated(call, f"{SUCCESSOR}/GetCommitment")
        row = await self.services.store.get_commitment(uuid_field(request.batch_id, "batch_id"))
        if row is None:
            raise not_found("commitment not found")
        stream = StreamKey(row.tenant_id, row.store_id)
        call.bind(stream)
        read_scope(call, stream)
        return v1.GetCommitmentResponse(commitment=v1_commitment(row))

    @unary
    async def GetEntityHistory(
        self, request: v1.GetEntityHistoryRequest, call: Call
    ) -> v1.GetEntityHistoryResponse:
        self.gate.deprecated(call, f"{SUCCESSOR}/GetEntityHistory")
        stream = stream_of(request.tenant_id, request.store_id)
        call.bind(stream)
        storable = entity_text(request.entity_type, request.entity_id)
        read_scope(call, stream)
        first = request.from_version or 1
        if request.to_version and first > request.to_version:
            raise invalid("from_version must be less than or equal to to_version")
        span = request.to_version - first + 1 if request.to_version else MAX_ENTITY_HISTORY
        if not storable:
            return v1.GetEntityHistoryResponse()
        events, total = await self.services.store.read_entity(
            stream,
            request.entity_type,
            request.entity_id,
            min(first - 1, MAX_SEQUENCE),
            min(span, MAX_ENTITY_HISTORY),
            page_bytes(self.services),
        )
        return v1.GetEntityHistoryResponse(
            events=[v1_sequenced_event(e) for e in events], current_version=total
        )

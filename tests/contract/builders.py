"""Small builders for store-level tests: signed events, what the sequencer would write for
them, and a helper that appends them the way the ingest path does."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from stateset_sequencer.store.ports import EventLog
from stateset_sequencer.store.records import NewEvent, StoredEvent, StreamKey
from stateset_sequencer.testing.kit import LegacyUnsignedReceipts
from stateset_sequencer.ves.codec import parse_rfc3339
from stateset_sequencer.ves.envelope import VesEventEnvelope, sign_event
from stateset_sequencer.ves.jsontext import stored_texts
from stateset_sequencer.ves.signing import ReceiptSigner, Signer

SIGNER = Signer(bytes(range(32)))
AGENT_ID = uuid.UUID("22222222-2222-2222-2222-222222222222")
SEQUENCER_ID = uuid.UUID("33333333-3333-3333-3333-333333333333")
RECEIPTS = ReceiptSigner(SEQUENCER_ID, bytes([7]) * 32)
# Receipts as a keyless sequencer stored them before every receipt was signed.
UNSIGNED_RECEIPTS = LegacyUnsignedReceipts(SEQUENCER_ID)
X25519_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BASE_TIME = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)


def new_stream() -> StreamKey:
    return StreamKey(uuid.uuid4(), uuid.uuid4())


def make_event(
    stream: StreamKey,
    i: int = 0,
    *,
    entity_type: str = "order",
    entity_id: str | None = None,
    event_type: str = "order.updated",
    payload: Any = None,
    created_at: str | None = None,
    encrypted: bool = False,
    **kwargs: Any,
) -> VesEventEnvelope:
    """A signed event of ``stream``; ``kwargs`` go to ``sign_event`` (event_id,
    command_id, base_version, agent_key_id)."""
    return sign_event(
        signer=SIGNER,
        tenant_id=stream.tenant_id,
        store_id=stream.store_id,
        source_agent_id=AGENT_ID,
        entity_type=entity_type,
        entity_id=entity_id if entity_id is not None else f"ORD-{i}",
        event_type=event_type,
        created_at=created_at or f"2025-06-01T00:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}Z",
        payload=payload if payload is not None else {"n": i, "total": 12.5},
        recipients=[(1, X25519_PUBLIC)] if encrypted else None,
        **kwargs,
    )


def sequenced_time(sequence_number: int) -> datetime:
    """A distinct time with a full microsecond part for each sequence number."""
    return BASE_TIME + timedelta(seconds=sequence_number, microseconds=7 * sequence_number)


def make_new_event(
    event: VesEventEnvelope,
    sequence_number: int,
    sequenced_at: datetime | None = None,
    signer: ReceiptSigner = RECEIPTS,
) -> NewEvent:
    at = sequenced_at if sequenced_at is not None else sequenced_time(sequence_number)
    signing_hash = event.signing_hash()
    receipt = signer.issue(
        tenant_id=event.tenant_id,
        store_id=event.store_id,
        event_id=event.event_id,
        sequence_number=sequence_number,
        event_signing_hash=signing_hash,
        sequenced_at=at,
    )
    return NewEvent(
        event,
        signing_hash,
        sequence_number,
        at,
        receipt,
        parse_rfc3339(event.created_at),
        stored_texts(event),
    )


def stored(new: NewEvent) -> StoredEvent:
    """What the store should give back for an event it was asked to write."""
    return StoredEvent(new.envelope, new.sequence_number, new.sequenced_at, new.event_signing_hash)


async def append(
    store: EventLog,
    stream: StreamKey,
    events: Sequence[VesEventEnvelope],
    *,
    signer: ReceiptSigner = RECEIPTS,
    sequenced_at: datetime | None = None,
) -> list[NewEvent]:
    """Write ``events`` after the stream's head in one transaction, bumping each entity's
    version once per event, as the ingest path does for accepted events."""
    async with store.stream_transaction(stream) as tx:
        first = tx.head + 1
        news = [make_new_event(e, first + k, sequenced_at, signer) for k, e in enumerate(events)]
        increments: dict[tuple[str, str], int] = {}
        for e in events:
            key = (e.entity_type, e.entity_id)
            increments[key] = increments.get(key, 0) + 1
        await tx.write(news, increments, tx.head + len(events))
    return news

"""Builders shared by the ingest, concurrency and crash tests."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from stateset_sequencer.sequencer.ingest import Sequencer
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import AgentKey, StreamKey
from stateset_sequencer.ves import envelope, signing
from stateset_sequencer.ves.envelope import VesEventEnvelope

AGENT_SEED = bytes(range(32))
AGENT = signing.Signer(AGENT_SEED)
AGENT_ID = uuid.UUID("22222222-2222-2222-2222-222222222222")
TENANT = uuid.UUID("00000000-0000-0000-0000-0000000000a1")
STORE_ID = uuid.UUID("00000000-0000-0000-0000-0000000000b1")
STREAM = StreamKey(TENANT, STORE_ID)
SEQUENCER_SEED = bytes([9]) * 32
X25519_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def event(
    i: int = 0,
    *,
    stream: StreamKey = STREAM,
    agent_id: uuid.UUID = AGENT_ID,
    signer: signing.Signer = AGENT,
    key_id: int = 1,
    entity_id: str | None = None,
    payload: Any = None,
    **kwargs: Any,
) -> VesEventEnvelope:
    return envelope.sign_event(
        signer=signer,
        tenant_id=stream.tenant_id,
        store_id=stream.store_id,
        source_agent_id=agent_id,
        agent_key_id=key_id,
        entity_type=kwargs.pop("entity_type", "order"),
        entity_id=entity_id if entity_id is not None else f"ORD-{i}",
        event_type=kwargs.pop("event_type", "order.created"),
        created_at=kwargs.pop("created_at", f"2025-06-01T00:00:{i % 60:02d}Z"),
        payload=payload if payload is not None else {"n": i, "total": 12.5},
        **kwargs,
    )


def resign(
    env: VesEventEnvelope, signer: signing.Signer = AGENT, **update: Any
) -> VesEventEnvelope:
    """A copy with some fields changed and a fresh valid signature over them."""
    changed = env.model_copy(update=update)
    return changed.model_copy(update={"agent_signature": signer.sign(changed.signing_hash())})


async def register(
    store: Store,
    *,
    tenant_id: uuid.UUID = TENANT,
    agent_id: uuid.UUID = AGENT_ID,
    key_id: int = 1,
    signer: signing.Signer = AGENT,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
) -> AgentKey:
    return await store.put_agent_key(
        AgentKey(
            tenant_id=tenant_id,
            agent_id=agent_id,
            key_id=key_id,
            public_key=signer.public_key,
            valid_from=valid_from,
            valid_to=valid_to,
        )
    )


def sequencer(store: Store, **kwargs: Any) -> Sequencer:
    signer = signing.ReceiptSigner(uuid.UUID(int=7), SEQUENCER_SEED)
    return Sequencer(store, signer, key_cache_ttl_seconds=0, **kwargs)


async def snapshot(store: Store, streams: Sequence[StreamKey] = (STREAM,)) -> Any:
    """Everything an ingest could change, for 'the store is unchanged' checks."""
    state = []
    for stream in streams:
        head = await store.head(stream)
        events = await store.read_range(stream, 1, max(head, 1) + 10)
        versions = {
            (e.envelope.entity_type, e.envelope.entity_id): await store.entity_version(
                stream, e.envelope.entity_type, e.envelope.entity_id
            )
            for e in events
        }
        # Agents' cursors too: a refused acknowledgement must leave them as they were.
        cursors = [
            c for c in await store.list_cursors(stream.tenant_id) if c.store_id == stream.store_id
        ]
        # And its commitments: a refused commitment or anchor report must write nothing.
        commitments = await store.list_commitments(stream)
        state.append(
            (
                head,
                [(e.sequence_number, e.envelope) for e in events],
                versions,
                cursors,
                commitments,
            )
        )
    return state


def past(days: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def future(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


LEGACY_SEQUENCER_ID = uuid.UUID(int=7)


class LegacyUnsignedReceipts(signing.ReceiptSigner):
    """Issues receipts as a sequencer without a key did before every receipt was signed
    (alg ``none``, no signature): to store such legacy data, or answer with it, and see
    the readers judge it. Never part of a running service."""

    def __init__(self, sequencer_id: uuid.UUID = LEGACY_SEQUENCER_ID) -> None:
        super().__init__(sequencer_id, bytes(32))

    def issue(
        self,
        *,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        event_id: uuid.UUID,
        sequence_number: int,
        event_signing_hash: bytes,
        sequenced_at: datetime | str,
    ) -> signing.Receipt:
        signed = super().issue(
            tenant_id=tenant_id,
            store_id=store_id,
            event_id=event_id,
            sequence_number=sequence_number,
            event_signing_hash=event_signing_hash,
            sequenced_at=sequenced_at,
        )
        return _unsigned(signed)

    def issue_many(
        self,
        *,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        events: Sequence[tuple[uuid.UUID, int, bytes]],
        sequenced_at: datetime,
    ) -> list[signing.Receipt]:
        signed = super().issue_many(
            tenant_id=tenant_id, store_id=store_id, events=events, sequenced_at=sequenced_at
        )
        return [_unsigned(receipt) for receipt in signed]


def _unsigned(receipt: signing.Receipt) -> signing.Receipt:
    return dataclasses.replace(
        receipt, signature_alg=signing.SIGNATURE_ALG_NONE, sequencer_signature=b""
    )


class WronglySignedReceipts(signing.ReceiptSigner):
    """Publishes one key and signs with another, as a compromised stand-in might."""

    def __init__(self) -> None:
        super().__init__(LEGACY_SEQUENCER_ID, SEQUENCER_SEED)
        self._published = signing.Signer(bytes([1]) * 32).public_key

    @property
    def public_key(self) -> bytes:
        return self._published


def ingest_answer(body: dict[str, Any], receipts: signing.ReceiptSigner) -> dict[str, Any]:
    """What a sequencer answers to an ingest request ``body`` on an empty stream, with
    receipts from ``receipts``: for fake servers that answer with unsigned or wrongly
    signed receipts, which the real one never issues."""
    events = [envelope.parse_envelope(item) for item in body["events"]]
    issued = [
        receipts.issue(
            tenant_id=env.tenant_id,
            store_id=env.store_id,
            event_id=env.event_id,
            sequence_number=n,
            event_signing_hash=env.signing_hash(),
            sequenced_at="2025-06-01T00:00:00.000+00:00",
        ).to_wire()
        for n, env in enumerate(events, start=1)
    ]
    return {
        "batchId": str(uuid.uuid4()),
        "eventsAccepted": len(issued),
        "eventsRejected": 0,
        "sequenceStart": 1 if issued else None,
        "sequenceEnd": len(issued) or None,
        "headSequence": len(issued),
        "receipts": issued,
    }


def sequencer_answer(
    receipts: signing.ReceiptSigner, *, publish_key: bool = True
) -> dict[str, Any]:
    """What ``GET /api/v1/ves/sequencer`` answers for ``receipts`` (no key when not
    ``publish_key``, as an older sequencer without one did)."""
    return {
        "sequencerId": str(receipts.sequencer_id),
        "publicKey": receipts.public_key.hex() if publish_key else None,
        "signatureAlg": (
            signing.SIGNATURE_ALG_ED25519 if publish_key else signing.SIGNATURE_ALG_NONE
        ),
    }


# A bound on a poll, not an expectation of speed: tests never assert on wall-clock time.
POLL_LIMIT_S = 20.0


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, limit_s: float = POLL_LIMIT_S
) -> None:
    """Poll ``condition`` (plain or async) until it holds; fail naming ``what`` once
    ``limit_s`` has passed without it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {limit_s}s: {what}")
        await asyncio.sleep(0.01)

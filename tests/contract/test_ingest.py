"""The ingest pipeline on both stores: order of checks, reasons, receipts, and that every
rejected event or batch leaves the store exactly as it was."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from stateset_sequencer.api.http.errors import status_for, wire_for
from stateset_sequencer.api.http.ingest import ingest_body
from stateset_sequencer.sequencer.ingest import BatchReason, BatchRejected, Limits
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.kit import AGENT_ID, STREAM
from stateset_sequencer.ves import signing
from stateset_sequencer.ves.errors import BadSignature


async def ingest(store: Store, events: list[Any], **kwargs: Any) -> Any:
    seq = kit.sequencer(store, **kwargs.pop("sequencer_kwargs", {}))
    try:
        return await seq.ingest(kwargs.pop("agent_id", AGENT_ID), events, **kwargs)
    finally:
        seq.close()


async def test_accepts_sequences_and_signs_receipts(store: Store) -> None:
    await kit.register(store)
    events = [kit.event(i) for i in range(3)]
    result = await ingest(store, events)
    assert (result.events_accepted, result.events_rejected) == (3, 0)
    assert (result.sequence_start, result.sequence_end, result.head_sequence) == (1, 3, 3)
    assert [r.sequence_number for r in result.receipts] == [1, 2, 3]
    sequencer_pk = signing.Signer(kit.SEQUENCER_SEED).public_key
    for env, receipt in zip(events, result.receipts, strict=True):
        assert receipt.event_id == env.event_id and receipt.signature_alg == "ed25519"
        signing.verify_receipt(
            receipt,
            tenant_id=STREAM.tenant_id,
            store_id=STREAM.store_id,
            event_signing_hash=env.signing_hash(),
            sequencer_public_key=sequencer_pk,
        )
    stored = await store.read_range(STREAM, 1, 3)
    assert [s.envelope for s in stored] == events
    assert await store.head(STREAM) == 3
    assert await store.get_receipt(events[1].event_id) == result.receipts[1]
    wire = ingest_body(result)
    assert set(wire) == {
        "batchId", "eventsAccepted", "eventsRejected", "sequenceStart", "sequenceEnd",
        "headSequence", "receipts",
    }  # fmt: skip
    assert wire["receipts"][0]["sequenceNumber"] == 1


async def test_exact_replay_returns_the_stored_receipt_and_consumes_nothing(store: Store) -> None:
    await kit.register(store)
    events = [kit.event(i) for i in range(2)]
    first = await ingest(store, events)
    before = await kit.snapshot(store)
    again = await ingest(store, events)
    assert again.events_accepted == 0 and again.events_rejected == 0
    assert again.receipts == first.receipts
    assert again.sequence_start is None and again.head_sequence == 2
    assert await kit.snapshot(store) == before
    mixed = await ingest(store, [events[0], kit.event(5)])
    assert mixed.events_accepted == 1 and mixed.receipts[0] == first.receipts[0]
    assert mixed.receipts[1].sequence_number == 3  # replays first, then new events


async def test_known_id_with_other_content_or_stream(store: Store) -> None:
    await kit.register(store)
    original = kit.event(1)
    await ingest(store, [original])
    before = await kit.snapshot(store)
    changed = kit.resign(original, entity_id="OTHER")
    result = await ingest(store, [changed])
    assert [(r.reason, r.message) for r in result.rejections] == [
        ("duplicate_event_id", "Event ID already exists with different contents")
    ]
    other_stream = StreamKey(kit.TENANT, uuid.UUID(int=0xB2))
    moved = kit.resign(original, store_id=other_stream.store_id)
    result = await ingest(store, [moved])
    assert [(r.reason, r.message) for r in result.rejections] == [
        ("duplicate_event_id", "Event ID already exists")
    ]
    assert await kit.snapshot(store) == before
    assert await store.head(other_stream) == 0


async def test_duplicate_id_within_a_batch(store: Store) -> None:
    await kit.register(store)
    env = kit.event(1)
    result = await ingest(store, [env, env])
    assert result.events_accepted == 1
    assert [r.reason for r in result.rejections] == ["duplicate_event_id"]
    assert "duplicated in batch" in result.rejections[0].message
    assert await store.head(STREAM) == 1


def _rejected(result: Any, reason: str) -> None:
    assert result.events_accepted == 0
    assert [r.reason for r in result.rejections] == [reason]


async def _assert_rejected_unchanged(
    store: Store, events: list[Any], reason: str, **kw: Any
) -> None:
    before = await kit.snapshot(store)
    result = await ingest(store, events, **kw)
    _rejected(result, reason)
    assert result.head_sequence == before[0][0]
    assert await kit.snapshot(store) == before


async def test_bad_payload_hash(store: Store) -> None:
    await kit.register(store)
    await ingest(store, [kit.event(0)])
    bad = kit.resign(kit.event(1), payload={"n": 999, "total": 12.5})
    await _assert_rejected_unchanged(store, [bad], "invalid_payload_hash")


async def test_bad_signature(store: Store) -> None:
    await kit.register(store)
    env = kit.event(1)
    bad = env.model_copy(update={"agent_signature": kit.event(2).agent_signature})
    await _assert_rejected_unchanged(store, [bad], "invalid_signature")
    stranger = signing.Signer(bytes([3]) * 32)
    await _assert_rejected_unchanged(store, [kit.event(3, signer=stranger)], "invalid_signature")


async def test_wrong_key_id(store: Store) -> None:
    await kit.register(store)
    await _assert_rejected_unchanged(
        store, [kit.event(1, key_id=2)], "agent_key_invalid: Agent key not found"
    )


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        ({"valid_to": kit.past(1)}, "agent_key_invalid: Agent key has expired"),
        ({"valid_from": kit.future(1)}, "agent_key_invalid: Agent key is not yet valid"),
    ],
)
async def test_key_outside_its_validity_window(
    store: Store, window: dict[str, Any], reason: str
) -> None:
    await kit.register(store, **window)
    await _assert_rejected_unchanged(store, [kit.event(1)], reason)


async def test_revoked_key(store: Store) -> None:
    await kit.register(store)
    await ingest(store, [kit.event(0)])
    await store.revoke_agent_key(kit.TENANT, AGENT_ID, 1, kit.past(0))
    await _assert_rejected_unchanged(
        store, [kit.event(1)], "agent_key_invalid: Agent key has been revoked"
    )


@pytest.mark.parametrize(
    ("field", "limit"), [("entity_type", 128), ("entity_id", 512), ("event_type", 256)]
)
async def test_byte_limits_with_multibyte_characters(store: Store, field: str, limit: int) -> None:
    await kit.register(store)
    at_limit = "ü" * (limit // 2)
    # ``field`` names one of several parameters, so the mapping's values are not static.
    at: dict[str, Any] = {field: at_limit}
    ok = await ingest(store, [kit.event(1, **at)])
    assert ok.events_accepted == 1, ok.rejections
    # Over the limit fails the whole request (400), as the reference's handler does, even
    # when the batch also holds a valid event.
    over_by_one: dict[str, Any] = {field: at_limit + "x"}
    over = kit.event(2, **over_by_one)
    before = await kit.snapshot(store)
    with pytest.raises(BatchRejected) as info:
        await ingest(store, [kit.event(3), over])
    assert info.value.reason is BatchReason.INVALID_FIELD
    assert status_for(info.value.reason) == 400
    assert field in info.value.message
    assert await kit.snapshot(store) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("entity_type", "ord\x00er"),
        ("entity_id", "ORD\x00-1"),
        ("event_type", "order.\x00"),
        ("entity_id", "ORD-\ud800"),
        ("payload", {"note": "\ud800"}),
        ("agent_signature_bundle", {"note": "\udfff"}),
    ],
)
async def test_text_no_store_can_hold_fails_the_batch_on_both_stores(
    store: Store, field: str, value: Any
) -> None:
    """One storable-text rule (``ves.storable``), the same on SQLite and PostgreSQL: NUL
    and lone surrogates fail the whole request (400), as an over-long field does, where
    a lone surrogate in a payload or bundle used to crash the request (500)."""
    await kit.register(store)
    before = await kit.snapshot(store)
    bad = kit.event(2).model_copy(update={field: value})
    with pytest.raises(BatchRejected) as info:
        await ingest(store, [kit.event(1), bad])
    assert info.value.reason is BatchReason.INVALID_FIELD
    assert status_for(info.value.reason) == 400
    assert field in info.value.message and str(bad.event_id) in info.value.message
    assert await kit.snapshot(store) == before


async def test_bad_created_at(store: Store) -> None:
    await kit.register(store)
    bad = kit.resign(kit.event(1), created_at="2025-06-01 00:00:00")
    await _assert_rejected_unchanged(store, [bad], "schema_validation: created_at")


async def test_unsupported_version(store: Store) -> None:
    await kit.register(store)
    await _assert_rejected_unchanged(
        store, [kit.event(1).model_copy(update={"ves_version": 3})], "unsupported_version"
    )


async def test_encrypted_event_accepted_and_malformed_recipients_rejected(store: Store) -> None:
    await kit.register(store)
    good = kit.event(1, recipients=[(1, kit.X25519_PUBLIC), (2, kit.X25519_PUBLIC)])
    result = await ingest(store, [good])
    assert result.events_accepted == 1, result.rejections
    stored = await store.get_event(good.event_id)
    assert stored is not None and stored.envelope == good
    enc = good.payload_encrypted
    assert enc is not None
    reversed_recipients = enc.model_copy(update={"recipients": list(reversed(enc.recipients))})
    bad = kit.resign(kit.event(2, recipients=[(1, kit.X25519_PUBLIC), (2, kit.X25519_PUBLIC)]))
    bad = kit.resign(bad, payload_encrypted=reversed_recipients)
    before = await kit.snapshot(store)
    rejected = await ingest(store, [bad])
    assert rejected.events_accepted == 0
    assert rejected.rejections[0].reason.startswith("schema_validation: payload_encrypted")
    assert await kit.snapshot(store) == before


async def test_duplicate_command_in_batch_and_across_batches(store: Store) -> None:
    await kit.register(store)
    command = uuid.uuid4()
    result = await ingest(
        store, [kit.event(1, command_id=command), kit.event(2, command_id=command)]
    )
    assert result.events_accepted == 1
    assert [r.reason for r in result.rejections] == ["duplicate_command_id"]
    assert "duplicated in batch" in result.rejections[0].message
    await _assert_rejected_unchanged(
        store, [kit.event(3, command_id=command)], "duplicate_command_id"
    )
    other_stream = StreamKey(kit.TENANT, uuid.UUID(int=0xB3))
    elsewhere = await ingest(store, [kit.event(4, stream=other_stream, command_id=command)])
    assert elsewhere.events_accepted == 1  # command ids are per stream


async def test_version_conflict_and_in_batch_bumps(store: Store) -> None:
    await kit.register(store)
    chain = [
        kit.event(1, entity_id="E", base_version=0),
        kit.event(2, entity_id="E", base_version=1),
    ]
    result = await ingest(store, chain)
    assert result.events_accepted == 2, result.rejections
    assert await store.entity_version(STREAM, "order", "E") == 2
    stale = kit.event(3, entity_id="E", base_version=1)
    await _assert_rejected_unchanged(store, [stale], "version_conflict: expected 1, actual 2")
    free = await ingest(store, [kit.event(4, entity_id="E")])  # no base_version: no check
    assert free.events_accepted == 1
    assert await store.entity_version(STREAM, "order", "E") == 3


async def test_a_conflict_frees_its_command_id(store: Store) -> None:
    await kit.register(store)
    command = uuid.uuid4()
    conflicted = kit.event(1, entity_id="F", base_version=5, command_id=command)
    await _assert_rejected_unchanged(store, [conflicted], "version_conflict: expected 5, actual 0")
    retry = await ingest(store, [kit.event(2, entity_id="F", base_version=0, command_id=command)])
    assert retry.events_accepted == 1


async def test_rejections_consume_no_sequence_numbers(store: Store) -> None:
    await kit.register(store)
    good1, good2 = kit.event(1), kit.event(2)
    bad = kit.resign(kit.event(3), payload={"tampered": True})
    result = await ingest(store, [good1, bad, good2])
    assert [r.sequence_number for r in result.receipts] == [1, 2]
    assert result.events_rejected == 1 and result.head_sequence == 2


@pytest.mark.parametrize(
    ("make", "reason", "status", "detail"),
    [
        (lambda: [], BatchReason.EMPTY_BATCH, 400, "EMPTY_BATCH"),
        (
            lambda: [
                kit.event(1),
                kit.event(2, stream=StreamKey(uuid.UUID(int=0xA2), kit.STORE_ID)),
            ],
            BatchReason.MIXED_STREAM,
            400,
            "MIXED_STREAM",
        ),
        (
            lambda: [kit.event(1), kit.event(2, stream=StreamKey(kit.TENANT, uuid.UUID(int=0xB9)))],
            BatchReason.MIXED_STREAM,
            400,
            "MIXED_STREAM",
        ),
        (
            lambda: [kit.event(1, agent_id=uuid.UUID(int=5))],
            BatchReason.SOURCE_AGENT_MISMATCH,
            400,
            "AGENT_MISMATCH",
        ),
        (
            lambda: [kit.event(i) for i in range(4)],
            BatchReason.BATCH_TOO_LARGE,
            413,
            "BATCH_TOO_LARGE",
        ),
        (
            lambda: [kit.event(1, payload={"blob": "x" * 300})],
            BatchReason.PAYLOAD_TOO_LARGE,
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ],
)
async def test_whole_batch_faults_write_nothing(
    store: Store, make: Any, reason: BatchReason, status: int, detail: str
) -> None:
    await kit.register(store)
    await ingest(store, [kit.event(0)])
    before = await kit.snapshot(store)
    limits = Limits(max_events_per_batch=3, max_event_payload_bytes=256)
    with pytest.raises(BatchRejected) as info:
        await ingest(store, make(), sequencer_kwargs={"limits": limits})
    assert info.value.reason is reason
    # the HTTP answer, through the one table: status and the wire's details.reason
    assert (status_for(reason), wire_for(reason).detail) == (status, detail)
    assert await kit.snapshot(store) == before


async def test_credential_bound_to_another_agent(store: Store) -> None:
    await kit.register(store)
    with pytest.raises(BatchRejected) as info:
        await ingest(store, [kit.event(1)], bound_agent_id=uuid.UUID(int=77))
    assert info.value.reason is BatchReason.AGENT_MISMATCH
    assert status_for(info.value.reason) == 403 and info.value.message == "Agent mismatch"
    assert await store.head(STREAM) == 0


async def test_legacy_unsigned_receipts_are_read_back_and_refused_by_a_key(store: Store) -> None:
    """Older versions stored unsigned receipts when run without a key; the store still
    reads them as data, and a check under the sequencer's key refuses them."""
    from stateset_sequencer.sequencer.ingest import Sequencer

    await kit.register(store)
    seq = Sequencer(store, kit.LegacyUnsignedReceipts(uuid.UUID(int=8)))
    env = kit.event(1)
    try:
        result = await seq.ingest(AGENT_ID, [env])
    finally:
        seq.close()
    receipt = result.receipts[0]
    assert receipt.signature_alg == "none" and receipt.sequencer_signature == b""
    with pytest.raises(BadSignature):
        signing.verify_receipt(
            receipt,
            tenant_id=STREAM.tenant_id,
            store_id=STREAM.store_id,
            event_signing_hash=env.signing_hash(),
            sequencer_public_key=signing.Signer(kit.SEQUENCER_SEED).public_key,
        )
    assert (await store.get_receipt(receipt.event_id)) == receipt

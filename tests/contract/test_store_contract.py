"""The storage contract (``store/base.py``), once, against every backend.

Each test gets an empty, migrated store from the ``store`` fixture; a difference between
backends shows up as a test that fails on one parameter only.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stateset_sequencer.store import migrations
from stateset_sequencer.store.base import (
    AgentKey,
    ApiKeyRecord,
    AuditEntry,
    CommitmentRow,
    ConcurrentWriteError,
    IntegrityError,
    MigrationError,
    MigrationStatus,
    NewEvent,
    Store,
    StreamKey,
)
from stateset_sequencer.store.migrations import Migration
from stateset_sequencer.ves.codec import format_rfc3339
from stateset_sequencer.ves.envelope import VesEventEnvelope
from tests.contract.builders import (
    SIGNER,
    UNSIGNED_RECEIPTS,
    append,
    make_event,
    make_new_event,
    new_stream,
    stored,
)

T0 = datetime(2025, 6, 1, 9, 30, 0, 250001, tzinfo=UTC)


class Boom(Exception):
    pass


async def snapshot(store: Store, stream: StreamKey, entities: list[tuple[str, str]]) -> Any:
    """Everything observable about one stream, for before/after comparisons."""
    head = await store.head(stream)
    return (
        head,
        await store.read_range(stream, 1, head + 100),
        {e: await store.entity_version(stream, *e) for e in entities},
        dict(await store.list_streams()).get(stream),
    )


async def write_in_transaction(
    store: Store,
    stream: StreamKey,
    news: list[NewEvent],
    versions: dict[tuple[str, str], int],
) -> None:
    async with store.stream_transaction(stream) as tx:
        await tx.write(news, versions, tx.head + len(news))


async def write_then_fail(
    store: Store,
    stream: StreamKey,
    events: list[VesEventEnvelope],
    versions: dict[tuple[str, str], int],
) -> None:
    """Write ``events`` after the head, then fail before the transaction ends."""
    async with store.stream_transaction(stream) as tx:
        news = [make_new_event(e, tx.head + 1 + k) for k, e in enumerate(events)]
        await tx.write(news, versions, tx.head + len(news))
        raise Boom


# --- migrations and lifecycle -----------------------------------------------------------------


async def test_migrate_again_applies_nothing(store: Store) -> None:
    assert await store.migrate() == []
    expected = [
        MigrationStatus(m.version, m.name, applied=True, checksum_ok=True)
        for m in migrations.load(store.dialect)
    ]
    assert await store.migration_status() == expected


async def test_rollback_then_migrate_again(store: Store) -> None:
    versions = [m.version for m in migrations.load(store.dialect)]
    assert await store.rollback(versions[-1]) == []
    assert await store.rollback(versions[-2]) == [versions[-1]]
    assert await store.rollback(0) == list(reversed(versions[:-1]))
    assert not any(s.applied for s in await store.migration_status())
    assert await store.migrate() == versions
    stream = new_stream()
    await append(store, stream, [make_event(stream, 1)])
    assert await store.head(stream) == 1


async def test_edited_migration_is_refused(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Migration, "checksum", property(lambda self: "0" * 64))
    with pytest.raises(MigrationError):
        await store.migrate()
    assert not any(s.checksum_ok for s in await store.migration_status())


async def test_ping_returns_seconds(store: Store) -> None:
    elapsed = await store.ping()
    assert isinstance(elapsed, float) and elapsed >= 0


# --- writing a stream -------------------------------------------------------------------------


async def test_unknown_stream_and_event_are_empty(store: Store) -> None:
    stream = new_stream()
    assert await store.head(stream) == 0
    assert await store.read_range(stream, 1, 10) == []
    assert [e async for e in store.iter_range(stream, 1)] == []
    assert await store.entity_version(stream, "order", "ORD-1") == 0
    assert await store.read_entity(stream, "order", "ORD-1", 0, 10) == ([], 0)
    assert await store.get_event(uuid.uuid4()) is None
    assert await store.get_receipt(uuid.uuid4()) is None
    assert await store.existing([uuid.uuid4()]) == {}
    assert await store.list_streams() == []


async def test_commit_writes_events_receipts_commands_versions_and_head(store: Store) -> None:
    stream = new_stream()
    command = uuid.uuid4()
    events = [
        make_event(stream, 1, entity_id="A", command_id=command),
        make_event(stream, 2, entity_id="B", base_version=0),
        make_event(stream, 3, entity_id="A"),
    ]
    times = [
        datetime(2025, 6, 1, 12, 0, 0, 0, tzinfo=UTC),
        datetime(2025, 6, 1, 12, 0, 0, 123000, tzinfo=UTC),
        datetime(2025, 6, 1, 12, 0, 0, 654321, tzinfo=UTC),
    ]
    news = [make_new_event(e, i + 1, times[i]) for i, e in enumerate(events)]
    async with store.stream_transaction(stream) as tx:
        assert tx.head == 0
        await tx.write(news, {("order", "A"): 2, ("order", "B"): 1}, 3)

    assert await store.head(stream) == 3
    assert await store.read_range(stream, 1, 3) == [stored(n) for n in news]
    for new in news:
        got = await store.get_event(new.envelope.event_id)
        assert got == stored(new)
        assert got is not None and got.envelope == new.envelope
        assert got.sequenced_at == new.sequenced_at and got.sequenced_at.utcoffset() == timedelta()
        receipt = await store.get_receipt(new.envelope.event_id)
        assert receipt == new.receipt
        assert receipt is not None and receipt.sequenced_at == format_rfc3339(new.sequenced_at)
    assert await store.entity_version(stream, "order", "A") == 2
    assert await store.entity_version(stream, "order", "B") == 1
    assert await store.list_streams() == [(stream, 3)]
    async with store.stream_transaction(stream) as tx:
        assert tx.head == 3
        assert await tx.taken_commands([command, uuid.uuid4()]) == {command: events[0].event_id}
        assert await tx.entity_versions([("order", "A"), ("order", "B")]) == {
            ("order", "A"): 2,
            ("order", "B"): 1,
        }


async def test_entity_versions_are_set_to_the_given_values(store: Store) -> None:
    stream = new_stream()
    await append(store, stream, [make_event(stream, i, entity_id="A") for i in range(3)])
    async with store.stream_transaction(stream) as tx:
        assert await tx.entity_versions([("order", "A")]) == {("order", "A"): 3}
        new = make_new_event(make_event(stream, 9, entity_id="A"), tx.head + 1)
        await tx.write([new], {("order", "A"): 7}, tx.head + 1)
    assert await store.entity_version(stream, "order", "A") == 7
    assert await store.head(stream) == 4


async def test_exception_in_transaction_rolls_everything_back(store: Store) -> None:
    stream = new_stream()
    entities = [("order", "A"), ("order", "B")]
    first = await append(store, stream, [make_event(stream, 1, entity_id="A")])
    before = await snapshot(store, stream, entities)
    command = uuid.uuid4()
    late = make_event(stream, 2, entity_id="B", command_id=command)

    with pytest.raises(Boom):
        await write_then_fail(store, stream, [late], {("order", "A"): 5, ("order", "B"): 1})

    assert await snapshot(store, stream, entities) == before
    assert await store.get_event(late.event_id) is None
    assert await store.get_receipt(late.event_id) is None
    assert await store.existing([late.event_id]) == {}
    async with store.stream_transaction(stream) as tx:
        assert tx.head == 1
        assert await tx.taken_commands([command]) == {}
    assert await store.read_range(stream, 1, 10) == [stored(first[0])]


async def test_rolled_back_new_stream_leaves_no_trace(store: Store) -> None:
    stream = new_stream()
    with pytest.raises(Boom):
        await write_then_fail(store, stream, [make_event(stream, 1)], {("order", "ORD-1"): 1})
    assert await store.head(stream) == 0
    assert await store.list_streams() == []


async def test_event_id_stored_in_another_stream_is_a_concurrent_write(store: Store) -> None:
    one, two = new_stream(), new_stream()
    taken = make_event(one, 1, entity_id="A")
    await append(store, one, [taken])
    entities = [("order", "A"), ("order", "B"), ("order", "C")]
    before = (await snapshot(store, one, entities), await snapshot(store, two, entities))
    command = uuid.uuid4()
    fresh = make_event(two, 2, entity_id="B", command_id=command)
    clash = make_event(two, 3, entity_id="C", event_id=taken.event_id)

    news = [make_new_event(fresh, 1), make_new_event(clash, 2)]
    with pytest.raises(ConcurrentWriteError):
        await write_in_transaction(store, two, news, {("order", "B"): 1, ("order", "C"): 1})

    assert (await snapshot(store, one, entities), await snapshot(store, two, entities)) == before
    assert await store.get_event(fresh.event_id) is None
    got = await store.get_event(taken.event_id)
    assert got is not None and got.envelope == taken
    async with store.stream_transaction(two) as tx:
        assert await tx.taken_commands([command]) == {}


async def test_transactions_on_one_stream_take_turns(store: Store) -> None:
    stream = new_stream()

    async def writer(w: int) -> None:
        for batch in range(4):
            base = 100 * w + 10 * batch
            await append(store, stream, [make_event(stream, base + k) for k in range(3)])

    await asyncio.gather(*(writer(w) for w in range(5)))
    assert await store.head(stream) == 60
    events = await store.read_range(stream, 1, 60)
    assert [e.sequence_number for e in events] == list(range(1, 61))
    assert len({e.envelope.event_id for e in events}) == 60


# --- lookups inside and outside a transaction -------------------------------------------------


async def test_existing_finds_events_of_any_stream_with_receipts(store: Store) -> None:
    one, two, three = new_stream(), new_stream(), new_stream()
    in_one = await append(store, one, [make_event(one, i) for i in range(3)])
    in_two = await append(
        store, two, [make_event(two, i) for i in range(2)], signer=UNSIGNED_RECEIPTS
    )
    wanted = {n.envelope.event_id: n for n in in_one + in_two}
    # Enough unknown ids to need more than one query on any backend that chunks them.
    asked = [*wanted, *(uuid.uuid4() for _ in range(1200))]

    found = await store.existing(asked)
    async with store.stream_transaction(three) as tx:
        found_in_tx = await tx.existing(asked)

    for result in (found, found_in_tx):
        assert set(result) == set(wanted)
        for event_id, hit in result.items():
            assert hit.event == stored(wanted[event_id])
            assert hit.receipt == wanted[event_id].receipt
    unsigned = found[in_two[0].envelope.event_id].receipt
    assert unsigned is not None
    assert unsigned.signature_alg == "none" and unsigned.sequencer_signature == b""
    signed = found[in_one[0].envelope.event_id].receipt
    assert signed is not None
    assert signed.signature_alg == "ed25519" and len(signed.sequencer_signature) == 64


async def test_taken_commands_are_per_stream(store: Store) -> None:
    one, two = new_stream(), new_stream()
    command = uuid.uuid4()
    first = make_event(one, 1, command_id=command)
    await append(store, one, [first, make_event(one, 2)])
    async with store.stream_transaction(one) as tx:
        assert await tx.taken_commands([command]) == {command: first.event_id}
    async with store.stream_transaction(two) as tx:
        assert await tx.taken_commands([command]) == {}
    # The same command id is free to be reserved again in another stream.
    second = make_event(two, 1, command_id=command)
    await append(store, two, [second])
    async with store.stream_transaction(two) as tx:
        assert await tx.taken_commands([command]) == {command: second.event_id}
    async with store.stream_transaction(one) as tx:
        assert await tx.taken_commands([command]) == {command: first.event_id}


async def test_entity_versions_leave_out_unknown_entities(store: Store) -> None:
    one, two = new_stream(), new_stream()
    await append(store, one, [make_event(one, 1, entity_id="A"), make_event(one, 2, entity_id="x")])
    async with store.stream_transaction(one) as tx:
        assert await tx.entity_versions([("order", "A"), ("order", "nope"), ("refund", "A")]) == {
            ("order", "A"): 1
        }
        assert await tx.entity_versions([]) == {}
    async with store.stream_transaction(two) as tx:
        assert await tx.entity_versions([("order", "A")]) == {}
    assert await store.entity_version(two, "order", "A") == 0


# --- reading a stream -------------------------------------------------------------------------


async def test_read_range_is_inclusive_and_ordered(store: Store) -> None:
    stream, other = new_stream(), new_stream()
    news = []
    for chunk in ([1, 2, 3], [4, 5], [6, 7, 8, 9, 10]):
        news += await append(store, stream, [make_event(stream, i) for i in chunk])
    await append(store, other, [make_event(other, i) for i in range(4)])
    expected = [stored(n) for n in news]

    assert await store.read_range(stream, 3, 7) == expected[2:7]
    assert await store.read_range(stream, 1, 10) == expected
    assert await store.read_range(stream, 10, 10) == expected[9:]
    assert await store.read_range(stream, 0, 1000) == expected
    assert await store.read_range(stream, 8, 3) == []
    assert await store.read_range(stream, 11, 20) == []


async def test_iter_range_pages_across_batches(store: Store) -> None:
    stream = new_stream()
    news = []
    for start in range(0, 25, 10):
        news += await append(
            store, stream, [make_event(stream, i) for i in range(start, min(start + 10, 25))]
        )
    expected = [stored(n) for n in news]
    assert len(expected) == 25

    assert [e async for e in store.iter_range(stream, 1, 25, batch_size=7)] == expected
    assert [e async for e in store.iter_range(stream, 1, None, batch_size=7)] == expected
    assert [e async for e in store.iter_range(stream, 1, batch_size=5)] == expected
    assert [e async for e in store.iter_range(stream, 4, batch_size=7)] == expected[3:]
    assert [e async for e in store.iter_range(stream, 3, 10, batch_size=1)] == expected[2:10]
    assert [e async for e in store.iter_range(stream, 1, 100, batch_size=1000)] == expected
    assert [e async for e in store.iter_range(stream, 26)] == []


async def test_read_entity_pages_with_total(store: Store) -> None:
    stream, other = new_stream(), new_stream()
    events = [make_event(stream, i, entity_id="A" if i % 3 else "B") for i in range(12)]
    news = await append(store, stream, events[:5])
    news += await append(store, stream, events[5:])
    await append(store, other, [make_event(other, i, entity_id="A") for i in range(3)])
    of_a = [stored(n) for n in news if n.envelope.entity_id == "A"]
    assert len(of_a) == 8

    assert await store.read_entity(stream, "order", "A", 0, 3) == (of_a[:3], 8)
    assert await store.read_entity(stream, "order", "A", 3, 3) == (of_a[3:6], 8)
    assert await store.read_entity(stream, "order", "A", 6, 3) == (of_a[6:], 8)
    assert await store.read_entity(stream, "order", "A", 8, 3) == ([], 8)
    assert await store.read_entity(stream, "order", "A", 0, 100) == (of_a, 8)
    assert (await store.read_entity(stream, "order", "B", 0, 100))[1] == 4
    assert await store.read_entity(stream, "refund", "A", 0, 10) == ([], 0)
    assert await store.entity_version(stream, "order", "A") == 8
    assert await store.entity_version(other, "order", "A") == 3


async def test_list_streams_with_heads(store: Store) -> None:
    one, two = new_stream(), new_stream()
    await append(store, one, [make_event(one, i) for i in range(3)])
    await append(store, two, [make_event(two, i) for i in range(2)])
    await append(store, one, [make_event(one, 9)])
    streams = await store.list_streams()
    assert len(streams) == 2
    assert dict(streams) == {one: 4, two: 2}


# --- exact round trips ------------------------------------------------------------------------


async def test_encrypted_event_round_trips(store: Store) -> None:
    stream = new_stream()
    secret = make_event(stream, 1, encrypted=True, payload={"card": "4111", "n": 2**64 + 1})
    assert secret.payload_kind == 1 and secret.payload is None
    assert secret.payload_encrypted is not None
    (new,) = await append(store, stream, [secret])
    got = await store.get_event(secret.event_id)
    assert got == stored(new)
    assert got is not None and got.envelope.payload_encrypted == secret.payload_encrypted
    assert got.envelope.to_wire() == secret.to_wire()


@pytest.mark.parametrize(
    "payload",
    [
        {"big": 2**64 + 1, "negative": -(2**63) - 1, "u64": 2**64 - 1},
        {"text": "zero \u0000 byte", "unicode": "Grüße, 日本語, ✓, 🎉", "": "empty key"},
        {"nested": [[1, [2, [3, []]]], {"k": [None, True, False, 12.5, -0.25]}], "e": {}},
        [1, "two", {"three": 2**70 + 1}, [], [[]]],
        "just a string",
        0,
        False,
    ],
    ids=["big-integers", "unicode-and-nul", "nested", "array", "string", "zero", "false"],
)
async def test_payload_round_trips_exactly(store: Store, payload: Any) -> None:
    stream = new_stream()
    event = make_event(stream, 1, payload=payload)
    await append(store, stream, [event])
    got = await store.get_event(event.event_id)
    assert got is not None
    assert got.envelope.payload == payload
    # The JSON text also tells 1 from 1.0 and True, which == does not.
    assert json.dumps(got.envelope.payload) == json.dumps(payload)
    assert got.envelope == event


async def test_envelope_fields_round_trip(store: Store) -> None:
    stream = new_stream()
    event = make_event(
        stream,
        1,
        entity_type="заказ",
        entity_id="Ωmega ✓ 1",
        event_type="order.créé",
        created_at="2025-06-01T14:00:00.5+02:00",
        command_id=uuid.uuid4(),
        base_version=2**64 - 1,
        agent_key_id=2**32 - 1,
    )
    (new,) = await append(store, stream, [event])
    got = await store.get_event(event.event_id)
    assert got == stored(new)
    assert got is not None and got.envelope.created_at == "2025-06-01T14:00:00.5+02:00"
    assert got.envelope.base_version == 2**64 - 1
    assert got.envelope.signing_hash() == new.event_signing_hash
    assert (await store.read_entity(stream, "заказ", "Ωmega ✓ 1", 0, 5))[1] == 1


# --- agent signing keys -----------------------------------------------------------------------


def agent_key(tenant: uuid.UUID, agent: uuid.UUID, key_id: int, **fields: Any) -> AgentKey:
    fields.setdefault("public_key", SIGNER.public_key)
    return AgentKey(tenant, agent, key_id, **fields)


async def test_agent_keys_put_get_list(store: Store) -> None:
    tenant, other_tenant = uuid.uuid4(), uuid.uuid4()
    alice, bob = uuid.UUID(int=1), uuid.UUID(int=2)
    put = await store.put_agent_key(agent_key(tenant, alice, 1))
    assert put.created_at is not None and put.status == "active"
    assert await store.get_agent_key(tenant, alice, 1) == put
    windowed = await store.put_agent_key(
        agent_key(
            tenant,
            alice,
            2,
            valid_from=T0,
            valid_to=T0 + timedelta(days=30, microseconds=1),
            created_at=T0 - timedelta(hours=1),
            key_algorithm=1,
        )
    )
    assert await store.get_agent_key(tenant, alice, 2) == windowed
    same_instant = await store.put_agent_key(agent_key(tenant, bob, 1, valid_from=T0, valid_to=T0))
    await store.put_agent_key(agent_key(other_tenant, alice, 1))

    assert await store.get_agent_key(tenant, alice, 3) is None
    assert await store.get_agent_key(tenant, bob, 2) is None
    assert await store.list_agent_keys(tenant, alice) == [put, windowed]
    everyone = await store.list_agent_keys(tenant)
    assert sorted(everyone, key=lambda k: (k.agent_id, k.key_id)) == [put, windowed, same_instant]
    assert await store.list_agent_keys(uuid.uuid4()) == []


async def test_duplicate_agent_key_is_refused(store: Store) -> None:
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    first = await store.put_agent_key(agent_key(tenant, agent, 7))
    with pytest.raises(IntegrityError):
        await store.put_agent_key(agent_key(tenant, agent, 7, public_key=bytes(32)))
    assert await store.get_agent_key(tenant, agent, 7) == first
    assert await store.list_agent_keys(tenant) == [first]


async def test_agent_key_window_must_not_be_inverted(store: Store) -> None:
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(IntegrityError):
        await store.put_agent_key(
            agent_key(tenant, agent, 1, valid_from=T0, valid_to=T0 - timedelta(microseconds=1))
        )
    assert await store.get_agent_key(tenant, agent, 1) is None
    assert await store.list_agent_keys(tenant) == []


async def test_revoking_an_agent_key_keeps_the_first_time(store: Store) -> None:
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    put = await store.put_agent_key(agent_key(tenant, agent, 1))
    untouched = await store.put_agent_key(agent_key(tenant, agent, 2))

    revoked = await store.revoke_agent_key(tenant, agent, 1, T0)
    assert revoked == replace(put, status="revoked", revoked_at=T0)
    again = await store.revoke_agent_key(tenant, agent, 1, T0 + timedelta(days=1))
    assert again == revoked
    assert await store.get_agent_key(tenant, agent, 1) == revoked
    assert await store.get_agent_key(tenant, agent, 2) == untouched
    assert await store.revoke_agent_key(tenant, agent, 3, T0) is None
    assert await store.revoke_agent_key(uuid.uuid4(), agent, 1, T0) is None


# --- commitments ------------------------------------------------------------------------------


def commitment(stream: StreamKey, start: int, end: int, **fields: Any) -> CommitmentRow:
    count = end - start + 1
    padded = 1 << (count - 1).bit_length()
    return CommitmentRow(
        batch_id=fields.pop("batch_id", uuid.uuid4()),
        tenant_id=stream.tenant_id,
        store_id=stream.store_id,
        ves_version=1,
        tree_depth=padded.bit_length() - 1,
        leaf_count=count,
        padded_leaf_count=padded,
        merkle_root=bytes([start % 256]) * 32,
        prev_state_root=bytes([1]) * 32,
        new_state_root=bytes([2]) * 32,
        sequence_start=start,
        sequence_end=end,
        committed_at=T0 + timedelta(seconds=start),
        **fields,
    )


async def test_commitments_put_get_list(store: Store) -> None:
    stream, other = new_stream(), new_stream()
    late = commitment(stream, 21, 30)
    first = commitment(stream, 1, 10)
    anchored = commitment(
        stream,
        11,
        20,
        chain_id=11155111,
        chain_tx_hash=bytes(range(32)),
        chain_block_number=2**40,
        anchored_at=T0 + timedelta(hours=1, microseconds=3),
    )
    for row in (late, first, anchored):
        await store.put_commitment(row)
    await store.put_commitment(commitment(other, 1, 5))

    assert await store.get_commitment(anchored.batch_id) == anchored
    assert await store.get_commitment(first.batch_id) == first
    assert await store.get_commitment(uuid.uuid4()) is None
    assert await store.list_commitments(stream) == [first, anchored, late]
    assert len(await store.list_commitments(other)) == 1
    assert await store.list_commitments(new_stream()) == []


async def test_duplicate_commitments_are_refused(store: Store) -> None:
    stream = new_stream()
    row = commitment(stream, 1, 4)
    await store.put_commitment(row)
    with pytest.raises(IntegrityError):
        await store.put_commitment(commitment(stream, 5, 8, batch_id=row.batch_id))
    with pytest.raises(IntegrityError):
        await store.put_commitment(commitment(stream, 1, 2))
    assert await store.list_commitments(stream) == [row]


# --- API keys and audit -----------------------------------------------------------------------


async def test_api_keys_put_replace_get_list(store: Store) -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    reader = await store.put_api_key(ApiKeyRecord("ab" + "0" * 62, tenant))
    assert reader.created_at is not None
    assert await store.get_api_key(reader.key_hash) == reader
    writer = await store.put_api_key(
        ApiKeyRecord(
            "ab" + "1" * 62,
            tenant,
            store_ids=(uuid.UUID(int=5), uuid.UUID(int=6)),
            can_write=True,
            agent_id=uuid.UUID(int=9),
            rate_limit=50,
            created_at=T0,
        )
    )
    admin = await store.put_api_key(
        ApiKeyRecord("cd" + "2" * 62, other, can_read=False, can_admin=True, created_at=T0)
    )
    assert await store.get_api_key(writer.key_hash) == writer
    assert await store.get_api_key(admin.key_hash) == admin
    assert await store.get_api_key("ff" * 32) is None

    of_tenant = await store.list_api_keys(tenant)
    assert sorted(of_tenant, key=lambda r: r.key_hash) == [reader, writer]
    assert await store.list_api_keys(other) == [admin]
    assert len(await store.list_api_keys()) == 3
    assert await store.list_api_keys(uuid.uuid4()) == []

    promoted = await store.put_api_key(replace(reader, can_write=True, created_at=T0))
    assert await store.get_api_key(reader.key_hash) == promoted
    assert len(await store.list_api_keys()) == 3


async def test_api_keys_deactivate_by_literal_prefix(store: Store) -> None:
    tenant = uuid.uuid4()
    keys = [
        await store.put_api_key(ApiKeyRecord(h, tenant, created_at=T0))
        for h in ("ab" + "0" * 62, "ab" + "1" * 62, "ac" + "0" * 62)
    ]
    assert await store.deactivate_api_keys("a_") == 0
    assert await store.deactivate_api_keys("a%") == 0
    assert await store.deactivate_api_keys("ab") == 2
    got = [await store.get_api_key(k.key_hash) for k in keys]
    assert [g.active if g else None for g in got] == [False, False, True]
    assert await store.deactivate_api_keys("ffff") == 0


async def test_audit_newest_first_with_action_filter(store: Store) -> None:
    tenant = uuid.uuid4()
    entries = [
        AuditEntry(
            action=action,
            actor=f"key:{n}",
            actor_type="api_key",
            success=n != 1,
            tenant_id=tenant if n else None,
            resource_type="agent_key",
            resource_id=str(n),
            request_id=f"req-{n}",
            ip_address="10.0.0.1",
            user_agent="pytest",
            details={"n": n, "nested": {"list": [1, "two", None]}, "ü": "✓"},
            error_message="denied" if n == 1 else None,
            timestamp=T0 + timedelta(seconds=n, microseconds=n),
        )
        for n, action in enumerate(["key.register", "key.revoke", "key.register"])
    ]
    for entry in entries:
        await store.append_audit(entry)

    assert await store.list_audit() == entries[::-1]
    assert await store.list_audit(limit=2) == entries[:0:-1]
    assert await store.list_audit(action="key.register") == [entries[2], entries[0]]
    assert await store.list_audit(action="nothing") == []

    await store.append_audit(AuditEntry(action="ping", actor="cli", actor_type="admin"))
    newest = (await store.list_audit(limit=1))[0]
    assert newest.action == "ping" and newest.timestamp is not None
    assert newest.timestamp > T0 + timedelta(seconds=2)
    assert newest.details == {} and newest.success is True


async def test_meta_keeps_the_first_value(store: Store) -> None:
    assert await store.get_or_set_meta("sequencer_id", "first") == "first"
    assert await store.get_or_set_meta("sequencer_id", "second") == "first"
    assert await store.get_or_set_meta("other", "x") == "x"


async def test_empty_api_key_prefix_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        await store.deactivate_api_keys("")

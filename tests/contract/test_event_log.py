"""The :class:`EventLog` contract (with its :class:`StreamTransaction`), once, against
every backend: appending, lookups inside and outside a transaction, reading, and exact
round trips of what was signed.

Each test gets an empty, migrated store from the ``event_log`` fixture; a difference
between backends shows up as a test that fails on one parameter only.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stateset_sequencer.store.errors import ConcurrentWriteError
from stateset_sequencer.store.ports import EventLog
from stateset_sequencer.store.records import Existing, NewEvent, StreamKey
from stateset_sequencer.ves.codec import format_rfc3339
from stateset_sequencer.ves.envelope import VesEventEnvelope
from tests.contract.builders import (
    UNSIGNED_RECEIPTS,
    append,
    make_event,
    make_new_event,
    new_stream,
    stored,
)


class Boom(Exception):
    pass


async def snapshot(event_log: EventLog, stream: StreamKey, entities: list[tuple[str, str]]) -> Any:
    """Everything observable about one stream, for before/after comparisons."""
    head = await event_log.head(stream)
    return (
        head,
        await event_log.read_range(stream, 1, head + 100),
        {e: await event_log.entity_version(stream, *e) for e in entities},
        dict(await event_log.list_streams()).get(stream),
    )


async def write_in_transaction(
    event_log: EventLog,
    stream: StreamKey,
    news: list[NewEvent],
    versions: dict[tuple[str, str], int],
) -> None:
    async with event_log.stream_transaction(stream) as tx:
        await tx.write(news, versions, tx.head + len(news))


async def write_then_fail(
    event_log: EventLog,
    stream: StreamKey,
    events: list[VesEventEnvelope],
    versions: dict[tuple[str, str], int],
) -> None:
    """Write ``events`` after the head, then fail before the transaction ends."""
    async with event_log.stream_transaction(stream) as tx:
        news = [make_new_event(e, tx.head + 1 + k) for k, e in enumerate(events)]
        await tx.write(news, versions, tx.head + len(news))
        raise Boom


# --- writing a stream -------------------------------------------------------------------------


async def test_unknown_stream_and_event_are_empty(event_log: EventLog) -> None:
    stream = new_stream()
    assert await event_log.head(stream) == 0
    assert await event_log.read_range(stream, 1, 10) == []
    assert [e async for e in event_log.iter_range(stream, 1)] == []
    assert await event_log.entity_version(stream, "order", "ORD-1") == 0
    assert await event_log.read_entity(stream, "order", "ORD-1", 0, 10) == ([], 0)
    assert await event_log.get_event(uuid.uuid4()) is None
    assert await event_log.get_receipt(uuid.uuid4()) is None
    assert await event_log.existing([uuid.uuid4()]) == {}
    assert await event_log.list_streams() == []


async def test_commit_writes_events_receipts_commands_versions_and_head(
    event_log: EventLog,
) -> None:
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
    async with event_log.stream_transaction(stream) as tx:
        assert tx.head == 0
        await tx.write(news, {("order", "A"): 2, ("order", "B"): 1}, 3)

    assert await event_log.head(stream) == 3
    assert await event_log.read_range(stream, 1, 3) == [stored(n) for n in news]
    for new in news:
        got = await event_log.get_event(new.envelope.event_id)
        assert got == stored(new)
        assert got is not None and got.envelope == new.envelope
        assert got.sequenced_at == new.sequenced_at and got.sequenced_at.utcoffset() == timedelta()
        receipt = await event_log.get_receipt(new.envelope.event_id)
        assert receipt == new.receipt
        assert receipt is not None and receipt.sequenced_at == format_rfc3339(new.sequenced_at)
    assert await event_log.entity_version(stream, "order", "A") == 2
    assert await event_log.entity_version(stream, "order", "B") == 1
    assert await event_log.list_streams() == [(stream, 3)]
    async with event_log.stream_transaction(stream) as tx:
        assert tx.head == 3
        assert await tx.taken_commands([command, uuid.uuid4()]) == {command: events[0].event_id}
        assert await tx.entity_versions([("order", "A"), ("order", "B")]) == {
            ("order", "A"): 2,
            ("order", "B"): 1,
        }


async def test_entity_versions_rise_by_the_given_increments(event_log: EventLog) -> None:
    stream = new_stream()
    await append(event_log, stream, [make_event(stream, i, entity_id="A") for i in range(3)])
    async with event_log.stream_transaction(stream) as tx:
        assert await tx.entity_versions([("order", "A")]) == {("order", "A"): 3}
        new = make_new_event(make_event(stream, 9, entity_id="A"), tx.head + 1)
        await tx.write([new], {("order", "A"): 4, ("order", "B"): 2}, tx.head + 1)
    assert await event_log.entity_version(stream, "order", "A") == 7
    assert await event_log.entity_version(stream, "order", "B") == 2
    assert await event_log.head(stream) == 4


async def test_exception_in_transaction_rolls_everything_back(event_log: EventLog) -> None:
    stream = new_stream()
    entities = [("order", "A"), ("order", "B")]
    first = await append(event_log, stream, [make_event(stream, 1, entity_id="A")])
    before = await snapshot(event_log, stream, entities)
    command = uuid.uuid4()
    late = make_event(stream, 2, entity_id="B", command_id=command)

    with pytest.raises(Boom):
        await write_then_fail(event_log, stream, [late], {("order", "A"): 5, ("order", "B"): 1})

    assert await snapshot(event_log, stream, entities) == before
    assert await event_log.get_event(late.event_id) is None
    assert await event_log.get_receipt(late.event_id) is None
    assert await event_log.existing([late.event_id]) == {}
    async with event_log.stream_transaction(stream) as tx:
        assert tx.head == 1
        assert await tx.taken_commands([command]) == {}
    assert await event_log.read_range(stream, 1, 10) == [stored(first[0])]


async def test_rolled_back_new_stream_leaves_no_trace(event_log: EventLog) -> None:
    stream = new_stream()
    with pytest.raises(Boom):
        await write_then_fail(event_log, stream, [make_event(stream, 1)], {("order", "ORD-1"): 1})
    assert await event_log.head(stream) == 0
    assert await event_log.list_streams() == []


async def test_event_id_stored_in_another_stream_is_a_concurrent_write(event_log: EventLog) -> None:
    one, two = new_stream(), new_stream()
    taken = make_event(one, 1, entity_id="A")
    await append(event_log, one, [taken])
    entities = [("order", "A"), ("order", "B"), ("order", "C")]
    before = (await snapshot(event_log, one, entities), await snapshot(event_log, two, entities))
    command = uuid.uuid4()
    fresh = make_event(two, 2, entity_id="B", command_id=command)
    clash = make_event(two, 3, entity_id="C", event_id=taken.event_id)

    news = [make_new_event(fresh, 1), make_new_event(clash, 2)]
    with pytest.raises(ConcurrentWriteError):
        await write_in_transaction(event_log, two, news, {("order", "B"): 1, ("order", "C"): 1})

    assert (
        await snapshot(event_log, one, entities),
        await snapshot(event_log, two, entities),
    ) == before
    assert await event_log.get_event(fresh.event_id) is None
    got = await event_log.get_event(taken.event_id)
    assert got is not None and got.envelope == taken
    async with event_log.stream_transaction(two) as tx:
        assert await tx.taken_commands([command]) == {}


async def test_an_id_claimed_by_an_open_transaction_of_another_tenant_is_a_concurrent_write(
    event_log: EventLog,
) -> None:
    """Event ids are unique across tenants although every key starts with tenant_id:
    ves_event_ids' primary key makes the second writer wait for the first and then fail,
    however the two interleave (each holds only its own stream's lock)."""
    one, two = new_stream(), new_stream()
    assert one.tenant_id != two.tenant_id
    first = make_event(one, 1)
    second = make_event(two, 1, event_id=first.event_id)
    first_written = asyncio.Event()
    release_first = asyncio.Event()

    async def hold_first() -> None:
        async with event_log.stream_transaction(one) as tx:
            await tx.write([make_new_event(first, 1)], {("order", "ORD-1"): 1}, 1)
            first_written.set()
            await release_first.wait()

    async def write_second() -> None:
        await first_written.wait()
        async with event_log.stream_transaction(two) as tx:
            await tx.write([make_new_event(second, 1)], {("order", "ORD-1"): 1}, 1)

    holder = asyncio.create_task(hold_first())
    racer = asyncio.create_task(write_second())
    await first_written.wait()
    await asyncio.sleep(0.2)  # let the racer reach the write (or its stream's turn)
    assert not racer.done()
    release_first.set()
    await holder
    with pytest.raises(ConcurrentWriteError):
        await racer
    got = await event_log.get_event(first.event_id)
    assert got is not None and got.envelope == first
    assert await event_log.head(two) == 0
    assert await event_log.existing([first.event_id]) == {
        first.event_id: Existing(got, (await event_log.get_receipt(first.event_id)))
    }


async def test_transactions_on_one_stream_take_turns(event_log: EventLog) -> None:
    stream = new_stream()

    async def writer(w: int) -> None:
        for batch in range(4):
            base = 100 * w + 10 * batch
            await append(event_log, stream, [make_event(stream, base + k) for k in range(3)])

    await asyncio.gather(*(writer(w) for w in range(5)))
    assert await event_log.head(stream) == 60
    events = await event_log.read_range(stream, 1, 60)
    assert [e.sequence_number for e in events] == list(range(1, 61))
    assert len({e.envelope.event_id for e in events}) == 60


# --- lookups inside and outside a transaction -------------------------------------------------


async def test_existing_finds_events_of_any_stream_with_receipts(event_log: EventLog) -> None:
    one, two, three = new_stream(), new_stream(), new_stream()
    in_one = await append(event_log, one, [make_event(one, i) for i in range(3)])
    in_two = await append(
        event_log, two, [make_event(two, i) for i in range(2)], signer=UNSIGNED_RECEIPTS
    )
    wanted = {n.envelope.event_id: n for n in in_one + in_two}
    # Enough unknown ids to need more than one query on any backend that chunks them.
    asked = [*wanted, *(uuid.uuid4() for _ in range(1200))]

    found = await event_log.existing(asked)
    async with event_log.stream_transaction(three) as tx:
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


async def test_taken_commands_are_per_stream(event_log: EventLog) -> None:
    one, two = new_stream(), new_stream()
    command = uuid.uuid4()
    first = make_event(one, 1, command_id=command)
    await append(event_log, one, [first, make_event(one, 2)])
    async with event_log.stream_transaction(one) as tx:
        assert await tx.taken_commands([command]) == {command: first.event_id}
    async with event_log.stream_transaction(two) as tx:
        assert await tx.taken_commands([command]) == {}
    # The same command id is free to be reserved again in another stream.
    second = make_event(two, 1, command_id=command)
    await append(event_log, two, [second])
    async with event_log.stream_transaction(two) as tx:
        assert await tx.taken_commands([command]) == {command: second.event_id}
    async with event_log.stream_transaction(one) as tx:
        assert await tx.taken_commands([command]) == {command: first.event_id}


async def test_entity_versions_leave_out_unknown_entities(event_log: EventLog) -> None:
    one, two = new_stream(), new_stream()
    await append(
        event_log, one, [make_event(one, 1, entity_id="A"), make_event(one, 2, entity_id="x")]
    )
    async with event_log.stream_transaction(one) as tx:
        assert await tx.entity_versions([("order", "A"), ("order", "nope"), ("refund", "A")]) == {
            ("order", "A"): 1
        }
        assert await tx.entity_versions([]) == {}
    async with event_log.stream_transaction(two) as tx:
        assert await tx.entity_versions([("order", "A")]) == {}
    assert await event_log.entity_version(two, "order", "A") == 0


# --- reading a stream -------------------------------------------------------------------------


async def test_read_range_is_inclusive_and_ordered(event_log: EventLog) -> None:
    stream, other = new_stream(), new_stream()
    news = []
    for chunk in ([1, 2, 3], [4, 5], [6, 7, 8, 9, 10]):
        news += await append(event_log, stream, [make_event(stream, i) for i in chunk])
    await append(event_log, other, [make_event(other, i) for i in range(4)])
    expected = [stored(n) for n in news]

    assert await event_log.read_range(stream, 3, 7) == expected[2:7]
    assert await event_log.read_range(stream, 1, 10) == expected
    assert await event_log.read_range(stream, 10, 10) == expected[9:]
    assert await event_log.read_range(stream, 0, 1000) == expected
    assert await event_log.read_range(stream, 8, 3) == []
    assert await event_log.read_range(stream, 11, 20) == []


async def test_iter_range_pages_across_batches(event_log: EventLog) -> None:
    stream = new_stream()
    news = []
    for start in range(0, 25, 10):
        news += await append(
            event_log, stream, [make_event(stream, i) for i in range(start, min(start + 10, 25))]
        )
    expected = [stored(n) for n in news]
    assert len(expected) == 25

    assert [e async for e in event_log.iter_range(stream, 1, 25, batch_size=7)] == expected
    assert [e async for e in event_log.iter_range(stream, 1, None, batch_size=7)] == expected
    assert [e async for e in event_log.iter_range(stream, 1, batch_size=5)] == expected
    assert [e async for e in event_log.iter_range(stream, 4, batch_size=7)] == expected[3:]
    assert [e async for e in event_log.iter_range(stream, 3, 10, batch_size=1)] == expected[2:10]
    assert [e async for e in event_log.iter_range(stream, 1, 100, batch_size=1000)] == expected
    assert [e async for e in event_log.iter_range(stream, 26)] == []


async def test_read_entity_pages_with_total(event_log: EventLog) -> None:
    stream, other = new_stream(), new_stream()
    events = [make_event(stream, i, entity_id="A" if i % 3 else "B") for i in range(12)]
    news = await append(event_log, stream, events[:5])
    news += await append(event_log, stream, events[5:])
    await append(event_log, other, [make_event(other, i, entity_id="A") for i in range(3)])
    of_a = [stored(n) for n in news if n.envelope.entity_id == "A"]
    assert len(of_a) == 8

    assert await event_log.read_entity(stream, "order", "A", 0, 3) == (of_a[:3], 8)
    assert await event_log.read_entity(stream, "order", "A", 3, 3) == (of_a[3:6], 8)
    assert await event_log.read_entity(stream, "order", "A", 6, 3) == (of_a[6:], 8)
    assert await event_log.read_entity(stream, "order", "A", 8, 3) == ([], 8)
    assert await event_log.read_entity(stream, "order", "A", 0, 100) == (of_a, 8)
    assert (await event_log.read_entity(stream, "order", "B", 0, 100))[1] == 4
    assert await event_log.read_entity(stream, "refund", "A", 0, 10) == ([], 0)
    assert await event_log.entity_version(stream, "order", "A") == 8
    assert await event_log.entity_version(other, "order", "A") == 3


async def test_list_streams_with_heads(event_log: EventLog) -> None:
    one, two = new_stream(), new_stream()
    await append(event_log, one, [make_event(one, i) for i in range(3)])
    await append(event_log, two, [make_event(two, i) for i in range(2)])
    await append(event_log, one, [make_event(one, 9)])
    streams = await event_log.list_streams()
    assert len(streams) == 2
    assert dict(streams) == {one: 4, two: 2}


# --- exact round trips ------------------------------------------------------------------------


async def test_encrypted_event_round_trips(event_log: EventLog) -> None:
    stream = new_stream()
    secret = make_event(stream, 1, encrypted=True, payload={"card": "4111", "n": 2**64 + 1})
    assert secret.payload_kind == 1 and secret.payload is None
    assert secret.payload_encrypted is not None
    (new,) = await append(event_log, stream, [secret])
    got = await event_log.get_event(secret.event_id)
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
async def test_payload_round_trips_exactly(event_log: EventLog, payload: Any) -> None:
    stream = new_stream()
    event = make_event(stream, 1, payload=payload)
    await append(event_log, stream, [event])
    got = await event_log.get_event(event.event_id)
    assert got is not None
    assert got.envelope.payload == payload
    # The JSON text also tells 1 from 1.0 and True, which == does not.
    assert json.dumps(got.envelope.payload) == json.dumps(payload)
    assert got.envelope == event


# The largest base_version each version carries: v1 leaves it unsigned and keeps the wire's
# u64, v2 signs it and bounds it as the reference SDK does.
@pytest.mark.parametrize(("ves_version", "base"), [(1, 2**64 - 1), (2, 2**53 - 1)])
async def test_envelope_fields_round_trip(event_log: EventLog, ves_version: int, base: int) -> None:
    stream = new_stream()
    event = make_event(
        stream,
        1,
        entity_type="заказ",
        entity_id="Ωmega ✓ 1",
        event_type="order.créé",
        created_at="2025-06-01T14:00:00.5+02:00",
        command_id=uuid.uuid4(),
        base_version=base,
        agent_key_id=2**32 - 1,
        ves_version=ves_version,
    )
    (new,) = await append(event_log, stream, [event])
    got = await event_log.get_event(event.event_id)
    assert got == stored(new)
    assert got is not None and got.envelope.created_at == "2025-06-01T14:00:00.5+02:00"
    assert got.envelope.base_version == base and got.envelope.ves_version == ves_version
    assert got.envelope.signing_hash() == new.event_signing_hash
    assert (await event_log.read_entity(stream, "заказ", "Ωmega ✓ 1", 0, 5))[1] == 1


# --- one transaction over several streams ----------------------------------------------------


async def test_one_transaction_writes_several_streams_or_none(event_log: EventLog) -> None:
    old, new = new_stream(), new_stream()
    await append(event_log, old, [make_event(old, 1)])
    a, b = make_event(old, 2, entity_id="X"), make_event(new, 3, entity_id="X")

    async def write_both_then_fail() -> None:
        async with event_log.append_transaction([new, old]) as tx:
            assert {s: t.head for s, t in tx.streams.items()} == {old: 1, new: 0}
            await tx.streams[old].write([make_new_event(a, 2)], {("order", "X"): 1}, 2)
            await tx.streams[new].write([make_new_event(b, 1)], {("order", "X"): 1}, 1)
            raise Boom

    with pytest.raises(Boom):
        await write_both_then_fail()
    assert (await event_log.head(old), await event_log.head(new)) == (1, 0)
    assert await event_log.get_event(a.event_id) is None
    async with event_log.append_transaction([old, new]) as tx:
        await tx.streams[old].write([make_new_event(a, 2)], {("order", "X"): 1}, 2)
        await tx.streams[new].write([make_new_event(b, 1)], {("order", "X"): 1}, 1)
        assert set(await tx.existing([a.event_id, b.event_id])) == {a.event_id, b.event_id}
    assert (await event_log.head(old), await event_log.head(new)) == (2, 1)
    assert await event_log.entity_version(old, "order", "X") == 1
    assert await event_log.entity_version(new, "order", "X") == 1


async def test_transactions_over_the_same_streams_in_any_order_never_deadlock(
    event_log: EventLog,
) -> None:
    """Counter rows are locked in one order whatever order the caller names them in, so
    writers of overlapping stream sets take turns instead of waiting on each other."""
    streams = [new_stream() for _ in range(3)]

    async def write(order: list[StreamKey], n: int) -> None:
        async with event_log.append_transaction(order) as tx:
            for stream in order:
                part = tx.streams[stream]
                event = make_event(stream, n, entity_id=f"E{n}")
                await part.write([make_new_event(event, part.head + 1)], {}, part.head + 1)
                await asyncio.sleep(0)  # let the other writers reach their locks

    orders = [streams, streams[::-1], [streams[1], streams[2], streams[0]]] * 3
    await asyncio.wait_for(
        asyncio.gather(*(write(order, n) for n, order in enumerate(orders))), timeout=30
    )
    for stream in streams:
        assert await event_log.head(stream) == len(orders)
        assert [e.sequence_number for e in await event_log.read_range(stream, 1, 99)] == list(
            range(1, len(orders) + 1)
        )


async def test_an_append_transaction_names_at_least_one_stream_each_once(
    event_log: EventLog,
) -> None:
    stream = new_stream()
    with pytest.raises(ValueError, match="at least one"):
        async with event_log.append_transaction([]):
            pass
    with pytest.raises(ValueError, match="once"):
        async with event_log.append_transaction([stream, stream]):
            pass

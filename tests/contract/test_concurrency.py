"""Many concurrent writers: sequence numbers stay contiguous from 1, nothing is lost or
doubled, and concurrent exact replays all get the same receipt. Runs on both stores."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from stateset_sequencer.sequencer.ingest import Sequencer
from stateset_sequencer.sequencer.outcomes import IngestResult
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.ves.envelope import VesEventEnvelope

WRITERS = 16
# batches per writer for each batch size: enough contention without a slow suite
ROUNDS = {1: 12, 10: 4, 100: 2, 1000: 1}


def _streams(count: int) -> list[StreamKey]:
    return [StreamKey(kit.TENANT, uuid.UUID(int=0x5000 + i)) for i in range(count)]


def _plan(streams: list[StreamKey], batch: int) -> list[list[list[VesEventEnvelope]]]:
    """For each writer, its batches; a writer sticks to one stream, spreading writers over
    the streams so that with one stream all 16 contend for the same counter row."""
    plan = []
    for w in range(WRITERS):
        stream = streams[w % len(streams)]
        plan.append(
            [
                [kit.event(w * 100_000 + r * 1000 + i, stream=stream) for i in range(batch)]
                for r in range(ROUNDS[batch])
            ]
        )
    return plan


async def _writer(seq: Sequencer, batches: list[list[VesEventEnvelope]]) -> list[IngestResult]:
    return [await seq.ingest(kit.AGENT_ID, batch) for batch in batches]


@pytest.mark.parametrize("stream_count", [1, 64])
@pytest.mark.parametrize("batch", [1, 10, 100, 1000])
async def test_concurrent_writers_stay_gap_free(
    store: Store, stream_count: int, batch: int
) -> None:
    await kit.register(store)
    streams = _streams(stream_count)
    plan = _plan(streams, batch)
    seq = kit.sequencer(store)
    try:
        results = await asyncio.gather(*(_writer(seq, batches) for batches in plan))
    finally:
        seq.close()
    sent = {e.event_id for batches in plan for b in batches for e in b}
    receipts = [r for writer in results for res in writer for r in res.receipts]
    assert all(res.events_rejected == 0 for writer in results for res in writer)
    assert {r.event_id for r in receipts} == sent
    assert len(receipts) == len(sent)
    for stream in streams:
        head = await store.head(stream)
        stored = [e async for e in store.iter_range(stream, 1)]
        numbers = [e.sequence_number for e in stored]
        assert numbers == list(range(1, head + 1))
        stream_sent = {
            e.event_id
            for batches in plan
            for b in batches
            for e in b
            if e.store_id == stream.store_id
        }
        assert head == len(stream_sent)
        assert {e.envelope.event_id for e in stored} == stream_sent
    by_event = {r.event_id: r.sequence_number for r in receipts}
    for stream in streams[:3]:
        for stored_event in await store.read_range(stream, 1, 50):
            assert by_event[stored_event.envelope.event_id] == stored_event.sequence_number


async def test_concurrent_exact_replays_get_one_receipt(store: Store) -> None:
    await kit.register(store)
    env = kit.event(1)
    seq = kit.sequencer(store)
    try:
        results = await asyncio.gather(*(seq.ingest(kit.AGENT_ID, [env]) for _ in range(24)))
    finally:
        seq.close()
    receipts = {r.receipts[0] for r in results}
    assert len(receipts) == 1
    assert sum(r.events_accepted for r in results) == 1
    assert await store.head(kit.STREAM) == 1


async def test_two_sequencers_on_one_database_share_the_counter(store: Store) -> None:
    """Two service instances (as two processes would) writing one stream."""
    await kit.register(store)
    first, second = kit.sequencer(store), kit.sequencer(store)
    batches = [[kit.event(b * 10 + i) for i in range(10)] for b in range(20)]
    try:
        results = await asyncio.gather(
            *((first if i % 2 else second).ingest(kit.AGENT_ID, b) for i, b in enumerate(batches))
        )
    finally:
        first.close()
        second.close()
    numbers = sorted(r.sequence_number for res in results for r in res.receipts)
    assert numbers == list(range(1, 201))
    assert await store.head(kit.STREAM) == 200


async def test_two_tenants_racing_for_the_same_event_ids_get_one_winner_each(
    store: Store,
) -> None:
    """Each id is accepted for exactly one tenant; the other is told it exists, with no
    sequence number spent and nothing written on its side."""
    other = StreamKey(uuid.UUID(int=0xA2), kit.STORE_ID)
    await kit.register(store)
    await kit.register(store, tenant_id=other.tenant_id)
    first, second = kit.sequencer(store), kit.sequencer(store)
    ids: set[uuid.UUID] = set()
    try:
        for round_ in range(8):
            mine = [kit.event(round_ * 100 + i) for i in range(10)]
            theirs = [kit.resign(e, tenant_id=other.tenant_id) for e in mine]
            ids |= {e.event_id for e in mine}
            a, b = await asyncio.gather(
                first.ingest(kit.AGENT_ID, mine), second.ingest(kit.AGENT_ID, theirs)
            )
            assert a.events_accepted + b.events_accepted == len(mine)
            for result in (a, b):
                assert {r.reason for r in result.rejections} <= {"duplicate_event_id"}
    finally:
        first.close()
        second.close()
    heads = await store.head(kit.STREAM), await store.head(other)
    assert sum(heads) == len(ids)
    owners = {}
    for stream, head in zip((kit.STREAM, other), heads, strict=True):
        events = await store.read_range(stream, 1, head)
        assert [e.sequence_number for e in events] == list(range(1, head + 1))
        owners.update({e.envelope.event_id: stream for e in events})
    assert set(owners) == ids
    for event_id, stream in owners.items():
        got = await store.get_event(event_id)
        assert got is not None and got.envelope.tenant_id == stream.tenant_id

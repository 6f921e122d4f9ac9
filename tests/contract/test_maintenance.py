"""The :class:`Maintenance` contract (counters beside the events, gaps, repairs, and the
summaries, row counts and emptiness a backup relies on), once, against every backend.

Gaps and a counter that lags the events are written through the stream transaction,
which takes the sequence numbers and the head it is given: the damage a bad restore or a
hand edit leaves behind, without raw SQL.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from stateset_sequencer.store.errors import ConcurrentWriteError
from stateset_sequencer.store.ports import Maintenance, Store
from stateset_sequencer.store.records import (
    AgentKey,
    ApiKeyRecord,
    AuditEntry,
    CommitmentRow,
    CounterState,
    SequenceGap,
    StreamKey,
)
from stateset_sequencer.ves.codec import u64
from tests.contract.builders import SIGNER, append, make_event, make_new_event

T0 = datetime(2025, 6, 1, 9, 30, 0, 250001, tzinfo=UTC)
# Fixed keys, so that the order by tenant then store is known.
ONE = StreamKey(uuid.UUID(int=0xA1), uuid.UUID(int=0xB1))
TWO = StreamKey(uuid.UUID(int=0xA1), uuid.UUID(int=0xB2))
THREE = StreamKey(uuid.UUID(int=0xA2), uuid.UUID(int=0xB1))


async def write_numbers(store: Store, stream: StreamKey, numbers: list[int], head: int) -> None:
    """Events with exactly these sequence numbers, and the counter set to ``head``."""
    events = [make_event(stream, n) for n in numbers]
    news = [make_new_event(e, n) for e, n in zip(events, numbers, strict=True)]
    async with store.stream_transaction(stream) as tx:
        await tx.write(news, {}, head)


def repair_audit() -> AuditEntry:
    return AuditEntry(action="counter.repair", actor="cli", actor_type="admin", timestamp=T0)


def commitment(stream: StreamKey, start: int, end: int, root: int) -> CommitmentRow:
    return CommitmentRow(
        batch_id=uuid.uuid4(),
        tenant_id=stream.tenant_id,
        store_id=stream.store_id,
        ves_version=1,
        tree_depth=1,
        leaf_count=end - start + 1,
        padded_leaf_count=2,
        merkle_root=bytes([root]) * 32,
        prev_state_root=bytes([root - 1]) * 32,
        new_state_root=bytes([root + 100]) * 32,
        sequence_start=start,
        sequence_end=end,
        committed_at=T0,
    )


async def test_counter_states_and_gaps_of_a_healthy_log(
    maintenance: Maintenance, store: Store
) -> None:
    assert await maintenance.counter_states() == []
    assert await maintenance.sequence_gaps() == []
    await append(store, TWO, [make_event(TWO, i) for i in range(3)])
    await append(store, ONE, [make_event(ONE, i) for i in range(2)])
    assert await maintenance.counter_states() == [
        CounterState(ONE, 2, 2, 2),
        CounterState(TWO, 3, 3, 3),
    ]
    assert await maintenance.counter_states(TWO) == [CounterState(TWO, 3, 3, 3)]
    assert await maintenance.counter_states(THREE) == []
    assert await maintenance.sequence_gaps() == []


async def test_gaps_and_a_lagging_counter_are_reported(
    maintenance: Maintenance, store: Store
) -> None:
    await write_numbers(store, ONE, [2, 3, 6, 9], head=7)
    await append(store, TWO, [make_event(TWO, 1)])
    assert await maintenance.counter_states() == [
        CounterState(ONE, 7, 9, 4),
        CounterState(TWO, 1, 1, 1),
    ]
    gaps = [SequenceGap(ONE, 1, 1), SequenceGap(ONE, 4, 5), SequenceGap(ONE, 7, 8)]
    assert await maintenance.sequence_gaps() == gaps
    assert await maintenance.sequence_gaps(ONE) == gaps
    assert await maintenance.sequence_gaps(TWO) == []


async def test_set_counter_to_max_repairs_and_audits(
    maintenance: Maintenance, store: Store
) -> None:
    await write_numbers(store, ONE, [1, 2, 3, 4], head=2)
    [before] = await maintenance.counter_states(ONE)
    assert before == CounterState(ONE, 2, 4, 4)
    audit = repair_audit()
    after = await maintenance.set_counter_to_max(ONE, before, audit)
    assert after == CounterState(ONE, 4, 4, 4)
    assert await store.head(ONE) == 4
    [stored] = await store.list_audit(action="counter.repair")
    assert stored.chain_seq == 1  # chained, in the repair's transaction
    assert replace(stored, chain_seq=None, previous_hash=None, entry_hash=None) == audit


async def test_set_counter_to_max_refuses_a_changed_stream(
    maintenance: Maintenance, store: Store
) -> None:
    await write_numbers(store, ONE, [1, 2, 3], head=1)
    [seen] = await maintenance.counter_states(ONE)
    await write_numbers(store, ONE, [4], head=1)  # the stream moves after the inspection
    with pytest.raises(ConcurrentWriteError):
        await maintenance.set_counter_to_max(ONE, seen, repair_audit())
    assert await maintenance.counter_states(ONE) == [CounterState(ONE, 1, 4, 4)]
    assert await store.list_audit(action="counter.repair") == []


async def test_set_counter_to_max_creates_a_missing_counter_row(
    maintenance: Maintenance,
) -> None:
    fresh = CounterState(THREE, None, 0, 0)
    assert await maintenance.set_counter_to_max(THREE, fresh, repair_audit()) == CounterState(
        THREE, 0, 0, 0
    )


async def test_stream_summaries_digest_the_commitments(
    maintenance: Maintenance, store: Store
) -> None:
    assert await maintenance.stream_summaries() == []
    await append(store, TWO, [make_event(TWO, i) for i in range(4)])
    await append(store, ONE, [make_event(ONE, 1)])
    rows = [commitment(TWO, 1, 2, 7), commitment(TWO, 3, 4, 8)]
    for row in reversed(rows):  # stored out of order, digested in sequence order
        await store.put_commitment(row)
    await store.put_commitment(commitment(THREE, 1, 2, 9))  # commitments without events

    one, two, three = await maintenance.stream_summaries()
    assert (one.stream, one.counter, one.max_sequence, one.event_count) == (ONE, 1, 1, 1)
    assert (one.commitment_count, one.last_committed_sequence, one.last_state_root) == (
        0,
        None,
        None,
    )
    assert one.commitments_sha256 == hashlib.sha256().digest()
    assert (two.stream, two.counter, two.max_sequence, two.event_count) == (TWO, 4, 4, 4)
    assert (two.commitment_count, two.last_committed_sequence) == (2, 4)
    assert two.last_state_root == rows[1].new_state_root
    expected = hashlib.sha256()
    for row in rows:
        expected.update(
            u64(row.sequence_start) + u64(row.sequence_end) + row.merkle_root + row.new_state_root
        )
    assert two.commitments_sha256 == expected.digest()
    assert (three.stream, three.counter, three.event_count, three.commitment_count) == (
        THREE,
        None,
        0,
        1,
    )


async def test_row_counts_of_existing_tables(maintenance: Maintenance, store: Store) -> None:
    await append(store, ONE, [make_event(ONE, i) for i in range(3)])
    counts = await maintenance.row_counts(["ves_events", "sequence_counters", "no_such_table"])
    assert counts == {"ves_events": 3, "sequence_counters": 1}
    assert await maintenance.row_counts([]) == {}
    for bad in ("ves_events; drop table x", "VES_EVENTS", 'a"b', ""):
        with pytest.raises(ValueError, match="not a plain table name"):
            await maintenance.row_counts([bad])


@pytest.mark.parametrize("filling", ["event", "api_key", "agent_key"])
async def test_is_empty_until_events_or_keys_are_stored(
    maintenance: Maintenance, store: Store, filling: str
) -> None:
    assert await maintenance.is_empty()
    await store.put_commitment(commitment(ONE, 1, 2, 7))  # commitments alone do not count
    await store.append_audit(repair_audit())
    assert await maintenance.is_empty()
    if filling == "event":
        await append(store, ONE, [make_event(ONE, 1)])
    elif filling == "api_key":
        await store.put_api_key(ApiKeyRecord("ab" * 32, ONE.tenant_id))
    else:
        await store.put_agent_key(AgentKey(ONE.tenant_id, uuid.uuid4(), 1, SIGNER.public_key))
    assert not await maintenance.is_empty()


async def test_empty_and_no_rows_before_any_migration(
    maintenance: Maintenance, store: Store
) -> None:
    await store.rollback(0)
    assert await maintenance.is_empty()
    assert await maintenance.row_counts(["ves_events"]) == {}

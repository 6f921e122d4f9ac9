"""The :class:`Commitments` contract (``ves_commitments`` rows), once, against every
backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stateset_sequencer.store.errors import IntegrityError
from stateset_sequencer.store.ports import Commitments, Store
from stateset_sequencer.store.records import AnchorOutcome, CommitmentRow, LeafInput, StreamKey
from tests.contract.builders import append, make_event, new_stream

T0 = datetime(2025, 6, 1, 9, 30, 0, 250001, tzinfo=UTC)


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
        committed_at=fields.pop("committed_at", T0 + timedelta(seconds=start)),
        **fields,
    )


async def test_commitments_put_get_list(commitments: Commitments) -> None:
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
        await commitments.put_commitment(row)
    await commitments.put_commitment(commitment(other, 1, 5))

    assert await commitments.get_commitment(anchored.batch_id) == anchored
    assert await commitments.get_commitment(first.batch_id) == first
    assert await commitments.get_commitment(uuid.uuid4()) is None
    assert await commitments.list_commitments(stream) == [first, anchored, late]
    assert len(await commitments.list_commitments(other)) == 1
    assert await commitments.list_commitments(new_stream()) == []


async def test_duplicate_commitments_are_refused(commitments: Commitments) -> None:
    stream = new_stream()
    row = commitment(stream, 1, 4)
    await commitments.put_commitment(row)
    with pytest.raises(IntegrityError):
        await commitments.put_commitment(commitment(stream, 5, 8, batch_id=row.batch_id))
    with pytest.raises(IntegrityError):
        await commitments.put_commitment(commitment(stream, 1, 2))
    assert await commitments.list_commitments(stream) == [row]


async def test_the_tip_a_start_and_the_one_covering_a_sequence(commitments: Commitments) -> None:
    stream = new_stream()
    assert await commitments.last_commitment(stream) is None
    rows = [commitment(stream, 1, 4), commitment(stream, 5, 5), commitment(stream, 6, 9)]
    for row in reversed(rows):
        await commitments.put_commitment(row)
    await commitments.put_commitment(commitment(new_stream(), 1, 99))
    assert await commitments.last_commitment(stream) == rows[2]
    assert await commitments.commitment_starting_at(stream, 5) == rows[1]
    assert await commitments.commitment_starting_at(stream, 2) is None
    for seq, expected in ((1, 0), (4, 0), (5, 1), (6, 2), (9, 2)):
        assert await commitments.commitment_covering(stream, seq) == rows[expected], seq
    assert await commitments.commitment_covering(stream, 10) is None
    assert await commitments.commitment_covering(stream, 0) is None


async def test_lists_filter_by_anchoring_and_pending_spans_streams(
    commitments: Commitments,
) -> None:
    stream, other = new_stream(), new_stream()
    plain = commitment(stream, 1, 2)
    done = commitment(
        stream, 3, 4, chain_id=1, chain_tx_hash=bytes(32), anchored_at=T0 + timedelta(days=1)
    )
    elsewhere = commitment(other, 1, 1, committed_at=T0 - timedelta(days=1))
    for row in (plain, done, elsewhere):
        await commitments.put_commitment(row)
    assert await commitments.list_commitments(stream, anchored=False) == [plain]
    assert await commitments.list_commitments(stream, anchored=True) == [done]
    assert await commitments.list_commitments(stream, limit=1) == [plain]
    pending = await commitments.pending_commitments(1000)
    mine = [r for r in pending if r.batch_id in {plain.batch_id, done.batch_id, elsewhere.batch_id}]
    assert mine == [elsewhere, plain]  # oldest first, anchored ones left out
    assert len(await commitments.pending_commitments(1)) == 1


async def test_pending_heads_are_each_streams_first_unanchored_commitment(
    commitments: Commitments,
) -> None:
    one, two, done = new_stream(), new_stream(), new_stream()
    sent = commitment(one, 1, 2, chain_id=1, chain_tx_hash=bytes([1]) * 32)
    first = commitment(one, 3, 4)
    later = commitment(one, 5, 6)
    other = commitment(two, 1, 9, committed_at=T0 - timedelta(hours=1))
    finished = commitment(done, 1, 1, chain_id=1, chain_tx_hash=bytes([2]) * 32)
    for row in (sent, first, later, other, finished):
        await commitments.put_commitment(row)
    ours = {one.tenant_id, two.tenant_id, done.tenant_id}
    heads = [r for r in await commitments.pending_heads(1000) if r.tenant_id in ours]
    assert heads == [other, first]  # one row per stream, oldest first, none for `done`
    assert len(await commitments.pending_heads(1)) == 1


async def test_recording_an_anchor_is_once_and_for_all(commitments: Commitments) -> None:
    stream = new_stream()
    row = commitment(stream, 1, 3)
    await commitments.put_commitment(row)
    at = T0 + timedelta(minutes=5, microseconds=11)
    tx = bytes(range(32))
    outcome, after = await commitments.record_anchor(row.batch_id, 84532, tx, 12, at)
    assert outcome is AnchorOutcome.RECORDED and after is not None
    assert (after.chain_id, after.chain_tx_hash, after.chain_block_number, after.anchored_at) == (
        84532,
        tx,
        12,
        at,
    )
    assert await commitments.get_commitment(row.batch_id) == after
    again, same = await commitments.record_anchor(row.batch_id, 84532, tx, 12, at)
    assert again is AnchorOutcome.ALREADY_RECORDED and same == after
    other, kept = await commitments.record_anchor(row.batch_id, 1, bytes(32), None, at)
    assert other is AnchorOutcome.CONFLICT and kept == after
    assert await commitments.get_commitment(row.batch_id) == after
    missing, none = await commitments.record_anchor(uuid.uuid4(), 1, tx, None, at)
    assert missing is AnchorOutcome.NOT_FOUND and none is None


async def test_a_sent_anchor_waits_for_finality_then_is_confirmed_once(
    commitments: Commitments,
) -> None:
    stream = new_stream()
    first, second = commitment(stream, 1, 3), commitment(stream, 4, 6)
    for row in (first, second):
        await commitments.put_commitment(row)
    tx1, tx2 = bytes([7]) * 32, bytes([8]) * 32
    _, sent1 = await commitments.record_anchor(first.batch_id, 31337, tx1, 40, None)
    _, sent2 = await commitments.record_anchor(second.batch_id, 31337, tx2, 39, None)
    assert sent1 is not None and sent2 is not None and sent1.anchored_at is None
    # Sent but not final: out of the pending list, in the unconfirmed one (oldest block
    # first), and counted as anchored by the stream's list.
    pending = {r.batch_id for r in await commitments.pending_commitments(1000)}
    assert first.batch_id not in pending and second.batch_id not in pending
    waiting = [
        r for r in await commitments.unconfirmed_anchors(1000) if r.tenant_id == stream.tenant_id
    ]
    assert waiting == [sent2, sent1]
    assert await commitments.list_commitments(stream, anchored=True) == [sent1, sent2]

    at = T0 + timedelta(hours=2, microseconds=9)
    assert await commitments.confirm_anchor(sent1, at) is True
    assert await commitments.confirm_anchor(sent1, at + timedelta(hours=1)) is False  # once
    final = await commitments.get_commitment(first.batch_id)
    assert final is not None and final.anchored_at == at and final.chain_tx_hash == tx1
    assert first.batch_id not in {r.batch_id for r in await commitments.unconfirmed_anchors(1000)}


async def test_clearing_an_anchor_needs_the_same_transaction(commitments: Commitments) -> None:
    stream = new_stream()
    row = commitment(stream, 1, 2)
    await commitments.put_commitment(row)
    _, sent = await commitments.record_anchor(row.batch_id, 1, bytes([5]) * 32, 10, None)
    assert sent is not None
    # A row read before another writer re-recorded it does not clear the newer anchor.
    stale = commitment(stream, 1, 2, batch_id=row.batch_id, chain_tx_hash=bytes([6]) * 32)
    assert await commitments.clear_anchor(stale) is False
    assert await commitments.clear_anchor(sent) is True
    cleared = await commitments.get_commitment(row.batch_id)
    assert cleared == row  # every chain field back to NULL: anchored again from scratch
    assert row.batch_id in {r.batch_id for r in await commitments.pending_commitments(1000)}
    assert await commitments.confirm_anchor(sent, T0) is False  # nothing to confirm now
    assert await commitments.clear_anchor(sent) is False


async def test_leaf_inputs_are_the_stored_columns_in_order(store: Store) -> None:
    stream = new_stream()
    news = await append(store, stream, [make_event(stream, i) for i in range(5)])
    inputs = await store.leaf_inputs(stream, 2, 4)
    assert inputs == [
        LeafInput(n.sequence_number, n.event_signing_hash, n.envelope.agent_signature)
        for n in news[1:4]
    ]
    assert await store.leaf_inputs(stream, 6, 9) == []
    assert await store.leaf_inputs(new_stream(), 1, 5) == []

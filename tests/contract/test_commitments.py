"""The :class:`Commitments` contract (``ves_commitments`` rows), once, against every
backend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stateset_sequencer.store.errors import IntegrityError
from stateset_sequencer.store.ports import Commitments
from stateset_sequencer.store.records import CommitmentRow, StreamKey
from tests.contract.builders import new_stream

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
        committed_at=T0 + timedelta(seconds=start),
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

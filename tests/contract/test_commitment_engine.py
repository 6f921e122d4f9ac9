"""The commitment engine (``sequencer/commitments.py``) over a real store, on both
backends: the chain it builds, racing creators, and proofs from a cold tree cache."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from stateset_sequencer.sequencer.commitments import (
    CommitmentEngine,
    CommitmentError,
    CommitmentReason,
    TreeCache,
)
from stateset_sequencer.store.ports import Store
from stateset_sequencer.ves import hashing, merkle
from tests.contract.builders import append, make_event, new_stream


async def test_a_chain_of_commitments_verifies(store: Store) -> None:
    stream = new_stream()
    await append(store, stream, [make_event(stream, i) for i in range(10)])
    engine = CommitmentEngine(store, store)
    made = [
        (await engine.create(stream, 1, 3)).row,
        (await engine.create_next(stream, 4)).row,
        (await engine.create_next(stream, 100)).row,
    ]
    assert [(r.sequence_start, r.sequence_end) for r in made] == [(1, 3), (4, 7), (8, 10)]
    assert made[0].prev_state_root == hashing.ZERO_HASH
    merkle.verify_chain(made)
    with pytest.raises(CommitmentError) as nothing:
        await engine.create_next(stream, 5)
    assert nothing.value.reason is CommitmentReason.NOTHING_TO_COMMIT
    assert await store.list_commitments(stream) == made


async def test_racing_creators_cannot_fork_the_chain(store: Store) -> None:
    stream = new_stream()
    await append(store, stream, [make_event(stream, i) for i in range(6)])
    engines = [CommitmentEngine(store, store) for _ in range(4)]
    same = await asyncio.gather(*(e.create(stream, 1, 3) for e in engines))
    assert len({c.row.batch_id for c in same}) == 1
    assert sum(c.created for c in same) == 1
    racing = await asyncio.gather(
        engines[0].create(stream, 4, 6), engines[1].create(stream, 4, 5), return_exceptions=True
    )
    winners = [r for r in racing if not isinstance(r, BaseException)]
    losers = [r for r in racing if isinstance(r, CommitmentError)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].reason is CommitmentReason.RANGE_CONFLICT
    assert [(r.sequence_start, r.sequence_end) for r in await store.list_commitments(stream)] == [
        (1, 3),
        (winners[0].row.sequence_start, winners[0].row.sequence_end),
    ]


async def test_proofs_from_a_cold_cache_match_the_warm_ones(store: Store) -> None:
    stream = new_stream()
    await append(store, stream, [make_event(stream, i) for i in range(9)])
    warm = CommitmentEngine(store, store)
    row = (await warm.create(stream, 1, 9)).row
    cold = CommitmentEngine(store, store, TreeCache(max_nodes=1))  # keeps nothing
    for seq in range(1, 10):
        a, b = await warm.proof(stream, seq), await cold.proof(stream, seq)
        assert a.proof == b.proof and a.commitment == row
        merkle.verify_inclusion(
            a.proof.leaf_hash, row.merkle_root, a.proof.proof_path, a.proof.leaf_index
        )


async def test_a_preview_is_what_committing_would_store_and_writes_nothing(store: Store) -> None:
    stream = new_stream()
    engine = CommitmentEngine(store, store)
    assert await engine.preview_next(stream, 10) is None  # no events
    await append(store, stream, [make_event(stream, i) for i in range(7)])
    preview = await engine.preview_next(stream, 4)
    assert preview is not None and preview.commitment is not None
    assert await store.list_commitments(stream) == []
    made = (await engine.create_next(stream, 4)).row
    assert (preview.commitment.merkle_root, preview.commitment.new_state_root) == (
        made.merkle_root,
        made.new_state_root,
    )
    assert (preview.commitment.sequence_start, preview.commitment.sequence_end) == (1, 4)
    rest = await engine.preview_next(stream, 100)
    assert rest is not None and rest.commitment is not None
    assert rest.commitment.prev_state_root == made.new_state_root
    assert (rest.commitment.sequence_start, rest.commitment.sequence_end) == (5, 7)
    assert await engine.recomputes(made)
    assert not await engine.recomputes(replace(made, merkle_root=bytes(32)))
    await engine.create_next(stream, 100)
    assert await engine.preview_next(stream, 100) is None  # everything committed

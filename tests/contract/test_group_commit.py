"""Group commit on both stores: batches merged into one stream transaction, and what
happens when that transaction fails. A batch the store cannot hold fails alone, every
other merged caller gets its receipts, and the stream stays gap-free; a database that is
down fails the group once, without a retry per batch."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from stateset_sequencer.sequencer.group_commit import StreamWriter
from stateset_sequencer.sequencer.ingest import utc_now
from stateset_sequencer.sequencer.outcomes import Accepted, Outcome, Rejection, Verified
from stateset_sequencer.store.errors import OperationalError, StoreError
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import signing
from stateset_sequencer.ves.codec import parse_rfc3339
from stateset_sequencer.ves.envelope import VesEventEnvelope
from stateset_sequencer.ves.jsontext import stored_texts

BATCHES = 6
POISONED = 3  # the index of the batch the store cannot hold


def _writer(store: Store) -> StreamWriter:
    return StreamWriter(store, signing.ReceiptSigner(uuid.UUID(int=7), kit.SEQUENCER_SEED), utc_now)


def _verified(events: Sequence[VesEventEnvelope]) -> list[Verified]:
    return [
        Verified(e, e.signing_hash(), parse_rfc3339(e.created_at), stored_texts(e)) for e in events
    ]


def _unstorable(env: VesEventEnvelope) -> VesEventEnvelope:
    """An event neither store can hold (a lone surrogate in a stored field), as if it had
    slipped past ingest's checks: the driver refuses it inside the transaction."""
    return env.model_copy(update={"agent_signature_bundle": {"x": "\ud800"}})


async def _append_all(
    writer: StreamWriter, batches: list[list[Verified]]
) -> list[tuple[list[Outcome], int] | BaseException]:
    """All batches queued before the stream's worker runs: one merged group."""
    return await asyncio.gather(
        *(writer.append(kit.STREAM, batch) for batch in batches), return_exceptions=True
    )


async def test_one_unstorable_batch_fails_alone_and_the_others_get_receipts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await kit.register(store)
    batches = [[kit.event(b * 10 + i) for i in range(3)] for b in range(BATCHES)]
    batches[POISONED][1] = _unstorable(batches[POISONED][1])
    writer = _writer(store)
    transactions = 0
    real = store.append_transaction

    def counted(streams: Sequence[StreamKey]) -> AbstractAsyncContextManager[Any]:
        nonlocal transactions
        transactions += 1
        return real(streams)

    monkeypatch.setattr(store, "append_transaction", counted)
    results = await _append_all(writer, [_verified(b) for b in batches])
    monkeypatch.undo()

    # The merged transaction failed, then each batch was committed alone.
    assert transactions == 1 + BATCHES
    poisoned = results[POISONED]
    assert isinstance(poisoned, StoreError) and not isinstance(poisoned, OperationalError)
    good = [b for i, b in enumerate(batches) if i != POISONED]
    sequence = []
    for index, result in enumerate(results):
        if index == POISONED:
            continue
        assert not isinstance(result, BaseException), result
        outcomes, _head = result
        assert all(isinstance(o, Accepted) for o in outcomes), outcomes
        sequence += [o.receipt.sequence_number for o in outcomes if isinstance(o, Accepted)]
    stored_count = sum(len(b) for b in good)
    # Every good event sequenced once, in queue order, with no gap and nothing else stored.
    assert sequence == list(range(1, stored_count + 1))
    assert await store.head(kit.STREAM) == stored_count
    stored = await store.read_range(kit.STREAM, 1, stored_count + 10)
    assert [s.envelope for s in stored] == [e for b in good for e in b]
    for env in batches[POISONED]:
        assert await store.get_event(env.event_id) is None


async def test_a_group_of_good_batches_commits_in_one_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await kit.register(store)
    batches = [[kit.event(b * 10 + i) for i in range(2)] for b in range(4)]
    writer = _writer(store)
    transactions = 0
    real = store.append_transaction

    def counted(streams: Sequence[StreamKey]) -> AbstractAsyncContextManager[Any]:
        nonlocal transactions
        transactions += 1
        return real(streams)

    monkeypatch.setattr(store, "append_transaction", counted)
    results = await _append_all(writer, [_verified(b) for b in batches])
    monkeypatch.undo()
    assert transactions == 1
    assert all(not isinstance(r, BaseException) for r in results)
    assert await store.head(kit.STREAM) == 8


async def test_a_database_fault_fails_the_group_once_without_a_retry_per_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await kit.register(store)
    before = await kit.snapshot(store)
    calls = 0

    def down(streams: Sequence[StreamKey]) -> AbstractAsyncContextManager[Any]:
        nonlocal calls
        calls += 1
        raise OperationalError("database unavailable: connection refused")

    monkeypatch.setattr(store, "append_transaction", down)
    batches = [_verified([kit.event(b)]) for b in range(4)]
    results = await _append_all(_writer(store), batches)
    assert calls == 1
    assert all(isinstance(r, OperationalError) for r in results), results
    monkeypatch.undo()
    assert await kit.snapshot(store) == before


# --- several streams in one transaction -----------------------------------------------------

STREAMS = [StreamKey(kit.TENANT, uuid.UUID(int=0xC000 + s)) for s in range(4)]


def _merging_writer(store: Store) -> StreamWriter:
    """A writer that merges every waiting stream into one transaction, whichever store it
    runs on (SQLite does so by default; on PostgreSQL the same path is exercised here)."""
    return StreamWriter(
        store,
        signing.ReceiptSigner(uuid.UUID(int=7), kit.SEQUENCER_SEED),
        utc_now,
        merge_streams=True,
    )


def _counting(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[list[StreamKey]]:
    opened: list[list[StreamKey]] = []
    real = store.append_transaction

    def counted(streams: Sequence[StreamKey]) -> AbstractAsyncContextManager[Any]:
        opened.append(list(streams))
        return real(streams)

    monkeypatch.setattr(store, "append_transaction", counted)
    return opened


async def test_batches_of_several_streams_commit_in_one_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await kit.register(store)
    writer = _merging_writer(store)
    batches = [
        (stream, [kit.event(100 * s + b * 10 + i, stream=stream) for i in range(2)])
        for b in range(3)
        for s, stream in enumerate(STREAMS)
    ]
    opened = _counting(store, monkeypatch)
    results = await asyncio.gather(
        *(writer.append(stream, _verified(events)) for stream, events in batches)
    )
    monkeypatch.undo()
    assert len(opened) == 1 and sorted(opened[0], key=str) == sorted(STREAMS, key=str)
    for stream in STREAMS:
        assert await store.head(stream) == 6
        # Each stream gap-free, in the order its batches were queued.
        stored = await store.read_range(stream, 1, 6)
        assert [s.envelope for s in stored] == [e for k, es in batches if k == stream for e in es]
    for _batch, (outcomes, head) in zip(batches, results, strict=True):
        assert head == 6
        for outcome in outcomes:
            assert isinstance(outcome, Accepted)
            receipt = await store.get_receipt(outcome.receipt.event_id)
            assert receipt == outcome.receipt


async def test_an_unstorable_batch_fails_alone_among_merged_streams(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await kit.register(store)
    writer = _merging_writer(store)
    batches = [
        (stream, [kit.event(100 * s + b * 10 + i, stream=stream) for i in range(2)])
        for b in range(2)
        for s, stream in enumerate(STREAMS)
    ]
    poisoned = 5  # the second batch of STREAMS[1]
    stream_at_fault = batches[poisoned][0]
    batches[poisoned][1][0] = _unstorable(batches[poisoned][1][0])
    opened = _counting(store, monkeypatch)
    results = await asyncio.gather(
        *(writer.append(stream, _verified(events)) for stream, events in batches),
        return_exceptions=True,
    )
    monkeypatch.undo()
    # Merged, then each stream alone, then the batches of the stream at fault alone.
    assert len(opened) == 1 + len(STREAMS) + 2
    for index, result in enumerate(results):
        if index == poisoned:
            assert isinstance(result, StoreError) and not isinstance(result, OperationalError)
        else:
            assert not isinstance(result, BaseException), result
    for stream in STREAMS:
        expected = [e for k, es in batches if k == stream for e in es]
        if stream == stream_at_fault:
            expected = batches[1][1]  # its first batch only
        stored = await store.read_range(stream, 1, 10)
        assert [s.envelope for s in stored] == expected
        assert await store.head(stream) == len(expected)


async def test_one_event_id_in_two_merged_streams_is_stored_once(store: Store) -> None:
    """The same id queued for two streams that share a transaction: the first placed
    wins, the other is a duplicate, and no other caller fails."""
    await kit.register(store)
    writer = _merging_writer(store)
    one, two = STREAMS[0], STREAMS[1]
    first = kit.event(1, stream=one)
    clash = kit.event(2, stream=two).model_copy(update={"event_id": first.event_id})
    other = kit.event(3, stream=two)
    results = await asyncio.gather(
        writer.append(one, _verified([first])),
        writer.append(two, _verified([clash, other])),
    )
    [accepted], _ = results[0]
    assert isinstance(accepted, Accepted)
    rejected, kept = results[1][0]
    assert isinstance(rejected, Rejection) and rejected.reason == "duplicate_event_id"
    assert isinstance(kept, Accepted) and kept.receipt.sequence_number == 1
    got = await store.get_event(first.event_id)
    assert got is not None and got.envelope == first
    assert await store.head(two) == 1

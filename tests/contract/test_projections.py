"""The Projections port on both backends: documents and checkpoints kept together,
discovery of lagging streams, clearing; and the fold driven through it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stateset_sequencer.sequencer.projections import Projector, rebuild
from stateset_sequencer.store.errors import ConcurrentWriteError
from stateset_sequencer.store.ports import Projections, Store
from stateset_sequencer.store.records import ProjectionDocument, StreamKey
from stateset_sequencer.testing import kit

T0 = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
OTHER = StreamKey(kit.TENANT, uuid.UUID(int=0xB2))
OTHER_TENANT = StreamKey(uuid.UUID(int=0xA2), kit.STORE_ID)


def doc(
    entity_id: str,
    version: int,
    document: Any,
    stream: StreamKey = kit.STREAM,
    entity_type: str = "order",
) -> ProjectionDocument:
    return ProjectionDocument(
        stream.tenant_id,
        stream.store_id,
        entity_type,
        entity_id,
        version,
        document,
        T0 + timedelta(seconds=version),
    )


async def test_a_new_stream_has_nothing(projections: Projections) -> None:
    assert await projections.projection_checkpoint(kit.STREAM) == 0
    assert await projections.get_projection(kit.STREAM, "order", "ORD-1") is None
    assert await projections.get_projections(kit.STREAM, [("order", "ORD-1")]) == {}
    assert await projections.get_projections(kit.STREAM, []) == {}
    assert await projections.lagging_projections(None, 10) == []


async def test_apply_keeps_documents_and_checkpoint_together(projections: Projections) -> None:
    now = datetime.now(UTC)
    values: Any = {"total": 2**70, "tags": ["a", "é"], "nested": {"x": None}, "nul": "a\x00b"}
    await projections.apply_projection(
        kit.STREAM, 0, 3, [doc("ORD-1", 2, values), doc("ORD/2 é", 1, [1, 2])], now
    )
    assert await projections.projection_checkpoint(kit.STREAM) == 3
    got = await projections.get_projection(kit.STREAM, "order", "ORD-1")
    assert got == doc("ORD-1", 2, values)
    both = await projections.get_projections(
        kit.STREAM, [("order", "ORD-1"), ("order", "ORD/2 é"), ("order", "none")]
    )
    assert set(both) == {("order", "ORD-1"), ("order", "ORD/2 é")}
    assert both[("order", "ORD/2 é")].document == [1, 2]
    # An upsert replaces the document whole; the other stream is untouched.
    await projections.apply_projection(kit.STREAM, 3, 4, [doc("ORD-1", 3, "text")], now)
    assert (await projections.get_projection(kit.STREAM, "order", "ORD-1")) == doc(
        "ORD-1", 3, "text"
    )
    assert await projections.get_projection(OTHER, "order", "ORD-1") is None
    assert await projections.projection_checkpoint(OTHER) == 0
    # A checkpoint may advance with no documents (nothing but encrypted events, say).
    await projections.apply_projection(kit.STREAM, 4, 9, [], now)
    assert await projections.projection_checkpoint(kit.STREAM) == 9


async def test_a_moved_checkpoint_refuses_the_whole_batch(projections: Projections) -> None:
    now = datetime.now(UTC)
    await projections.apply_projection(kit.STREAM, 0, 2, [doc("ORD-1", 1, {"a": 1})], now)
    for expected in (0, 1, 3):
        with pytest.raises(ConcurrentWriteError):
            await projections.apply_projection(
                kit.STREAM, expected, 5, [doc("ORD-1", 9, {"b": 2}), doc("ORD-9", 1, {})], now
            )
    assert await projections.projection_checkpoint(kit.STREAM) == 2
    assert (await projections.get_projection(kit.STREAM, "order", "ORD-1")) == doc(
        "ORD-1", 1, {"a": 1}
    )
    assert await projections.get_projection(kit.STREAM, "order", "ORD-9") is None


async def test_concurrent_appliers_from_one_checkpoint_apply_once(
    projections: Projections,
) -> None:
    now = datetime.now(UTC)

    async def attempt(n: int) -> bool:
        try:
            await projections.apply_projection(kit.STREAM, 0, 1, [doc("ORD-1", 1, {"by": n})], now)
        except ConcurrentWriteError:
            return False
        return True

    results = await asyncio.gather(*(attempt(n) for n in range(4)))
    assert results.count(True) == 1
    assert await projections.projection_checkpoint(kit.STREAM) == 1


async def test_bad_arguments_are_refused_before_the_store(projections: Projections) -> None:
    now = datetime.now(UTC)
    await projections.apply_projection(kit.STREAM, 0, 5, [], now)
    with pytest.raises(ValueError, match="back"):
        await projections.apply_projection(kit.STREAM, 5, 4, [], now)
    with pytest.raises(ValueError, match="another stream"):
        await projections.apply_projection(kit.STREAM, 5, 6, [doc("ORD-1", 1, {}, OTHER)], now)
    assert await projections.projection_checkpoint(kit.STREAM) == 5
    assert await projections.get_projection(OTHER, "order", "ORD-1") is None


async def ingest(store: Store, stream: StreamKey, count: int, start: int = 0) -> None:
    seq = kit.sequencer(store)
    events = [
        kit.event(
            start + i,
            stream=stream,
            entity_id=f"ORD-{(start + i) % 3}",
            payload={"n": start + i, f"k{(start + i) % 2}": True},
        )
        for i in range(count)
    ]
    result = await seq.ingest(kit.AGENT_ID, events)
    assert result.events_accepted == count, result


async def test_lagging_streams_are_found_and_walked_in_pages(store: Store) -> None:
    await kit.register(store)
    await kit.register(store, tenant_id=OTHER_TENANT.tenant_id)
    for stream in (kit.STREAM, OTHER, OTHER_TENANT):
        await ingest(store, stream, 3)
    lagging = await store.lagging_projections(None, 10)
    assert [(x.stream, x.checkpoint, x.head) for x in lagging] == sorted(
        [(s, 0, 3) for s in (kit.STREAM, OTHER, OTHER_TENANT)],
        key=lambda t: (str(t[0].tenant_id), str(t[0].store_id)),
    )
    first = await store.lagging_projections(None, 2)
    rest = await store.lagging_projections(first[-1].stream, 2)
    assert [x.stream for x in first + rest] == [x.stream for x in lagging]
    assert await store.lagging_projections(lagging[-1].stream, 2) == []
    await store.apply_projection(kit.STREAM, 0, 3, [], datetime.now(UTC))
    assert kit.STREAM not in [x.stream for x in await store.lagging_projections(None, 10)]
    await store.apply_projection(OTHER, 0, 1, [], datetime.now(UTC))
    (other,) = [x for x in await store.lagging_projections(None, 10) if x.stream == OTHER]
    assert (other.checkpoint, other.head) == (1, 3)


async def test_clear_one_stream_or_all(store: Store) -> None:
    now = datetime.now(UTC)
    await store.apply_projection(kit.STREAM, 0, 2, [doc("A", 1, {}), doc("B", 1, {})], now)
    await store.apply_projection(OTHER, 0, 1, [doc("A", 1, {}, OTHER)], now)
    assert await store.clear_projections(kit.STREAM) == 2
    assert await store.projection_checkpoint(kit.STREAM) == 0
    assert await store.get_projection(kit.STREAM, "order", "A") is None
    assert await store.get_projection(OTHER, "order", "A") is not None
    assert await store.clear_projections() == 1
    assert await store.projection_checkpoint(OTHER) == 0
    assert await store.clear_projections() == 0


async def test_the_projector_folds_the_log_in_batches(store: Store) -> None:
    await kit.register(store)
    await ingest(store, kit.STREAM, 7)
    projector = Projector(store, store, batch_size=3)
    assert await projector.step() == 3
    assert await store.projection_checkpoint(kit.STREAM) == 3
    while await projector.step():
        pass
    assert await store.projection_checkpoint(kit.STREAM) == 7
    ord0 = await store.get_projection(kit.STREAM, "order", "ORD-0")
    assert ord0 is not None
    # ORD-0 got events 0, 3 and 6: three events, the last patch wins where they overlap.
    assert ord0.version == 3 == await store.entity_version(kit.STREAM, "order", "ORD-0")
    assert ord0.document == {"n": 6, "k0": True, "k1": True}
    last = (await store.read_range(kit.STREAM, 7, 7))[0]
    assert ord0.updated_at == last.sequenced_at
    # Resuming (a new projector, as after a restart) folds only what is new.
    await ingest(store, kit.STREAM, 2, start=7)
    assert await Projector(store, store, batch_size=100).step() == 2
    ord1 = await store.get_projection(kit.STREAM, "order", "ORD-1")
    assert ord1 is not None and ord1.version == 3  # events 1, 4, 7
    before = {
        e: await store.get_projection(kit.STREAM, "order", e) for e in ("ORD-0", "ORD-1", "ORD-2")
    }
    assert await rebuild(store, store, [kit.STREAM]) == {kit.STREAM: 9}
    after = {
        e: await store.get_projection(kit.STREAM, "order", e) for e in ("ORD-0", "ORD-1", "ORD-2")
    }
    assert after == before
    assert await rebuild(store, store) == {kit.STREAM: 9}
    assert {
        e: await store.get_projection(kit.STREAM, "order", e) for e in ("ORD-0", "ORD-1", "ORD-2")
    } == before

"""The :class:`HeadFeed` contract, and the live subscriptions built on it.

A head announced through one store reaches a listener on another store of the same
database (another node); a listener starts, and on PostgreSQL comes back after its
connection is killed, with ``HeadNotice(None)``. Over it, a :class:`LiveEvents`
subscription on node B delivers what node A's sequencer commits, history then live,
with no gap and no duplicate, through a killed notification connection, and even when
no notice is ever sent (the recheck).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from stateset_sequencer.sequencer.live import EventFilter, Heartbeat, LiveEvents
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.postgres.changes import HEADS_APPLICATION_NAME, decode_head
from stateset_sequencer.store.records import HeadNotice, StoredEvent, StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.kit import until

from .conftest import Opened

RESYNC = HeadNotice(None)


@pytest.fixture
async def other_node(opened: Opened, tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(parse_database_url(opened.url, tmp_path), max_connections=2)
    try:
        yield store
    finally:
        await store.close()


async def test_an_announced_head_reaches_another_node(store: Store, other_node: Store) -> None:
    heard: list[HeadNotice] = []
    listener = await other_node.listen_heads(heard.append)
    try:
        await until(lambda: heard == [RESYNC], "the first connection's notice")
        a, b = StreamKey(uuid.uuid4(), uuid.uuid4()), StreamKey(uuid.uuid4(), uuid.uuid4())
        await store.announce_heads({a: 3, b: 9})
        await store.announce_heads({})
        await until(lambda: len(heard) == 3, "both heads")
        assert set(heard[1:]) == {HeadNotice(a, 3), HeadNotice(b, 9)}
    finally:
        await listener.close()
    assert not listener.connected


def test_a_head_payload_it_cannot_read_asks_every_listener_to_look() -> None:
    tenant, store = uuid.uuid4(), uuid.uuid4()
    assert decode_head(f"{tenant}/{store}/12") == HeadNotice(StreamKey(tenant, store), 12)
    for bad in ("", "x", f"{tenant}/{store}", f"{tenant}/{store}/-1", f"{tenant}/x/1", "a/b/c/d"):
        assert decode_head(bad) == RESYNC


async def _sequence(store: Store, first: int, count: int) -> None:
    sequencer = kit.sequencer(store)
    try:
        result = await sequencer.ingest(
            kit.AGENT_ID, [kit.event(i) for i in range(first, first + count)]
        )
        assert result.events_accepted == count
    finally:
        await sequencer.aclose()


async def _take(items: AsyncIterator[StoredEvent | Heartbeat], count: int) -> list[int]:
    got: list[int] = []
    async for item in items:
        if isinstance(item, StoredEvent):
            got.append(item.sequence_number)
            if len(got) == count:
                break
    return got


async def test_a_subscriber_on_another_node_gets_history_then_live_events(
    opened: Opened, store: Store, other_node: Store
) -> None:
    await kit.register(store)
    await _sequence(store, 0, 4)
    # A recheck far beyond the test: only notices can wake the subscriber.
    live = LiveEvents(other_node, other_node, page_events=3, recheck_s=3600)
    await live.start()
    try:
        async with await live.subscribe(kit.STREAM, after=1) as sub:
            items = aiter(sub)
            assert await _take(items, 3) == [2, 3, 4]
            await _sequence(store, 4, 5)
            assert await _take(items, 5) == [5, 6, 7, 8, 9]
            if opened.backend == "postgres":
                admin = await asyncpg.connect(opened.url)
                try:
                    killed = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = $1 AND datname = current_database()",
                        HEADS_APPLICATION_NAME,
                    )
                finally:
                    await admin.close()
                assert killed == 1
                await until(lambda: live.connected, "the head feed reconnected")
            await _sequence(store, 9, 2)
            assert await _take(items, 2) == [10, 11]
        assert live.subscribers == 0
    finally:
        await live.close()


async def test_the_recheck_finds_events_no_notice_announced(
    store: Store, other_node: Store
) -> None:
    await kit.register(store)
    live = LiveEvents(other_node, other_node, recheck_s=0.05, recheck_disconnected_s=0.05)
    # Never started: no notice reaches it, as when a writer's announcement is lost.
    async with await live.subscribe(kit.STREAM, after=None) as sub:
        items = aiter(sub)
        await _sequence(store, 0, 2)
        assert await _take(items, 2) == [1, 2]


async def test_filters_and_heartbeats_move_the_position(store: Store) -> None:
    await kit.register(store)
    sequencer = kit.sequencer(store)
    try:
        await sequencer.ingest(kit.AGENT_ID, [kit.event(0), kit.event(1, event_type="x.y")])
    finally:
        await sequencer.aclose()
    live = LiveEvents(store, store, recheck_s=0.05)
    await live.start()
    try:
        wanted = EventFilter.of(event_types=["x.y"])
        async with await live.subscribe(
            kit.STREAM, after=0, wanted=wanted, heartbeat_s=0.05
        ) as sub:
            items = aiter(sub)
            first = await anext(items)
            assert isinstance(first, StoredEvent) and first.sequence_number == 2
            beat = await anext(items)
            assert isinstance(beat, Heartbeat) and beat.position == 2
    finally:
        await live.close()

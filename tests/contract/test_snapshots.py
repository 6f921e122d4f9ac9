"""The :class:`Snapshots` contract (take, restore, test-restore a whole-database copy),
once, against every backend.

What each operation reports must equal what the :class:`Maintenance` port reads from the
database it describes; that equality is what lets ``backup`` compare a restore with its
manifest exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from stateset_sequencer.store.errors import SnapshotError
from stateset_sequencer.store.factory import open_snapshots, open_store, parse_database_url
from stateset_sequencer.store.ports import Maintenance, Snapshots, Store
from stateset_sequencer.store.records import ApiKeyRecord, SnapshotContents
from stateset_sequencer.testing import pg
from tests.contract.builders import append, make_event, new_stream
from tests.contract.conftest import Opened

TABLES = ("ves_events", "ves_sequencer_receipts", "sequence_counters", "api_keys", "nope")


async def contents(maintenance: Maintenance) -> SnapshotContents:
    summaries = await maintenance.stream_summaries()
    return SnapshotContents(tuple(summaries), await maintenance.row_counts(TABLES))


async def fill(store: Store) -> None:
    one, two = new_stream(), new_stream()
    await append(store, one, [make_event(one, i) for i in range(5)])
    await append(store, two, [make_event(two, i, encrypted=i == 1) for i in range(3)])
    await store.put_api_key(ApiKeyRecord("ab" * 32, one.tenant_id))


@asynccontextmanager
async def empty_target(opened: Opened, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database of the same backend that does not hold anything yet."""
    if opened.backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'elsewhere' / 'target.db'}"
    else:
        async with pg.scratch_database() as dsn:
            yield dsn


async def test_snapshot_describes_what_it_copied(
    snapshots: Snapshots, opened: Opened, tmp_path: Path
) -> None:
    await fill(opened.store)
    file = tmp_path / snapshots.snapshot_file
    taken = await snapshots.take_snapshot(file, TABLES)
    assert file.is_file() and taken.tool
    assert taken.contents == await contents(opened.store)
    assert taken.contents.tables["ves_events"] == 8 and "nope" not in taken.contents.tables
    assert snapshots.snapshot_format == opened.backend

    # The database moves on; the snapshot still says what it held.
    later = new_stream()
    await append(opened.store, later, [make_event(later, 1)])
    assert await snapshots.test_restore(file, TABLES) == taken.contents


async def test_restore_into_another_database(
    snapshots: Snapshots, opened: Opened, tmp_path: Path
) -> None:
    await fill(opened.store)
    file = tmp_path / snapshots.snapshot_file
    taken = await snapshots.take_snapshot(file, TABLES)
    async with empty_target(opened, tmp_path) as url:
        target = open_snapshots(parse_database_url(url, tmp_path))
        assert target.snapshot_format == snapshots.snapshot_format
        assert not await target.holds_data()  # SQLite: the file does not exist yet
        assert await target.restore_snapshot(file, TABLES) == taken.contents
        assert await target.holds_data()
        restored = await open_store(parse_database_url(url, tmp_path), create=False)
        try:
            assert await contents(restored) == taken.contents
        finally:
            await restored.close()


async def test_restore_through_the_open_store_replaces_its_contents(
    snapshots: Snapshots, opened: Opened, tmp_path: Path
) -> None:
    store = opened.store
    stream = new_stream()
    await append(store, stream, [make_event(stream, i) for i in range(3)])
    file = tmp_path / snapshots.snapshot_file
    taken = await snapshots.take_snapshot(file, TABLES)
    await append(store, stream, [make_event(stream, i) for i in range(3, 6)])
    assert await store.head(stream) == 6

    assert await snapshots.restore_snapshot(file, TABLES) == taken.contents
    # The store reads the restored database, and goes on writing to it.
    assert await store.head(stream) == 3
    await append(store, stream, [make_event(stream, 9)])
    assert [e.sequence_number for e in await store.read_range(stream, 1, 10)] == [1, 2, 3, 4]


async def test_an_unreadable_copy_is_a_snapshot_error(snapshots: Snapshots, tmp_path: Path) -> None:
    file = tmp_path / snapshots.snapshot_file
    file.write_bytes(b"not a database at all " * 100)
    with pytest.raises(SnapshotError):
        await snapshots.test_restore(file, TABLES)


async def test_holds_data_follows_is_empty(snapshots: Snapshots, opened: Opened) -> None:
    assert not await snapshots.holds_data()
    await opened.store.put_api_key(ApiKeyRecord("cd" * 32, uuid.uuid4()))
    assert await snapshots.holds_data()

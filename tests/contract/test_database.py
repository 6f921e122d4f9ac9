"""The :class:`Database` contract (migrations, health, lifecycle, settings), once,
against every backend."""

from __future__ import annotations

import pytest

from stateset_sequencer.store import migrations, placement
from stateset_sequencer.store.errors import MigrationError
from stateset_sequencer.store.migrations import Migration
from stateset_sequencer.store.ports import Database
from stateset_sequencer.store.records import MigrationStatus
from tests.contract.builders import append, make_event, new_stream
from tests.contract.conftest import Opened


async def test_migrate_again_applies_nothing(opened: Opened) -> None:
    database: Database = opened.store
    assert await database.migrate() == []
    expected = [
        MigrationStatus(m.version, m.name, applied=True, checksum_ok=True)
        for m in migrations.load(opened.backend)
    ]
    assert await database.migration_status() == expected


async def test_rollback_then_migrate_again(opened: Opened) -> None:
    store = opened.store  # migrations, then the event log on the new schema
    versions = [m.version for m in migrations.load(opened.backend)]
    assert await store.rollback(versions[-1]) == []
    assert await store.rollback(versions[-2]) == [versions[-1]]
    assert await store.rollback(0) == list(reversed(versions[:-1]))
    assert not any(s.applied for s in await store.migration_status())
    assert await store.migrate() == versions
    stream = new_stream()
    await append(store, stream, [make_event(stream, 1)])
    assert await store.head(stream) == 1


async def test_edited_migration_is_refused(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Migration, "checksum", property(lambda self: "0" * 64))
    with pytest.raises(MigrationError):
        await database.migrate()
    assert not any(s.checksum_ok for s in await database.migration_status())


async def test_ping_returns_seconds(database: Database) -> None:
    elapsed = await database.ping()
    assert isinstance(elapsed, float) and elapsed >= 0


async def test_meta_keeps_the_first_value(database: Database) -> None:
    assert await database.get_or_set_meta("sequencer_id", "first") == "first"
    assert await database.get_or_set_meta("sequencer_id", "second") == "first"
    assert await database.get_or_set_meta("other", "x") == "x"


async def test_pool_stats_are_the_adapters_own(opened: Opened) -> None:
    stats = opened.store.pool_stats()
    assert 0 <= stats.active <= stats.total <= stats.maximum
    assert stats.idle == stats.total - stats.active
    if opened.backend == "sqlite":
        # One writer and one reader thread, always open.
        assert (stats.total, stats.maximum) == (2, 2)
    else:
        assert stats.maximum == 8  # max_connections of the contract fixture


async def test_capabilities_describe_the_backend(opened: Opened) -> None:
    caps = opened.store.capabilities
    if opened.backend == "sqlite":
        assert (caps.name, caps.embedded) == ("sqlite", True)
    else:
        assert (caps.name, caps.embedded) == ("postgresql", False)


async def test_distribution_names_every_table_with_its_declared_placement(opened: Opened) -> None:
    """Without a distributed engine every table is local; with Citus (SEQUENCER_TEST_CITUS)
    every table is placed as store.placement declares. Either way each table the
    migrations made is listed once, with the placement it is declared to have."""
    found = await opened.store.distribution()
    assert [t.table for t in found.tables] == [p.table for p in placement.TABLES]
    assert [t.expected for t in found.tables] == [placement.declared(p) for p in placement.TABLES]
    if found.engine is None:
        assert {t.placement for t in found.tables} == {placement.LOCAL}
    else:
        assert found.engine.startswith("citus ")
        assert all(t.placement == t.expected for t in found.tables)

"""Migrations on both dialects: every step goes down and up again cleanly, the catalog shows
exactly the schema the applied migrations describe, and a database the code does not
recognise (an edited or unknown migration) is refused rather than migrated."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from stateset_sequencer.store.errors import MigrationError
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.migrations import Migration, load
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import pg

_TABLE_RE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE)
_INDEX_RE = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", re.IGNORECASE
)

VERSIONS = [m.version for m in load("postgres")]
EDITED = hashlib.sha256(b"-- edited after it was applied").hexdigest()


def tables_of(migration: Migration) -> set[str]:
    return {name.lower() for name in _TABLE_RE.findall(migration.up)}


def indexes_of(migration: Migration) -> set[str]:
    return {name.lower() for name in _INDEX_RE.findall(migration.up)}


@dataclass
class Backend:
    """A store not yet migrated, plus raw access to its catalog and schema_migrations."""

    dialect: str
    store: Store
    migrations: list[Migration]
    open_another: Callable[[], Awaitable[Store]]
    raw: Callable[[str, tuple[Any, ...]], Awaitable[list[tuple[Any, ...]]]]

    # --- the catalog, read behind the store's back ------------------------------------------------

    async def tables(self) -> set[str]:
        if self.dialect == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        else:
            # Objects an extension owns (Citus's citus_tables view, say) are not ours.
            sql = (
                "SELECT table_name FROM information_schema.tables t "
                "WHERE table_schema = current_schema() AND NOT EXISTS ("
                "SELECT 1 FROM pg_depend d WHERE d.deptype = 'e' "
                "AND d.objid = (quote_ident(t.table_name))::regclass)"
            )
        return {str(row[0]).lower() for row in await self.raw(sql, ())}

    async def indexes(self) -> set[str]:
        """Named indexes (not those made implicitly for keys and unique constraints)."""
        if self.dialect == "sqlite":
            sql = (
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite_%'"
            )
        else:
            sql = (
                "SELECT indexname FROM pg_indexes i WHERE schemaname = current_schema() "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                "WHERE c.conname = i.indexname AND c.contype IN ('p', 'u'))"
            )
        return {str(row[0]).lower() for row in await self.raw(sql, ())}

    async def objects(self) -> set[str]:
        """Every relation, index, view, trigger or type in the schema."""
        if self.dialect == "sqlite":
            sql = "SELECT type || ':' || name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            return {str(row[0]).lower() for row in await self.raw(sql, ())}
        here = "current_schema()::regnamespace"
        ours = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.deptype = 'e' AND d.objid = {oid})"
        relations = await self.raw(
            f"SELECT 'rel:' || relname FROM pg_class c WHERE relnamespace = {here} "
            f"AND {ours.format(oid='c.oid')}",
            (),
        )
        types = await self.raw(
            f"SELECT 'type:' || typname FROM pg_type t WHERE typnamespace = {here} "
            f"AND {ours.format(oid='t.oid')} AND NOT EXISTS (SELECT 1 FROM pg_depend d "
            "WHERE d.deptype = 'e' AND d.objid = t.typrelid) AND NOT EXISTS ("
            "SELECT 1 FROM pg_type e JOIN pg_depend d ON d.objid = e.typrelid "
            "AND d.deptype = 'e' WHERE e.oid = t.typelem)",
            (),
        )
        return {str(row[0]).lower() for row in [*relations, *types]}

    async def applied_rows(self) -> dict[int, str]:
        rows = await self.raw("SELECT version, checksum FROM schema_migrations", ())
        return {int(row[0]): str(row[1]) for row in rows}

    async def set_checksum(self, version: int, checksum: str) -> None:
        ph = self._placeholders(2)
        await self.raw(
            f"UPDATE schema_migrations SET checksum = {ph[0]} WHERE version = {ph[1]}",
            (checksum, version),
        )

    async def add_applied(self, version: int, name: str, checksum: str) -> None:
        ph = self._placeholders(3)
        sqlite = self.dialect == "sqlite"
        applied_at = "'2000-01-01T00:00:00.000000Z'" if sqlite else "NOW()"
        await self.raw(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
            f"VALUES ({ph[0]}, {ph[1]}, {ph[2]}, {applied_at})",
            (version, name, checksum),
        )

    def _placeholders(self, n: int) -> list[str]:
        return ["?"] * n if self.dialect == "sqlite" else [f"${i}" for i in range(1, n + 1)]

    # --- expectations -----------------------------------------------------------------------------

    def expected_tables(self, applied: set[int]) -> set[str]:
        found = {"schema_migrations"}
        for migration in self.migrations:
            if migration.version in applied:
                found |= tables_of(migration)
        return found

    def expected_indexes(self, applied: set[int]) -> set[str]:
        found: set[str] = set()
        for migration in self.migrations:
            if migration.version in applied:
                found |= indexes_of(migration)
        return found

    async def assert_applied(self, applied: set[int]) -> None:
        """Status, schema_migrations and the catalog all agree that exactly ``applied`` is."""
        status = await self.store.migration_status()
        assert [(s.version, s.name) for s in status] == [
            (m.version, m.name) for m in self.migrations
        ]
        assert {s.version for s in status if s.applied} == applied
        assert all(s.checksum_ok for s in status)
        assert await self.applied_rows() == {
            m.version: m.checksum for m in self.migrations if m.version in applied
        }
        assert await self.tables() == self.expected_tables(applied)
        assert await self.indexes() == self.expected_indexes(applied)


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "migrations.db"

        async def open_sqlite() -> Store:
            store = await open_store(parse_database_url(f"sqlite:///{path}", tmp_path))
            opened.append(store)
            return store

        async def raw_sqlite(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(path, timeout=10, isolation_level=None)
            try:
                return [tuple(row) for row in conn.execute(sql, args).fetchall()]
            finally:
                conn.close()

        try:
            yield Backend("sqlite", await open_sqlite(), load("sqlite"), open_sqlite, raw_sqlite)
        finally:
            for store in opened:
                await store.close()
        return

    async with pg.scratch_database() as dsn:

        async def open_postgres() -> Store:
            store = await open_store(parse_database_url(dsn, tmp_path), max_connections=4)
            opened.append(store)
            return store

        async def raw_postgres(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                return [tuple(row) for row in await conn.fetch(sql, *args, timeout=30)]
            finally:
                await conn.close()

        try:
            yield Backend(
                "postgres", await open_postgres(), load("postgres"), open_postgres, raw_postgres
            )
        finally:
            for store in opened:
                await store.close()


async def use_schema(store: Store) -> None:
    """Touch a table of every migration through the store, so that pooled connections
    hold prepared statements on them (and must cope when the tables are recreated)."""
    stream = StreamKey(uuid.uuid4(), uuid.uuid4())
    assert await store.head(stream) == 0
    assert await store.entity_version(stream, "order", "1") == 0
    assert await store.get_or_set_meta("probe", "a") == "a"
    assert await store.list_agent_keys(stream.tenant_id) == []
    assert await store.list_commitments(stream) == []
    assert await store.latest_active_schema(stream.tenant_id, "order.created") is None


def cumulative(
    migrations: list[Migration], names: Callable[[Migration], set[str]]
) -> list[set[str]]:
    """What exists after each migration: SQLite rebuilds a table to change its key, which
    creates it again, where PostgreSQL alters it in place."""
    found: set[str] = set()
    after = []
    for migration in migrations:
        found |= names(migration)
        after.append(set(found))
    return after


def test_both_dialects_ship_the_same_migrations() -> None:
    sqlite, postgres = load("sqlite"), load("postgres")
    assert [(m.version, m.name) for m in sqlite] == [(m.version, m.name) for m in postgres]
    assert cumulative(sqlite, tables_of) == cumulative(postgres, tables_of)
    assert cumulative(sqlite, indexes_of) == cumulative(postgres, indexes_of)
    assert list(range(1, len(VERSIONS) + 1)) == VERSIONS


async def test_fresh_database_has_everything_pending(backend: Backend) -> None:
    status = await backend.store.migration_status()
    assert [s.version for s in status] == VERSIONS
    assert not any(s.applied for s in status)
    assert all(s.checksum_ok for s in status)
    assert await backend.tables() <= {"schema_migrations"}


async def test_migrate_applies_each_migration_once(backend: Backend) -> None:
    assert await backend.store.migrate() == VERSIONS
    await backend.assert_applied(set(VERSIONS))
    await use_schema(backend.store)
    assert await backend.store.migrate() == []
    await backend.assert_applied(set(VERSIONS))


@pytest.mark.parametrize("version", VERSIONS)
async def test_each_migration_goes_down_and_up_again(backend: Backend, version: int) -> None:
    store = backend.store
    newer = [v for v in reversed(VERSIONS) if v > version]
    await store.migrate()
    await use_schema(store)

    # up to it
    assert await store.rollback(version) == newer
    await backend.assert_applied(set(range(1, version + 1)))

    # down below it
    assert await store.rollback(version - 1) == [version]
    await backend.assert_applied(set(range(1, version)))
    assert await store.rollback(version - 1) == []

    # up again
    assert await store.migrate() == list(range(version, len(VERSIONS) + 1))
    await backend.assert_applied(set(VERSIONS))
    await use_schema(store)

    # and down once more: the re-applied migration reverts as cleanly as the first time
    assert await store.rollback(version - 1) == [*newer, version]
    await backend.assert_applied(set(range(1, version)))
    assert await store.migrate() == list(range(version, len(VERSIONS) + 1))
    await use_schema(store)


async def test_rollback_to_zero_leaves_only_schema_migrations(backend: Backend) -> None:
    store = backend.store
    await store.migrate()
    await use_schema(store)
    assert await store.rollback(0) == list(reversed(VERSIONS))
    await backend.assert_applied(set())
    assert await backend.tables() == {"schema_migrations"}
    leftovers = {name for name in await backend.objects() if "schema_migrations" not in name}
    assert leftovers == set()
    assert await store.rollback(0) == []

    assert await store.migrate() == VERSIONS
    await backend.assert_applied(set(VERSIONS))
    await use_schema(store)


async def test_rollback_target_below_zero_is_refused(backend: Backend) -> None:
    await backend.store.migrate()
    with pytest.raises(MigrationError):
        await backend.store.rollback(-1)
    await backend.assert_applied(set(VERSIONS))


@pytest.mark.parametrize("version", VERSIONS)
async def test_edited_migration_is_refused(backend: Backend, version: int) -> None:
    store = backend.store
    await store.migrate()
    # Leave the later migrations pending: none of them may be applied on top of an edit.
    await store.rollback(version)
    await backend.set_checksum(version, EDITED)

    with pytest.raises(MigrationError, match=f"{version:03d}"):
        await store.migrate()
    with pytest.raises(MigrationError):
        await store.rollback(0)

    status = {s.version: s for s in await store.migration_status()}
    assert {v for v, s in status.items() if not s.checksum_ok} == {version}
    assert {v for v, s in status.items() if s.applied} == set(range(1, version + 1))
    assert await backend.tables() == backend.expected_tables(set(range(1, version + 1)))

    # A second process starting on the same database is refused just the same.
    other = await backend.open_another()
    with pytest.raises(MigrationError):
        await other.migrate()


async def test_unknown_newer_migration_is_refused(backend: Backend) -> None:
    store = backend.store
    await store.migrate()
    future = len(VERSIONS) + 1
    await backend.add_applied(future, "from_the_future", EDITED)

    with pytest.raises(MigrationError, match=f"{future:03d}"):
        await store.migrate()
    with pytest.raises(MigrationError):
        await store.rollback(0)

    assert await backend.tables() == backend.expected_tables(set(VERSIONS))
    assert (await backend.applied_rows())[future] == EDITED


async def test_concurrent_migrations_apply_each_step_once(backend: Backend) -> None:
    others = [await backend.open_another() for _ in range(2)]
    results = await asyncio.gather(backend.store.migrate(), *(other.migrate() for other in others))
    applied = [v for result in results for v in result]
    assert sorted(applied) == VERSIONS
    await backend.assert_applied(set(VERSIONS))
    for other in others:
        await use_schema(other)

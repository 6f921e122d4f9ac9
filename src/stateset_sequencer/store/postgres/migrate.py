"""Running the PostgreSQL migration plans (made in ``store.migrations``) on one connection.

Callers wrap these in ``errors.mapped()``: a failing migration becomes MigrationError here,
while a lost connection stays OperationalError (the migration itself may be fine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import asyncpg

from ..errors import MigrationError
from ..migrations import Migration, load, pending, status, to_revert
from ..placement import (
    COLOCATION_ANCHOR,
    DISTRIBUTABLE_FROM,
    LOCAL,
    REFERENCE,
    Placement,
    TablePlacement,
    declared,
    distributed_by,
    distribution_order,
    report,
)
from ..records import Distribution, MigrationStatus
from . import audit
from .errors import describe

# Session advisory lock held while migrating, so that several sequencers started at once
# against one database apply each migration exactly once. Any fixed 64-bit value will do;
# this one is b"SSseqMIG" read as a big-endian integer.
MIGRATION_LOCK_KEY = 0x5353_7365_714D_4947

_CREATE_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER     PRIMARY KEY,
    name       TEXT        NOT NULL,
    checksum   TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
)
"""

if TYPE_CHECKING:  # generic only in the stubs, not at run time
    Conn = asyncpg.pool.PoolConnectionProxy[Any]


async def applied(conn: Conn) -> dict[int, str]:
    if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL") is not True:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


async def migrate(conn: Conn) -> list[int]:
    done = await _run(conn, lambda done: pending(load("postgres"), done), _apply, "apply")
    await distribute(conn)
    return done


async def rollback(conn: Conn, to_version: int) -> list[int]:
    def plan(done: dict[int, str]) -> list[Migration]:
        return to_revert(load("postgres"), done, to_version)

    await undistribute_for(conn, to_version)
    return await _run(conn, plan, _revert, "revert")


async def _apply(conn: Conn, migration: Migration) -> None:
    await conn.execute(migration.up)
    if migration.version == audit.CHAIN_MIGRATION:
        # Hashes SQL cannot compute: existing rows are chained in the same transaction.
        await audit.seal_chain(conn)
    await conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        migration.version,
        migration.name,
        migration.checksum,
    )


async def _revert(conn: Conn, migration: Migration) -> None:
    await conn.execute(migration.down)
    await conn.execute("DELETE FROM schema_migrations WHERE version = $1", migration.version)


async def _run(
    conn: Conn,
    plan: Callable[[dict[int, str]], list[Migration]],
    step: Callable[[Conn, Migration], Awaitable[None]],
    verb: str,
) -> list[int]:
    """Each migration of the plan in a transaction of its own, under the migration lock."""
    async with _locked(conn):
        await conn.execute(_CREATE_TABLE_SQL)
        done: list[int] = []
        for migration in plan(await applied(conn)):
            try:
                async with conn.transaction():
                    await step(conn, migration)
            except asyncpg.PostgresConnectionError:
                raise
            except asyncpg.PostgresError as exc:
                raise _failed(verb, migration, exc) from exc
            done.append(migration.version)
        return done


async def migration_status(conn: Conn) -> list[MigrationStatus]:
    return status(load("postgres"), await applied(conn))


def _failed(verb: str, migration: Migration, exc: asyncpg.PostgresError) -> MigrationError:
    return MigrationError(
        f"could not {verb} migration {migration.version:03d}_{migration.name}: {describe(exc)}"
    )


@asynccontextmanager
async def _locked(conn: Conn) -> AsyncIterator[None]:
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        yield
    finally:
        # A broken connection cannot unlock, but its session and its lock end with it.
        with suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


# --- placing tables on Citus -------------------------------------------------------------------

_CITUS_SQL = "SELECT extversion FROM pg_extension WHERE extname = 'citus'"
# citus_tables lists distributed and reference tables; a table it does not list is local.
_PLACED_SQL = (
    "SELECT table_name::text AS name, citus_table_type AS kind, distribution_column AS column "
    "FROM citus_tables"
)


async def citus_version(conn: Conn) -> str | None:
    """The citus extension's version when it is installed in this database."""
    value = await conn.fetchval(_CITUS_SQL)
    return None if value is None else str(value)


async def distribution(conn: Conn) -> Distribution:
    engine = await citus_version(conn)
    placed = await _placed(conn) if engine is not None else {}
    name = None if engine is None else f"citus {engine}"
    return report(name, await _present_tables(conn), placed)


async def distribute(conn: Conn) -> list[str]:
    """Place every present table as ``store.placement`` declares, under the migration lock;
    returns the tables placed now. Nothing happens where citus is not installed. Each
    table is placed in a statement of its own, so an interrupted run resumes where it
    stopped; a table already placed otherwise than declared is refused, never moved."""
    if await citus_version(conn) is None:
        return []
    async with _locked(conn):
        placed = await _placed(conn)
        present = await _present_tables(conn)
        done: list[str] = []
        for entry in distribution_order():
            if entry.table not in present:
                continue
            want = declared(entry)
            have = placed.get(entry.table, LOCAL)
            if have == want:
                continue
            if have != LOCAL:
                raise MigrationError(
                    f"table {entry.table} is {have} but the schema places it {want}; "
                    "undistribute it (SELECT undistribute_table(...)) and migrate again"
                )
            try:
                await conn.execute(*_placing(entry))
            except asyncpg.PostgresConnectionError:
                raise
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"could not place table {entry.table} ({want}): {describe(exc)}"
                ) from exc
            done.append(entry.table)
        return done


def _placing(entry: TablePlacement) -> tuple[str, ...]:
    if entry.placement is Placement.REFERENCE:
        return ("SELECT create_reference_table($1::regclass)", entry.table)
    assert entry.column is not None
    if entry.placement is Placement.OWN_KEY:
        # Its own colocation group: nothing joins it with the tenant tables.
        colocate = "none"
    elif entry.table == COLOCATION_ANCHOR:
        colocate = "default"
    else:
        colocate = COLOCATION_ANCHOR
    return (
        "SELECT create_distributed_table($1::regclass, $2, colocate_with => $3)",
        entry.table,
        entry.column,
        colocate,
    )


async def _placed(conn: Conn) -> dict[str, str]:
    placed: dict[str, str] = {}
    for row in await conn.fetch(_PLACED_SQL):
        if row["kind"] == "reference":
            placed[row["name"]] = REFERENCE
        elif row["kind"] == "distributed":
            placed[row["name"]] = distributed_by(row["column"])
        else:  # a "local" table Citus manages (e.g. referenced by a reference table)
            placed[row["name"]] = LOCAL
    return placed


async def _present_tables(conn: Conn) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {row["tablename"] for row in rows}


async def undistribute_for(conn: Conn, to_version: int) -> list[str]:
    """Before reverting below DISTRIBUTABLE_FROM, whose keys a distributed table cannot
    hold: bring every distributed table back onto the coordinator as a local table (its
    rows with it). Reference tables stay; the older migrations drop them as they are.
    A later ``migrate`` distributes again."""
    if to_version >= DISTRIBUTABLE_FROM or await citus_version(conn) is None:
        return []
    async with _locked(conn):
        done: list[str] = []
        for table in list(await _placed(conn)):
            # Read again each time: a table comes back with those it has foreign keys to.
            if (await _placed(conn)).get(table, LOCAL) in (LOCAL, REFERENCE):
                continue
            try:
                await conn.execute(
                    "SELECT undistribute_table($1::regclass, cascade_via_foreign_keys => true)",
                    table,
                )
            except asyncpg.PostgresConnectionError:
                raise
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"could not undistribute table {table} before rolling back: {describe(exc)}"
                ) from exc
            done.append(table)
        return done

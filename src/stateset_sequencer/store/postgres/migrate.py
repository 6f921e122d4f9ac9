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
from ..records import MigrationStatus
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
    return await _run(conn, lambda done: pending(load("postgres"), done), _apply, "apply")


async def rollback(conn: Conn, to_version: int) -> list[int]:
    def plan(done: dict[int, str]) -> list[Migration]:
        return to_revert(load("postgres"), done, to_version)

    return await _run(conn, plan, _revert, "revert")


async def _apply(conn: Conn, migration: Migration) -> None:
    await conn.execute(migration.up)
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

"""``PostgresStore``: every port on asyncpg connection pools (``pool.Pools``). Each port's
queries live in the module named after it; this module assembles them and answers the
:class:`Database` port."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OperationalError
from ..ports import Store
from ..records import Capabilities, Distribution, MigrationStatus, PoolStats, SnapshotContents
from . import migrate
from .access import PostgresAccessStore
from .audit import PostgresAuditChain
from .changes import PostgresChangeFeed, PostgresHeadFeed
from .commitments import PostgresCommitments
from .cursors import PostgresAgentCursors
from .errors import mapped
from .event_log import PostgresEventLog
from .keys import PostgresKeyRegistry
from .leader import PostgresLeaderLock
from .maintenance import PostgresMaintenance
from .policies import PostgresAgentPolicies
from .pool import Pools, close_pool, create_pool
from .projections import PostgresProjections
from .rate_budgets import PostgresRateBudgets
from .schemas import PostgresSchemaStore
from .snapshots import PostgresSnapshots

if TYPE_CHECKING:
    from .pool import Pool

PING_TIMEOUT_S = 10.0


class PostgresStore(
    PostgresEventLog,
    PostgresKeyRegistry,
    PostgresAccessStore,
    PostgresAuditChain,
    PostgresSchemaStore,
    PostgresAgentPolicies,
    PostgresAgentCursors,
    PostgresCommitments,
    PostgresProjections,
    PostgresLeaderLock,
    PostgresMaintenance,
    PostgresRateBudgets,
    PostgresSnapshots,
    PostgresChangeFeed,
    PostgresHeadFeed,
    Store,
):
    """Writes and the reads that decide on a request go to the primary pool; event-log
    reads go to the read pool (``read_dsn``, e.g. a replica) when one is configured."""

    # Not part of any port; only tests/api/test_routes.py still reads it.
    capabilities = Capabilities(name="postgresql", embedded=False)

    def __init__(self, dsn: str, pool: Pool, reader: Pool | None = None) -> None:
        Pools.__init__(self, pool, reader)
        PostgresSnapshots.__init__(self, dsn)
        PostgresLeaderLock.__init__(self, dsn)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        max_connections: int = 10,
        statement_timeout_ms: int | None = None,
        read_dsn: str | None = None,
    ) -> PostgresStore:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        # Citus hides its shards from the catalog of every session by default, which makes
        # asyncpg's type introspection of each new connection take seconds. Showing them
        # to our own sessions only (never as the database's default) keeps pg_dump, which
        # must not dump the shards, on the default. Plain PostgreSQL keeps the name as an
        # unused placeholder setting.
        settings: dict[str, str] = {"citus.override_table_visibility": "off"}
        if statement_timeout_ms is not None:
            settings["statement_timeout"] = str(int(statement_timeout_ms))
        pool = await create_pool(dsn, max_connections, settings)
        reader: Pool | None = None
        if read_dsn is not None:
            try:
                # Read-only sessions make a misrouted write fail loudly instead of landing
                # on whatever the read DSN points at.
                reader = await create_pool(
                    read_dsn, max_connections, {**settings, "default_transaction_read_only": "on"}
                )
            except BaseException:
                await close_pool(pool)
                raise
        return cls(dsn, pool, reader)

    # --- the Database port ----------------------------------------------------------------

    async def migrate(self) -> list[int]:
        with mapped():
            async with self._pool.acquire() as conn:
                done = await migrate.migrate(conn)
        if done:
            await self._forget_statements()
        return done

    async def rollback(self, to_version: int) -> list[int]:
        with mapped():
            async with self._pool.acquire() as conn:
                done = await migrate.rollback(conn, to_version)
        if done:
            await self._forget_statements()
        return done

    async def migration_status(self) -> list[MigrationStatus]:
        with mapped():
            async with self._pool.acquire() as conn:
                return await migrate.migration_status(conn)

    async def distribution(self) -> Distribution:
        with mapped():
            async with self._pool.acquire() as conn:
                return await migrate.distribution(conn)

    def pool_stats(self) -> PoolStats:
        total = self._pool.get_size()
        idle = self._pool.get_idle_size()
        return PoolStats(
            active=total - idle, idle=idle, total=total, maximum=self._pool.get_max_size()
        )

    async def ping(self) -> float:
        started = time.perf_counter()
        with mapped():
            async with self._pool.acquire(timeout=PING_TIMEOUT_S) as conn:
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
        return time.perf_counter() - started

    async def close(self) -> None:
        if self._reader is not self._pool:
            await close_pool(self._reader)
        await close_pool(self._pool)

    async def get_or_set_meta(self, key: str, value: str) -> str:
        with mapped():
            async with self._pool.acquire() as conn:
                # Two statements, not one: under READ COMMITTED the SELECT then sees a value
                # that a concurrent caller committed while our INSERT waited on it.
                await conn.execute(
                    "INSERT INTO sequencer_meta (key, value) VALUES ($1, $2) "
                    "ON CONFLICT (key) DO NOTHING",
                    key,
                    value,
                )
                stored = await conn.fetchval("SELECT value FROM sequencer_meta WHERE key = $1", key)
        if stored is None:
            raise OperationalError(f"meta key {key!r} vanished while being read")
        return str(stored)

    # --- restoring under open connections -------------------------------------------------

    async def restore_snapshot(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        restored = await PostgresSnapshots.restore_snapshot(self, file, tables)
        # Every table was dropped and recreated under the pooled connections.
        await self._forget_statements()
        return restored

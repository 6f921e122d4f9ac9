"""The asyncpg pools every port of the PostgreSQL adapter reaches the database through.

This module and ``errors.py`` (asyncpg's exceptions into the ports' own) are the
adapter's only infrastructure; every other module implements one port.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg

from ..errors import OperationalError
from ..records import StreamKey
from .errors import describe, mapped

if TYPE_CHECKING:  # generic only in the stubs, not at run time
    import asyncpg.pool

    Pool = asyncpg.Pool[asyncpg.Record]
    Conn = asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    Executor = Conn | Pool

CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0


class Pools:
    """Writes, key, API-key and schema reads go to the primary pool; event-log reads go
    to the read pool (``read_dsn``, e.g. a replica) when one is configured. Reads that
    decide whether to accept a request stay on the primary, because a lagging replica
    would still accept a key revoked a moment ago."""

    def __init__(self, pool: Pool, reader: Pool | None = None) -> None:
        self._pool = pool
        self._reader = reader if reader is not None else pool
        # (task, stream) pairs inside a stream transaction, to refuse a nested one.
        self._held: set[tuple[asyncio.Task[Any] | None, StreamKey]] = set()

    async def _forget_statements(self) -> None:
        # Pooled connections cache prepared statements planned against tables that a
        # migration or a restore may have dropped and recreated; new connections replan.
        with mapped():
            await self._pool.expire_connections()
            if self._reader is not self._pool:
                await self._reader.expire_connections()


async def create_pool(dsn: str, max_connections: int, settings: dict[str, str]) -> Pool:
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=max_connections,
            timeout=CONNECT_TIMEOUT_S,
            server_settings=settings or None,
        )
    except (
        OSError,  # refused, unreachable, timed out
        ValueError,  # a malformed DSN, reported by asyncpg's parser
        asyncpg.PostgresError,  # e.g. no such database, authentication failed
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,  # e.g. no host matched target_session_attrs
    ) as exc:
        raise OperationalError(f"cannot connect to PostgreSQL: {describe(exc)}") from exc


async def close_pool(pool: Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        # A connection still checked out (or a dead server) must not hang shutdown.
        pool.terminate()


def one(row: asyncpg.Record | None) -> asyncpg.Record:
    if row is None:
        raise OperationalError("the database returned no row for an INSERT … RETURNING")
    return row


def affected(status: str) -> int:
    """Row count from a command tag such as ``UPDATE 3``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0

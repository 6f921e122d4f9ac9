"""The :class:`LeaderLock` port on PostgreSQL: a session-level advisory lock
(``pg_try_advisory_lock``) held on a connection of its own, outside the pools.

The session is the lease: while it lives the lock is ours, and when it ends (we close
it, the server restarts, an operator runs ``pg_terminate_backend``, the network drops)
PostgreSQL releases the lock at once, so another process can take it on its next try.
The holder learns of the loss from asyncpg's termination callback and, for a half-open
connection that reports nothing, from a ``SELECT 1`` every ``check_interval``; either
way :meth:`Leadership.lost` returns and the work must stop. A pooled connection would
not do: the pool resets sessions, and a transaction-pooling proxy (PgBouncer in
``transaction`` mode) cannot carry a session lock at all.

The lock's key is the first 8 bytes of SHA-256 over ``stateset-sequencer/leader/<name>``,
read as a signed 64-bit integer, so that it is stable across versions and unlikely to
meet another application's advisory locks on a shared database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from ..errors import OperationalError
from ..leadership import check_lock_name
from ..ports import LeaderLock, Leadership
from .errors import describe

if TYPE_CHECKING:
    Connection = asyncpg.Connection[asyncpg.Record]

log = structlog.get_logger("stateset_sequencer.leader")

# How an operator finds the leaders in pg_stat_activity (docs/RUNBOOK.md).
APPLICATION_NAME = "sequencer-leader"
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
_NAMESPACE = b"stateset-sequencer/leader/"


def lock_key(name: str) -> int:
    """The advisory-lock key of a leader lock's name."""
    digest = hashlib.sha256(_NAMESPACE + check_lock_name(name).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _SessionLeadership(Leadership):
    def __init__(self, conn: Connection, name: str, check_interval: float) -> None:
        self._conn = conn
        self._name = name
        self._gone = asyncio.Event()
        self._released = False
        conn.add_termination_listener(self._terminated)
        self._watch = asyncio.get_running_loop().create_task(self._check(check_interval))

    def _terminated(self, _conn: Any) -> None:
        self._gone.set()

    async def _check(self, interval: float) -> None:
        while not self._gone.is_set():
            await asyncio.sleep(interval)
            try:
                await self._conn.fetchval("SELECT 1", timeout=max(interval, 1.0))
            except (
                OSError,
                TimeoutError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                # A session killed while the ping is on the wire can leave asyncpg's
                # protocol mid-operation ("cannot switch to state ..."): the session is
                # as gone as with any other fault, and the watch must say so, not die.
                asyncpg.InternalClientError,
            ) as exc:
                if not self._released:
                    log.warning("leader session lost", lock=self._name, error=describe(exc))
                self._gone.set()

    async def lost(self) -> None:
        await self._gone.wait()

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watch
        # Ending the session releases its advisory locks; no unlock needed.
        try:
            await asyncio.wait_for(self._conn.close(), CLOSE_TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._conn.terminate()
        self._gone.set()


class PostgresLeaderLock(LeaderLock):
    def __init__(self, dsn: str) -> None:
        self._leader_dsn = dsn

    async def try_lead(self, name: str, *, check_interval: float = 5.0) -> Leadership | None:
        key = lock_key(name)
        try:
            conn: Connection = await asyncpg.connect(
                self._leader_dsn,
                timeout=CONNECT_TIMEOUT_S,
                server_settings={"application_name": APPLICATION_NAME},
            )
        except (OSError, TimeoutError, ValueError, asyncpg.PostgresError) as exc:
            raise OperationalError(f"cannot connect for the leader lock: {describe(exc)}") from exc
        try:
            held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
        except BaseException as exc:
            conn.terminate()
            if isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
                raise OperationalError(f"leader lock {name}: {describe(exc)}") from exc
            raise
        if not held:
            await _close(conn)
            return None
        return _SessionLeadership(conn, name, check_interval)


async def _close(conn: Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()

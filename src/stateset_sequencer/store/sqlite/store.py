"""``SqliteStore``: every port on one SQLite file in WAL mode, one writer thread and one
reader thread (``worker.Connections``). Each port's queries live in the module named after
it; this module assembles them and answers the :class:`Database` port."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import OperationalError
from ..ports import Store
from ..records import Capabilities, Distribution, MigrationStatus, PoolStats, SnapshotContents
from . import migrate
from .access import SqliteAccessStore
from .audit import SqliteAuditChain
from .changes import SqliteChangeFeed, SqliteHeadFeed, SqlitePublisher
from .commitments import SqliteCommitments
from .cursors import SqliteAgentCursors
from .event_log import SqliteEventLog
from .keys import SqliteKeyRegistry
from .leader import SqliteLeaderLock
from .maintenance import SqliteMaintenance
from .policies import SqliteAgentPolicies
from .projections import SqliteProjections
from .rate_budgets import SqliteRateBudgets
from .schemas import SqliteSchemaStore
from .snapshots import SqliteSnapshots
from .worker import Connections, Worker, immediate, start_workers

# One writer and one reader thread, each with its own connection, all of them always open.
_POOL = PoolStats(active=0, idle=2, total=2, maximum=2)


def _select_one(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _get_or_set_meta(conn: sqlite3.Connection, key: str, value: str) -> str:
    with immediate(conn):
        conn.execute(
            "INSERT OR IGNORE INTO sequencer_meta (key, value) VALUES (?, ?)", (key, value)
        )
        row = conn.execute("SELECT value FROM sequencer_meta WHERE key = ?", (key,)).fetchone()
    return str(row["value"])


class SqliteStore(
    SqliteEventLog,
    SqliteKeyRegistry,
    SqliteAccessStore,
    SqliteAuditChain,
    SqliteSchemaStore,
    SqliteAgentPolicies,
    SqliteAgentCursors,
    SqliteCommitments,
    SqliteProjections,
    SqliteLeaderLock,
    SqliteMaintenance,
    SqliteRateBudgets,
    SqliteSnapshots,
    SqliteChangeFeed,
    SqliteHeadFeed,
    Store,
):
    # Not part of any port; only tests/api/test_routes.py still reads it.
    capabilities = Capabilities(name="sqlite", embedded=True, merge_streams=True)

    def __init__(self, path: Path, writer: Worker, reader: Worker) -> None:
        Connections.__init__(self, writer, reader)
        SqliteSnapshots.__init__(self, path)
        SqlitePublisher.__init__(self, path)
        SqliteLeaderLock.__init__(self, path)

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        new_file = not path.exists()
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if new_file:
                # SQLite gives its -wal and -shm files the database file's mode, so an
                # owner-only file created empty keeps the whole log owner-only.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
        except FileExistsError:
            pass  # another process created it between our check and ours
        except OSError as exc:
            raise OperationalError(f"cannot create {path}: {exc}") from exc
        writer, reader = await start_workers(path)
        return cls(path, writer, reader)

    # --- the Database port ----------------------------------------------------------------

    async def migrate(self) -> list[int]:
        return await self._write(migrate.migrate)

    async def rollback(self, to_version: int) -> list[int]:
        return await self._write(migrate.rollback, to_version)

    async def migration_status(self) -> list[MigrationStatus]:
        return await self._read(migrate.status)

    async def distribution(self) -> Distribution:
        return await self._read(migrate.distribution)

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._read(_select_one)
        return time.perf_counter() - started

    def pool_stats(self) -> PoolStats:
        return _POOL

    async def close(self) -> None:
        try:
            await self._writer.close()
        finally:
            await self._reader.close()

    async def get_or_set_meta(self, key: str, value: str) -> str:
        return await self._write(_get_or_set_meta, key, value)

    # --- restoring under open connections -------------------------------------------------

    async def restore_snapshot(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        # The store's connections would go on reading the file that was swapped out; they
        # are closed around the swap and opened again on the restored database.
        self._refuse_inside_own_transaction()
        async with self._write_lock:
            await self.close()
            try:
                return await SqliteSnapshots.restore_snapshot(self, file, tables)
            finally:
                self._writer, self._reader = await start_workers(self._database())

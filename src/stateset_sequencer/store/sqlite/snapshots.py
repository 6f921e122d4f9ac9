"""Snapshots of a SQLite database: the online backup API, and a file swapped in to restore.

Contents are always read from a copy's own bytes (a read-only connection on the copy), so
a manifest describes exactly what was copied even while the sequencer kept writing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import SnapshotError
from ..ports import Progress, Snapshots
from ..records import SnapshotContents, TakenSnapshot
from . import maintenance

SNAPSHOT_FILE = "sequencer.db"


class SqliteSnapshots(Snapshots):
    """Snapshots of the database file at ``path`` (None: no database of its own, only
    :meth:`test_restore` of a copy, which needs none)."""

    snapshot_format = "sqlite"
    snapshot_file = SNAPSHOT_FILE

    def __init__(self, path: Path | None) -> None:
        self.path = path

    async def take_snapshot(
        self, file: Path, tables: Sequence[str], progress: Progress | None = None
    ) -> TakenSnapshot:
        source = self._database()
        if not source.is_file():
            raise SnapshotError(f"{source}: no such SQLite database")
        try:
            await asyncio.to_thread(online_backup, source, file, progress)
        except sqlite3.Error as exc:
            raise SnapshotError(f"SQLite backup of {source} failed: {exc}") from None
        contents = await asyncio.to_thread(file_contents, file, tables)
        return TakenSnapshot(
            f"sqlite3 online backup API (SQLite {sqlite3.sqlite_version})", contents
        )

    async def restore_snapshot(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        target = self._database()
        await asyncio.to_thread(replace_file, file, target)
        return await asyncio.to_thread(file_contents, target, tables)

    async def test_restore(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        with tempfile.TemporaryDirectory(prefix="sequencer-verify-") as scratch:
            copy = Path(scratch) / SNAPSHOT_FILE
            await asyncio.to_thread(shutil.copyfile, file, copy)
            return await asyncio.to_thread(file_contents, copy, tables)

    async def holds_data(self) -> bool:
        path = self._database()
        if not path.exists():
            return False
        return not await asyncio.to_thread(_file_is_empty, path)

    def _database(self) -> Path:
        if self.path is None:
            raise SnapshotError("no SQLite database was named for this snapshot operation")
        return self.path


def online_backup(source: Path, target: Path, progress: Progress | None = None) -> None:
    """Copy a live database with SQLite's online backup API: a consistent snapshot even
    while the sequencer keeps writing (WAL content included), unlike a file copy."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:

            def report(_status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dst, pages=1024, progress=report)
            # A single-file copy: the backup must not depend on a -wal file beside it.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection on a file (a backup, or a database being inspected)."""
    if not path.is_file():
        raise FileNotFoundError(str(path))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def integrity_problem(conn: sqlite3.Connection) -> str | None:
    """SQLite's own structural check; None when the file is sound."""
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    text = "; ".join(str(r[0]) for r in rows)
    return None if text == "ok" else text


def file_contents(path: Path, tables: Sequence[str]) -> SnapshotContents:
    """Integrity check, summaries and row counts of the database file at ``path``."""
    conn = open_read_only(path)
    try:
        problem = integrity_problem(conn)
        if problem is not None:
            raise SnapshotError(f"{path}: SQLite integrity check failed: {problem}")
        summaries = maintenance.stream_summaries(conn)
        counts = maintenance.row_counts(conn, tables)
    except sqlite3.DatabaseError as exc:
        raise SnapshotError(f"{path}: not a readable SQLite database ({exc})") from None
    finally:
        conn.close()
    return SnapshotContents(tuple(summaries), counts)


def _file_is_empty(path: Path) -> bool:
    conn = open_read_only(path)
    try:
        return maintenance.is_empty(conn)
    except sqlite3.DatabaseError as exc:
        raise SnapshotError(f"{path}: not a readable SQLite database ({exc})") from None
    finally:
        conn.close()


def replace_file(source: Path, target: Path) -> None:
    """Swap the file in atomically. A -wal or -shm left from the old database would be
    replayed into the new one, so they go first (the sequencer must be stopped)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".restore", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""The :class:`LeaderLock` port on SQLite: an exclusive ``flock`` on a lock file beside
the database (``<database>.<name>.leader``).

One process normally serves a SQLite file, and it always leads; but nothing stops a
second process (a second ``serve``, a CLI tool) from opening the same file, and two
projection workers on one file would only race each other. ``flock`` locks belong to the
open file, so two stores on one file exclude each other even inside one process, and the
kernel drops the lock when its holder dies, however it dies: a stale lock file is never a
problem, and it is never deleted (deleting a lock file lets two holders lock two files).
A local filesystem is assumed, as for SQLite itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path

from ..errors import OperationalError
from ..leadership import check_lock_name
from ..ports import LeaderLock, Leadership


class _FileLeadership(Leadership):
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    async def lost(self) -> None:
        # The kernel never takes a flock back from a living holder.
        await asyncio.Event().wait()

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class SqliteLeaderLock(LeaderLock):
    def __init__(self, path: Path) -> None:
        self._leader_base = path

    def leader_file(self, name: str) -> Path:
        base = self._leader_base
        return base.with_name(f"{base.name}.{check_lock_name(name)}.leader")

    async def try_lead(self, name: str, *, check_interval: float = 5.0) -> Leadership | None:
        file = self.leader_file(name)
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise OperationalError(f"cannot open the leader lock {file}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise OperationalError(f"cannot lock {file}: {exc}") from exc
        return _FileLeadership(fd)

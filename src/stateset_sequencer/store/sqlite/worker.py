"""One SQLite connection owned by one thread, driven from asyncio; and the two of them
(writer, reader) through which every port of the SQLite adapter reaches the database.

This module and ``snapshots.py`` (which works on files, not on these connections) are
the adapter's only infrastructure; every other module implements one port.

A ``sqlite3`` connection must not be shared between threads, and SQLite serialises writers
anyway, so each connection lives on a single-thread executor: jobs submitted to it run one
after another in submission order. That order is what keeps a stream transaction intact
even when an awaiting coroutine is cancelled: a clean-up job submitted after the work
still runs after it, and before anything submitted later.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from ..errors import IntegrityError, OperationalError, StoreError

P = ParamSpec("P")
T = TypeVar("T")

Job = Callable[Concatenate[sqlite3.Connection, P], T]

_BUSY_TIMEOUT_MS = 30_000


class Worker:
    """A thread with its own connection; jobs are ``fn(conn, *args)`` run on that thread."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def start(cls, name: str, path: Path, *, read_only: bool) -> Worker:
        worker = cls(name)
        try:
            await worker._await(worker._executor.submit(worker._connect, path, read_only))
        except BaseException:
            worker._executor.shutdown(wait=False)
            raise
        return worker

    async def run(self, job: Job[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._await(self.submit(job, *args, **kwargs))

    def submit(self, job: Job[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queue a job without waiting for it (used for clean-up that must run even when
        the caller is being cancelled)."""
        if self._closed:
            raise OperationalError("the SQLite store is closed")

        def call() -> T:
            return self._call(job, *args, **kwargs)

        return self._executor.submit(call)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._await(self._executor.submit(self._disconnect))
        finally:
            self._executor.shutdown(wait=True)

    @staticmethod
    async def _await(future: Future[T]) -> T:
        return await asyncio.wrap_future(future)

    def _call(self, job: Job[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        conn = self._conn
        if conn is None:
            raise OperationalError("the SQLite connection is not open")
        try:
            return job(conn, *args, **kwargs)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        except sqlite3.Error as exc:
            raise OperationalError(str(exc)) from exc

    def _connect(self, path: Path, read_only: bool) -> None:
        try:
            self._conn = connect(path, read_only=read_only)
        except sqlite3.Error as exc:
            raise OperationalError(f"cannot open SQLite database {path}: {exc}") from exc

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Connections:
    """The writer and the reader a SQLite store runs its jobs on.

    Every write runs on the writer's connection, one at a time under an asyncio lock,
    because a stream transaction spans several jobs and nothing else may slip into it.
    Reads run on the reader, which in WAL mode sees the last committed state without
    waiting for the writer, so a read never observes an uncommitted stream transaction."""

    def __init__(self, writer: Worker, reader: Worker) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        # The task inside a stream transaction: a write through the store from that same
        # task would wait for the lock it holds itself, forever.
        self._transaction_task: asyncio.Task[object] | None = None

    async def _write(self, job: Job[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self._refuse_inside_own_transaction()
        async with self._write_lock:
            return await self._writer.run(job, *args, **kwargs)

    async def _read(self, job: Job[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._reader.run(job, *args, **kwargs)

    def _refuse_inside_own_transaction(self) -> None:
        if self._transaction_task is not None and self._transaction_task is asyncio.current_task():
            raise StoreError(
                "a write through the store inside its own stream transaction would deadlock; "
                "use the transaction's methods"
            )

    def _discard_transaction(self) -> None:
        """Queue a rollback behind whatever the writer is doing, without waiting for it:
        this runs when the caller is being cancelled or the connection has failed."""
        with suppress(StoreError):
            self._writer.submit(rollback_if_open)


async def start_workers(path: Path) -> tuple[Worker, Worker]:
    """The writer, then the reader: the writer switches the file to WAL, which the reader
    relies on to read alongside it."""
    writer = await Worker.start("sqlite-writer", path, read_only=False)
    try:
        reader = await Worker.start("sqlite-reader", path, read_only=True)
    except BaseException:
        await writer.close()
        raise
    return writer, reader


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    # isolation_level=None: the module must not open transactions behind our back; every
    # write transaction starts with an explicit BEGIN IMMEDIATE.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        # The timeout comes first: switching to WAL itself may wait for another process.
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if read_only:
            conn.execute("PRAGMA query_only = ON")
        else:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that holds the database write lock from its first statement, so
    a writer in another process waits (busy_timeout) instead of failing at commit."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        rollback_if_open(conn)
        raise


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction, so that several SELECTs see one consistent state."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        rollback_if_open(conn)


def rollback_if_open(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def commit_or_rollback(conn: sqlite3.Connection) -> None:
    """COMMIT; if that fails, leave the connection outside any transaction all the same."""
    try:
        conn.execute("COMMIT")
    except BaseException:
        rollback_if_open(conn)
        raise

"""The event log on SQLite: its reads as jobs run on the reader's thread
(``fn(conn, ...)``) and the :class:`EventLog` port over them and ``append``."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from ...ves.signing import Receipt
from ..paging import PageCut, event_bytes_sql
from ..ports import AppendTransaction, EventLog
from ..ports.events import check_streams
from ..records import EventPage, Existing, StoredEvent, StreamKey
from ..rows import EVENT_SELECT, RECEIPT_COLUMNS, RECEIPT_PREFIX
from . import convert
from .append import (
    EVENT_WITH_RECEIPT_FROM,
    SqliteAppendTransaction,
    entity_versions,
    existing,
    head,
    open_streams,
    stream_params,
)
from .worker import Connections, commit_or_rollback, rollback_if_open, snapshot

EventWithReceipt = tuple[StoredEvent, Receipt | None]

_EVENT_FROM = f"SELECT {EVENT_SELECT} FROM ves_events e"  # noqa: S608 - fixed names
_PAGE_SQL = (
    f"{EVENT_WITH_RECEIPT_FROM} "
    "WHERE e.tenant_id = ? AND e.store_id = ? AND e.sequence_number BETWEEN ? AND ? "
    "ORDER BY e.sequence_number LIMIT ?"
)
_E_STREAM = "e.tenant_id = ? AND e.store_id = ?"
_E_ENTITY = f"{_E_STREAM} AND e.entity_type = ? AND e.entity_id = ?"
# SQLite's length() counts characters of text; of a blob, bytes.
_SIZED = (
    "SELECT e.sequence_number AS n, "  # noqa: S608 - fixed names
    f"{event_bytes_sql(lambda column: f'length(CAST({column} AS BLOB))')} AS b FROM ves_events e"
)
_RANGE_SIZES_SQL = (
    f"{_SIZED} WHERE {_E_STREAM} AND e.sequence_number > ? AND e.sequence_number <= ? "
    "ORDER BY e.sequence_number LIMIT ?"
)
_ENTITY_SIZES_SQL = (
    f"{_SIZED} WHERE {_E_ENTITY} AND e.sequence_number > ? "
    "ORDER BY e.sequence_number LIMIT ? OFFSET ?"
)


def read_range(
    conn: sqlite3.Connection, stream: StreamKey, start: int, end: int, limit: int = -1
) -> list[StoredEvent]:
    """Events ``start..=end`` in order; at most ``limit`` of them (-1: no limit)."""
    rows = conn.execute(
        f"{_EVENT_FROM} WHERE {_E_STREAM} AND e.sequence_number BETWEEN ? AND ? "
        "ORDER BY e.sequence_number LIMIT ?",
        (*stream_params(stream), start, end, limit),
    ).fetchall()
    return [convert.stored_event(r) for r in rows]


# An event named by id alone: its owner first (ves_event_ids), then a read that names the
# tenant, as on PostgreSQL.
_OWNER_SQL = "SELECT tenant_id FROM ves_event_ids WHERE event_id = ?"
_GET_EVENT_SQL = f"{_EVENT_FROM} WHERE e.tenant_id = ? AND e.event_id = ?"
_RECEIPT_SQL = (
    f"SELECT {', '.join(RECEIPT_COLUMNS)} FROM ves_sequencer_receipts "  # noqa: S608
    "WHERE tenant_id = ? AND event_id = ?"
)


def _owned_row(conn: sqlite3.Connection, sql: str, event_id: uuid.UUID) -> sqlite3.Row | None:
    owner = conn.execute(_OWNER_SQL, (str(event_id),)).fetchone()
    if owner is None:
        return None
    row: sqlite3.Row | None = conn.execute(sql, (owner["tenant_id"], str(event_id))).fetchone()
    return row


def get_event(conn: sqlite3.Connection, event_id: uuid.UUID) -> StoredEvent | None:
    row = _owned_row(conn, _GET_EVENT_SQL, event_id)
    return None if row is None else convert.stored_event(row)


def get_receipt(conn: sqlite3.Connection, event_id: uuid.UUID) -> Receipt | None:
    row = _owned_row(conn, _RECEIPT_SQL, event_id)
    return None if row is None else convert.receipt(row)


def read_page(
    conn: sqlite3.Connection, stream: StreamKey, start: int, end: int, max_bytes: int
) -> EventPage:
    """The sizes first (``store.paging``), then only the rows that fit, in one snapshot."""
    cut = PageCut(max_bytes)
    after = max(start, 1) - 1
    with snapshot(conn):
        while size := cut.next_chunk():
            rows = conn.execute(
                _RANGE_SIZES_SQL, (*stream_params(stream), after, end, size)
            ).fetchall()
            if not cut.take((r["n"], r["b"]) for r in rows) or len(rows) < size:
                break
            after = rows[-1]["n"]
        if cut.first is None or cut.last is None:
            return EventPage([])
        return EventPage(read_range(conn, stream, cut.first, cut.last), cut.truncated)


def read_entity(
    conn: sqlite3.Connection,
    stream: StreamKey,
    entity_type: str,
    entity_id: str,
    offset: int,
    limit: int,
    max_bytes: int | None = None,
) -> tuple[list[StoredEvent], int]:
    params = (*stream_params(stream), entity_type, entity_id)
    with snapshot(conn):
        total = conn.execute(
            f"SELECT count(*) AS n FROM ves_events e WHERE {_E_ENTITY}",  # noqa: S608
            params,
        ).fetchone()["n"]
        if max_bytes is None:
            rows = conn.execute(
                f"{_EVENT_FROM} WHERE {_E_ENTITY} ORDER BY e.sequence_number LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        else:
            rows = _entity_rows_within(conn, params, offset, limit, max_bytes)
    return [convert.stored_event(r) for r in rows], int(total)


def _entity_rows_within(
    conn: sqlite3.Connection,
    params: tuple[str, str, str, str],
    offset: int,
    limit: int,
    max_bytes: int,
) -> list[sqlite3.Row]:
    cut = PageCut(max_bytes)
    after, skip = 0, offset
    while size := cut.next_chunk(limit):
        sizes = conn.execute(_ENTITY_SIZES_SQL, (*params, after, size, skip)).fetchall()
        skip = 0
        if not cut.take((r["n"], r["b"]) for r in sizes) or len(sizes) < size:
            break
        after = sizes[-1]["n"]
    if cut.first is None or cut.last is None:
        return []
    rows: list[sqlite3.Row] = conn.execute(
        f"{_EVENT_FROM} WHERE {_E_ENTITY} AND e.sequence_number BETWEEN ? AND ? "
        "ORDER BY e.sequence_number",
        (*params, cut.first, cut.last),
    ).fetchall()
    return rows


def entity_version(
    conn: sqlite3.Connection, stream: StreamKey, entity_type: str, entity_id: str
) -> int:
    return entity_versions(conn, stream, [(entity_type, entity_id)]).get(
        (entity_type, entity_id), 0
    )


def list_streams(conn: sqlite3.Connection) -> list[tuple[StreamKey, int]]:
    rows = conn.execute(
        "SELECT tenant_id, store_id, current_sequence FROM sequence_counters "
        "ORDER BY tenant_id, store_id"
    ).fetchall()
    return [
        (StreamKey(uuid.UUID(r["tenant_id"]), uuid.UUID(r["store_id"])), r["current_sequence"])
        for r in rows
    ]


def events_with_receipts(
    conn: sqlite3.Connection, stream: StreamKey, start: int, end: int, limit: int
) -> list[EventWithReceipt]:
    rows = conn.execute(
        _PAGE_SQL, (str(stream.tenant_id), str(stream.store_id), start, end, limit)
    ).fetchall()
    times = convert.Times()
    return [
        (convert.stored_event(r, times), convert.receipt(r, RECEIPT_PREFIX, times)) for r in rows
    ]


async def paged(
    read_page: Callable[[int, int], Awaitable[list[EventWithReceipt]]],
    start: int,
    end: int,
    batch_size: int,
) -> AsyncIterator[EventWithReceipt]:
    """Walk ``start..=end`` one page at a time; ``read_page(first, limit)`` reads one.

    The next page is requested before the current one is handed out, so the reader
    thread works while the consumer does."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cursor = max(start, 1)
    if cursor > end:
        return
    ahead: asyncio.Future[list[EventWithReceipt]] | None = asyncio.ensure_future(
        read_page(cursor, batch_size)
    )
    try:
        while ahead is not None:
            page = await ahead
            ahead = None
            if len(page) == batch_size and page[-1][0].sequence_number < end:
                ahead = asyncio.ensure_future(
                    read_page(page[-1][0].sequence_number + 1, batch_size)
                )
            for item in page:
                yield item
    finally:
        # A consumer that stops early (an error, a closed generator) leaves no read behind.
        if ahead is not None:
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ahead


class SqliteEventLog(Connections, EventLog):
    def append_transaction(
        self, streams: Sequence[StreamKey]
    ) -> AbstractAsyncContextManager[AppendTransaction]:
        return self._append_transaction(check_streams(streams))

    @asynccontextmanager
    async def _append_transaction(
        self, streams: Sequence[StreamKey]
    ) -> AsyncIterator[AppendTransaction]:
        self._refuse_inside_own_transaction()
        async with self._write_lock:
            try:
                heads = await self._writer.run(open_streams, streams)
            except BaseException:
                self._discard_transaction()
                raise
            tx = SqliteAppendTransaction(self._writer, streams, heads)
            self._transaction_task = asyncio.current_task()
            try:
                yield tx
            except BaseException:
                tx.end()
                try:
                    await self._writer.run(rollback_if_open)
                except BaseException:
                    self._discard_transaction()
                raise
            else:
                tx.end()
                await self._writer.run(commit_or_rollback)
            finally:
                self._transaction_task = None

    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        return await self._read(existing, event_ids)

    async def head(self, stream: StreamKey) -> int:
        return await self._read(head, stream)

    async def read_range(self, stream: StreamKey, start: int, end: int) -> list[StoredEvent]:
        return await self._read(read_range, stream, start, end)

    async def read_page(self, stream: StreamKey, start: int, end: int, max_bytes: int) -> EventPage:
        return await self._read(read_page, stream, start, end, max_bytes)

    async def iter_range(
        self, stream: StreamKey, start: int, end: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[StoredEvent]:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        # With no end, stop at the head as it was when iteration began rather than chase
        # a writer that keeps appending.
        last = await self.head(stream) if end is None else end
        next_sequence = start
        while next_sequence <= last:
            page = await self._read(read_range, stream, next_sequence, last, batch_size)
            for event in page:
                yield event
            if len(page) < batch_size:
                return
            next_sequence = page[-1].sequence_number + 1

    async def get_event(self, event_id: uuid.UUID) -> StoredEvent | None:
        return await self._read(get_event, event_id)

    async def get_receipt(self, event_id: uuid.UUID) -> Receipt | None:
        return await self._read(get_receipt, event_id)

    async def read_entity(
        self,
        stream: StreamKey,
        entity_type: str,
        entity_id: str,
        offset: int,
        limit: int,
        max_bytes: int | None = None,
    ) -> tuple[list[StoredEvent], int]:
        return await self._read(
            read_entity, stream, entity_type, entity_id, offset, limit, max_bytes
        )

    async def entity_version(self, stream: StreamKey, entity_type: str, entity_id: str) -> int:
        return await self._read(entity_version, stream, entity_type, entity_id)

    async def list_streams(self) -> list[tuple[StreamKey, int]]:
        return await self._read(list_streams)

    def iter_events_with_receipts(
        self, stream: StreamKey, start: int, end: int, batch_size: int = 1000
    ) -> AsyncIterator[tuple[StoredEvent, Receipt | None]]:
        return paged(
            lambda first, limit: self._read(events_with_receipts, stream, first, end, limit),
            start,
            end,
            batch_size,
        )

"""The event log on PostgreSQL: the :class:`EventLog` port. Reads go to the read pool;
the append transaction (``append``) runs on a primary connection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from ...ves.signing import Receipt
from ..errors import StoreError
from ..paging import PageCut, event_bytes_sql
from ..ports import AppendTransaction, EventLog
from ..ports.events import check_streams
from ..records import EventPage, Existing, StoredEvent, StreamKey
from ..rows import EVENT_SELECT, RECEIPT_COLUMNS, RECEIPT_SELECT, column_list
from . import convert
from .append import PgAppendTransaction, fetch_existing, lock_counters
from .errors import mapped
from .pool import Pools

EventWithReceipt = tuple[StoredEvent, Receipt | None]

# These statements are assembled only from the fixed column lists of ``store.rows``, never
# from input; every value travels as a bind parameter.
_EVENTS_FROM = f"SELECT {EVENT_SELECT} FROM ves_events e"  # noqa: S608
_STREAM_WHERE = "e.tenant_id = $1 AND e.store_id = $2"
_ENTITY_WHERE = f"{_STREAM_WHERE} AND e.entity_type = $3 AND e.entity_id = $4"
_READ_RANGE_SQL = (
    f"{_EVENTS_FROM} WHERE {_STREAM_WHERE} "
    "AND e.sequence_number BETWEEN $3 AND $4 ORDER BY e.sequence_number"
)
_PAGE_SQL = f"{_READ_RANGE_SQL} LIMIT $5"
_PAGE_WITH_RECEIPTS_SQL = (
    f"SELECT {EVENT_SELECT}, {RECEIPT_SELECT} FROM ves_events e "  # noqa: S608
    "LEFT JOIN ves_sequencer_receipts r ON r.tenant_id = e.tenant_id AND r.event_id = e.event_id "
    f"WHERE {_STREAM_WHERE} AND e.sequence_number BETWEEN $3 AND $4 "
    "ORDER BY e.sequence_number LIMIT $5"
)
# An event named by id alone: its owner first (ves_event_ids), then a read that names the
# tenant, so that on Citus neither query leaves one shard.
_OWNER_SQL = "SELECT tenant_id FROM ves_event_ids WHERE event_id = $1"
_GET_EVENT_SQL = f"{_EVENTS_FROM} WHERE e.tenant_id = $1 AND e.event_id = $2"
_ENTITY_COUNT_SQL = f"SELECT count(*) FROM ves_events e WHERE {_ENTITY_WHERE}"  # noqa: S608
_ENTITY_PAGE_SQL = (
    f"{_EVENTS_FROM} WHERE {_ENTITY_WHERE} ORDER BY e.sequence_number OFFSET $5 LIMIT $6"
)
# A JSON column's text is the text received; octet_length counts its UTF-8 bytes.
_SIZED = (
    "SELECT e.sequence_number AS n, "  # noqa: S608 - fixed names
    f"{event_bytes_sql(lambda column: f'octet_length({column}::text)')} AS b FROM ves_events e"
)
_RANGE_SIZES_SQL = (
    f"{_SIZED} WHERE {_STREAM_WHERE} AND e.sequence_number > $3 AND e.sequence_number <= $4 "
    "ORDER BY e.sequence_number LIMIT $5"
)
_ENTITY_SIZES_SQL = (
    f"{_SIZED} WHERE {_ENTITY_WHERE} AND e.sequence_number > $5 "
    "ORDER BY e.sequence_number OFFSET $6 LIMIT $7"
)
_ENTITY_SPAN_SQL = (
    f"{_EVENTS_FROM} WHERE {_ENTITY_WHERE} AND e.sequence_number BETWEEN $5 AND $6 "
    "ORDER BY e.sequence_number"
)
_RECEIPT_SQL = (
    f"SELECT {column_list(RECEIPT_COLUMNS)} "  # noqa: S608
    "FROM ves_sequencer_receipts WHERE tenant_id = $1 AND event_id = $2"
)
_HEAD_SQL = "SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2"
_ENTITY_VERSION_SQL = (
    "SELECT version FROM entity_versions WHERE tenant_id = $1 AND store_id = $2 "
    "AND entity_type = $3 AND entity_id = $4"
)
_LIST_STREAMS_SQL = (
    "SELECT tenant_id, store_id, current_sequence FROM sequence_counters "
    "ORDER BY tenant_id, store_id"
)


class PostgresEventLog(Pools, EventLog):
    def append_transaction(
        self, streams: Sequence[StreamKey]
    ) -> AbstractAsyncContextManager[AppendTransaction]:
        return self._append_transaction(check_streams(streams))

    @asynccontextmanager
    async def _append_transaction(
        self, streams: Sequence[StreamKey]
    ) -> AsyncIterator[AppendTransaction]:
        # The same task opening the same stream again would wait for the row lock it
        # holds itself, forever; other tasks waiting their turn is the point of the lock.
        task = asyncio.current_task()
        keys = {(task, stream) for stream in streams}
        if keys & self._held:
            raise StoreError(
                "this task already holds the stream's transaction; nesting another would deadlock"
            )
        self._held |= keys
        try:
            # mapped() also covers the commit, where a deferred failure would surface.
            with mapped(appending=True):
                async with (
                    self._pool.acquire() as conn,
                    conn.transaction(isolation="read_committed"),
                ):
                    yield PgAppendTransaction(conn, await lock_counters(conn, streams))
        finally:
            self._held -= keys

    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        with mapped():
            async with self._reader.acquire() as conn:
                return await fetch_existing(conn, event_ids)

    async def head(self, stream: StreamKey) -> int:
        with mapped():
            value = await self._reader.fetchval(_HEAD_SQL, stream.tenant_id, stream.store_id)
        return int(value) if value is not None else 0

    async def read_range(self, stream: StreamKey, start: int, end: int) -> list[StoredEvent]:
        if end < start:
            return []
        with mapped():
            rows = await self._reader.fetch(
                _READ_RANGE_SQL, stream.tenant_id, stream.store_id, start, end
            )
        return [convert.stored_event(row) for row in rows]

    async def read_page(self, stream: StreamKey, start: int, end: int, max_bytes: int) -> EventPage:
        """The sizes first (``store.paging``), then only the rows that fit, in one
        snapshot."""
        cut = PageCut(max_bytes)
        after = max(start, 1) - 1
        ids = (stream.tenant_id, stream.store_id)
        with mapped():
            async with self._reader.acquire() as conn:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    while size := cut.next_chunk():
                        sizes = await conn.fetch(_RANGE_SIZES_SQL, *ids, after, end, size)
                        if not cut.take((r["n"], r["b"]) for r in sizes) or len(sizes) < size:
                            break
                        after = sizes[-1]["n"]
                    if cut.first is None or cut.last is None:
                        return EventPage([])
                    rows = await conn.fetch(_READ_RANGE_SQL, *ids, cut.first, cut.last)
        return EventPage([convert.stored_event(row) for row in rows], cut.truncated)

    async def iter_range(
        self, stream: StreamKey, start: int, end: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[StoredEvent]:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        # Fixing the end at the head seen now keeps the walk finite under steady appends;
        # every event up to that head is committed, as the counter moves in the same commit.
        last = end if end is not None else await self.head(stream)
        cursor = max(start, 1)
        while cursor <= last:
            # One short query per page and no connection held between pages, so a slow
            # consumer costs neither memory nor a pooled connection.
            with mapped():
                rows = await self._reader.fetch(
                    _PAGE_SQL, stream.tenant_id, stream.store_id, cursor, last, batch_size
                )
            for row in rows:
                yield convert.stored_event(row)
            if len(rows) < batch_size:
                return
            cursor = rows[-1]["sequence_number"] + 1

    async def get_event(self, event_id: uuid.UUID) -> StoredEvent | None:
        row = await self._owned_row(_GET_EVENT_SQL, event_id)
        return convert.stored_event(row) if row is not None else None

    async def get_receipt(self, event_id: uuid.UUID) -> Receipt | None:
        row = await self._owned_row(_RECEIPT_SQL, event_id)
        return convert.receipt(row) if row is not None else None

    async def _owned_row(self, sql: str, event_id: uuid.UUID) -> asyncpg.Record | None:
        with mapped():
            async with self._reader.acquire() as conn:
                tenant_id = await conn.fetchval(_OWNER_SQL, event_id)
                if tenant_id is None:
                    return None
                return await conn.fetchrow(sql, tenant_id, event_id)

    async def read_entity(
        self,
        stream: StreamKey,
        entity_type: str,
        entity_id: str,
        offset: int,
        limit: int,
        max_bytes: int | None = None,
    ) -> tuple[list[StoredEvent], int]:
        args = (stream.tenant_id, stream.store_id, entity_type, entity_id)
        with mapped():
            async with self._reader.acquire() as conn:
                # One snapshot for the page and the count, so the total matches the page.
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    total = await conn.fetchval(_ENTITY_COUNT_SQL, *args)
                    if max_bytes is None:
                        rows = await conn.fetch(
                            _ENTITY_PAGE_SQL, *args, max(offset, 0), max(limit, 0)
                        )
                    else:
                        rows = await _entity_rows_within(conn, args, offset, limit, max_bytes)
        return [convert.stored_event(row) for row in rows], int(total)

    async def entity_version(self, stream: StreamKey, entity_type: str, entity_id: str) -> int:
        with mapped():
            value = await self._reader.fetchval(
                _ENTITY_VERSION_SQL, stream.tenant_id, stream.store_id, entity_type, entity_id
            )
        return int(value) if value is not None else 0

    async def list_streams(self) -> list[tuple[StreamKey, int]]:
        with mapped():
            rows = await self._reader.fetch(_LIST_STREAMS_SQL)
        return [
            (StreamKey(row["tenant_id"], row["store_id"]), row["current_sequence"]) for row in rows
        ]

    async def iter_events_with_receipts(
        self, stream: StreamKey, start: int, end: int, batch_size: int = 1000
    ) -> AsyncIterator[EventWithReceipt]:
        """Walk ``start..=end`` one short query per page, holding no connection in between.

        The next page's query is sent before the current page is decoded and handed out,
        so the server reads while this process decodes and the consumer works (a verifier
        keeps the CPU busy; waiting for each page in turn left it idle every round trip)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")

        async def fetch(cursor: int) -> list[asyncpg.Record]:
            with mapped():
                return await self._reader.fetch(
                    _PAGE_WITH_RECEIPTS_SQL,
                    stream.tenant_id,
                    stream.store_id,
                    cursor,
                    end,
                    batch_size,
                )

        cursor = max(start, 1)
        if cursor > end:
            return
        ahead: asyncio.Task[list[asyncpg.Record]] | None = asyncio.ensure_future(fetch(cursor))
        times = convert.TimeText()
        try:
            while ahead is not None:
                rows = await ahead
                ahead = None
                if len(rows) == batch_size and rows[-1]["sequence_number"] < end:
                    ahead = asyncio.ensure_future(fetch(rows[-1]["sequence_number"] + 1))
                for row in rows:
                    yield convert.stored_event(row), convert.joined_receipt(row, times)
        finally:
            # A consumer that stops early (an error, a closed generator) leaves no query
            # behind.
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead


async def _entity_rows_within(
    conn: asyncpg.pool.PoolConnectionProxy[Any],
    args: tuple[uuid.UUID, uuid.UUID, str, str],
    offset: int,
    limit: int,
    max_bytes: int,
) -> list[asyncpg.Record]:
    cut = PageCut(max_bytes)
    after, skip = 0, max(offset, 0)
    while size := cut.next_chunk(max(limit, 0)):
        sizes = await conn.fetch(_ENTITY_SIZES_SQL, *args, after, skip, size)
        skip = 0
        if not cut.take((r["n"], r["b"]) for r in sizes) or len(sizes) < size:
            break
        after = sizes[-1]["n"]
    if cut.first is None or cut.last is None:
        return []
    rows: list[asyncpg.Record] = await conn.fetch(_ENTITY_SPAN_SQL, *args, cut.first, cut.last)
    return rows

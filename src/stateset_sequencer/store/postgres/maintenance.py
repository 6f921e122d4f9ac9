"""Recovery and maintenance queries for PostgreSQL.

The read functions take any connection or pool, so that the backup tooling can run them
inside the exported snapshot ``pg_dump`` reads from: the manifest then describes exactly
the rows that were dumped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from ...ves.codec import format_rfc3339, u64
from ...ves.jsontext import dump_json
from ...ves.signing import Receipt
from ..base import (
    AuditEntry,
    ConcurrentWriteError,
    CounterState,
    SequenceGap,
    StoredEvent,
    StreamKey,
    StreamSummary,
)

# The assembly of summaries and the table-name rule are dialect-free; one copy serves both.
from ..sqlite.maintenance import OCCUPIED_TABLES, checked_table, summaries
from . import convert
from .errors import mapped

if TYPE_CHECKING:
    import asyncpg.pool

    Conn = asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    Executor = Conn | asyncpg.Pool[asyncpg.Record]

EventWithReceipt = tuple[StoredEvent, Receipt | None]

_PAGE_SQL = (
    f"SELECT {convert.EVENT_SELECT}, {convert.RECEIPT_SELECT} FROM ves_events e "  # noqa: S608
    "LEFT JOIN ves_sequencer_receipts r ON r.event_id = e.event_id "
    "WHERE e.tenant_id = $1 AND e.store_id = $2 AND e.sequence_number BETWEEN $3 AND $4 "
    "ORDER BY e.sequence_number LIMIT $5"
)
_FILTER = "($1::uuid IS NULL OR (tenant_id = $1 AND store_id = $2))"
_COUNTER_STATES_SQL = f"""
WITH agg AS (
    SELECT tenant_id, store_id, MAX(sequence_number) AS max_seq, COUNT(*) AS n
    FROM ves_events WHERE {_FILTER} GROUP BY tenant_id, store_id
), keys AS (
    SELECT tenant_id, store_id FROM sequence_counters WHERE {_FILTER}
    UNION SELECT tenant_id, store_id FROM agg
)
SELECT k.tenant_id, k.store_id, c.current_sequence, COALESCE(a.max_seq, 0) AS max_seq,
       COALESCE(a.n, 0) AS n
FROM keys k
LEFT JOIN sequence_counters c ON c.tenant_id = k.tenant_id AND c.store_id = k.store_id
LEFT JOIN agg a ON a.tenant_id = k.tenant_id AND a.store_id = k.store_id
ORDER BY k.tenant_id, k.store_id
"""  # noqa: S608 - fixed text
# The same LAG query as on SQLite (see there): a step of more than one is a gap.
_GAPS_SQL = f"""
SELECT tenant_id, store_id, prev + 1 AS first_missing, sequence_number - 1 AS last_missing
FROM (
    SELECT tenant_id, store_id, sequence_number,
           COALESCE(LAG(sequence_number) OVER (
               PARTITION BY tenant_id, store_id ORDER BY sequence_number), 0) AS prev
    FROM ves_events WHERE {_FILTER}
) s WHERE sequence_number > prev + 1
ORDER BY tenant_id, store_id, sequence_number
"""  # noqa: S608 - fixed text
_COMMITMENTS_SQL = (
    "SELECT tenant_id, store_id, sequence_start, sequence_end, merkle_root, new_state_root "
    "FROM ves_commitments ORDER BY tenant_id, store_id, sequence_start"
)
_LOCK_COUNTER_SQL = (
    "SELECT current_sequence FROM sequence_counters "
    "WHERE tenant_id = $1 AND store_id = $2 FOR UPDATE"
)
_UPSERT_COUNTER_SQL = (
    "INSERT INTO sequence_counters (tenant_id, store_id, current_sequence) VALUES ($1, $2, $3) "
    "ON CONFLICT (tenant_id, store_id) "
    "DO UPDATE SET current_sequence = EXCLUDED.current_sequence, updated_at = NOW()"
)
_AUDIT_SQL = (
    "INSERT INTO audit_log (id, timestamp, action, actor, actor_type, tenant_id, "
    "resource_type, resource_id, request_id, ip_address, user_agent, details, success, "
    "error_message) VALUES "
    "($1, COALESCE($2, NOW()), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14)"
)


def _filter_args(stream: StreamKey | None) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    return (None, None) if stream is None else (stream.tenant_id, stream.store_id)


# --- reading the log with receipts ------------------------------------------------------------


async def paged(
    reader: Executor, stream: StreamKey, start: int, end: int, batch_size: int
) -> AsyncIterator[EventWithReceipt]:
    """Walk ``start..=end`` one short query per page, holding no connection in between.

    The next page's query is sent before the current page is decoded and handed out, so
    the server reads while this process decodes and the consumer works (a verifier keeps
    the CPU busy; waiting for each page in turn left it idle for every round trip)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")

    async def fetch(cursor: int) -> list[asyncpg.Record]:
        with mapped():
            return await reader.fetch(
                _PAGE_SQL, stream.tenant_id, stream.store_id, cursor, end, batch_size
            )

    cursor = max(start, 1)
    if cursor > end:
        return
    ahead: asyncio.Task[list[asyncpg.Record]] | None = asyncio.ensure_future(fetch(cursor))
    times = _TimeText()
    try:
        while ahead is not None:
            rows = await ahead
            ahead = None
            if len(rows) == batch_size and rows[-1]["sequence_number"] < end:
                ahead = asyncio.ensure_future(fetch(rows[-1]["sequence_number"] + 1))
            for row in rows:
                yield convert.stored_event(row), _receipt(row, times)
    finally:
        # A consumer that stops early (an error, a closed generator) leaves no query behind.
        if ahead is not None:
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ahead


class _TimeText:
    """``format_rfc3339`` remembering its last answer: one ingest batch shares one
    ``sequenced_at``, so a page of receipts repeats a handful of instants, and strftime
    was a good part of the cost of decoding a receipt."""

    __slots__ = ("_moment", "_text")

    def __init__(self) -> None:
        self._moment: datetime | None = None
        self._text = ""

    def __call__(self, moment: datetime) -> str:
        # Equal instants format alike whatever their zone: the text is in UTC.
        if moment != self._moment:
            self._text = format_rfc3339(moment)
            self._moment = moment
        return self._text


def _receipt(row: asyncpg.Record, times: _TimeText) -> Receipt | None:
    # convert.receipt with the remembered time text; the fields are the same.
    if row["r_event_id"] is None:
        return None
    signature = row["r_sequencer_signature"]
    return Receipt(
        sequencer_id=row["r_sequencer_id"],
        event_id=row["r_event_id"],
        sequence_number=row["r_sequence_number"],
        sequenced_at=times(row["r_sequenced_at"]),
        receipt_hash=bytes(row["r_receipt_hash"]),
        signature_alg=row["r_signature_alg"],
        sequencer_signature=bytes(signature) if signature is not None else b"",
        sequencer_key_version=row["r_sequencer_key_version"],
    )


# --- counters and gaps ------------------------------------------------------------------------


async def counter_states(conn: Executor, stream: StreamKey | None) -> list[CounterState]:
    rows = await conn.fetch(_COUNTER_STATES_SQL, *_filter_args(stream))
    return [
        CounterState(
            stream=StreamKey(r["tenant_id"], r["store_id"]),
            counter=None if r["current_sequence"] is None else int(r["current_sequence"]),
            max_sequence=int(r["max_seq"]),
            event_count=int(r["n"]),
        )
        for r in rows
    ]


async def sequence_gaps(conn: Executor, stream: StreamKey | None) -> list[SequenceGap]:
    rows = await conn.fetch(_GAPS_SQL, *_filter_args(stream))
    return [
        SequenceGap(
            StreamKey(r["tenant_id"], r["store_id"]),
            int(r["first_missing"]),
            int(r["last_missing"]),
        )
        for r in rows
    ]


async def set_counter_to_max(
    conn: Conn,
    stream: StreamKey,
    expected: CounterState,
    audit: AuditEntry,
) -> CounterState:
    async with conn.transaction(isolation="read_committed"):
        # The row lock every append takes first: with it held, no event can be added to
        # the stream until this commits, so max(sequence_number) read next stays true.
        await conn.fetchval(_LOCK_COUNTER_SQL, stream.tenant_id, stream.store_id)
        found = await counter_states(conn, stream)
        current = found[0] if found else CounterState(stream, None, 0, 0)
        if current != expected:
            raise ConcurrentWriteError(
                f"stream {stream.tenant_id}/{stream.store_id} changed since it was inspected "
                f"(now counter {current.counter}, max {current.max_sequence}); run again"
            )
        # With no counter row there was nothing to lock: an append creating one meanwhile
        # makes this upsert wait on, then overwrite, a row whose value it re-checks below.
        await conn.execute(
            _UPSERT_COUNTER_SQL, stream.tenant_id, stream.store_id, current.max_sequence
        )
        after = (await counter_states(conn, stream))[0]
        if after.max_sequence != current.max_sequence:
            raise ConcurrentWriteError(
                f"stream {stream.tenant_id}/{stream.store_id} received events during the "
                "repair; nothing was changed, run again"
            )
        await conn.execute(
            _AUDIT_SQL,
            audit.id,
            audit.timestamp,
            audit.action,
            audit.actor,
            audit.actor_type,
            audit.tenant_id,
            audit.resource_type,
            audit.resource_id,
            audit.request_id,
            audit.ip_address,
            audit.user_agent,
            dump_json(dict(audit.details)),
            audit.success,
            audit.error_message,
        )
        return after


# --- manifests: summaries, counts, emptiness --------------------------------------------------


async def _table_exists(conn: Executor, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def stream_summaries(conn: Conn) -> list[StreamSummary]:
    """Call inside a REPEATABLE READ (or an exported snapshot) for one consistent view."""
    states = {s.stream: s for s in await counter_states(conn, None)}
    digests: dict[StreamKey, Any] = {}
    counts: dict[StreamKey, int] = {}
    last: dict[StreamKey, tuple[int, bytes]] = {}
    if await _table_exists(conn, "ves_commitments"):
        # A cursor keeps memory bounded however many commitments there are.
        async for r in conn.cursor(_COMMITMENTS_SQL, prefetch=1000):
            key = StreamKey(r["tenant_id"], r["store_id"])
            digest = digests.setdefault(key, hashlib.sha256())
            digest.update(
                u64(int(r["sequence_start"]))
                + u64(int(r["sequence_end"]))
                + bytes(r["merkle_root"])
                + bytes(r["new_state_root"])
            )
            counts[key] = counts.get(key, 0) + 1
            last[key] = (int(r["sequence_end"]), bytes(r["new_state_root"]))
    return summaries(states, digests, counts, last)


async def row_counts(conn: Executor, tables: Sequence[str]) -> dict[str, int]:
    names = [checked_table(t) for t in tables]
    counts: dict[str, int] = {}
    for name in names:
        if await _table_exists(conn, name):
            counts[name] = int(await conn.fetchval(f'SELECT count(*) FROM "{name}"'))  # noqa: S608
    return counts


async def is_empty(conn: Executor) -> bool:
    for name in OCCUPIED_TABLES:
        if await _table_exists(conn, name) and (
            await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{name}")')  # noqa: S608
        ):
            return False
    return True

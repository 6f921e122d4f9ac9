"""Recovery and maintenance queries on SQLite, as jobs run on a connection's thread, and
the :class:`Maintenance` port over them.

The read jobs take any ``sqlite3.Connection``: the store's reader, or a read-only
connection on a snapshot file, so that a manifest is computed from exactly the bytes that
were copied. They index rows by name and so need ``sqlite3.Row``.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from ..ports import Maintenance
from ..records import AuditEntry, CounterState, SequenceGap, StreamKey, StreamSummary
from ..rows import (
    COMMITMENT_DIGEST_SQL,
    COUNTER_STATES_SQL,
    GAPS_SQL,
    counter_state,
    sequence_gap,
    time_to_text,
    unchanged_state,
)
from ..summaries import OCCUPIED_TABLES, SummaryBuilder, checked_table
from .audit import append_in_transaction
from .worker import Connections, immediate, snapshot

# A stream filter that is off when its first parameter is NULL; pushed into every CTE so
# that a one-stream query reads that stream's index range only.
_FILTER = "(:tenant IS NULL OR (tenant_id = :tenant AND store_id = :store))"
_COUNTER_STATES = COUNTER_STATES_SQL.format(filter=_FILTER)
_GAPS = GAPS_SQL.format(filter=_FILTER)


def _filter_params(stream: StreamKey | None) -> dict[str, str | None]:
    if stream is None:
        return {"tenant": None, "store": None}
    return {"tenant": str(stream.tenant_id), "store": str(stream.store_id)}


def _stream(tenant: str, store: str) -> StreamKey:
    return StreamKey(uuid.UUID(tenant), uuid.UUID(store))


def counter_states(conn: sqlite3.Connection, stream: StreamKey | None) -> list[CounterState]:
    rows = conn.execute(_COUNTER_STATES, _filter_params(stream)).fetchall()
    return [counter_state(_stream(r["tenant_id"], r["store_id"]), r) for r in rows]


def sequence_gaps(conn: sqlite3.Connection, stream: StreamKey | None) -> list[SequenceGap]:
    rows = conn.execute(_GAPS, _filter_params(stream)).fetchall()
    return [sequence_gap(_stream(r["tenant_id"], r["store_id"]), r) for r in rows]


def set_counter_to_max(
    conn: sqlite3.Connection, stream: StreamKey, expected: CounterState, audit: AuditEntry
) -> CounterState:
    # BEGIN IMMEDIATE takes the database write lock that every append also needs, so the
    # state compared below cannot change before the commit.
    with immediate(conn):
        current = unchanged_state(stream, counter_states(conn, stream), expected)
        now = time_to_text(audit.timestamp) if audit.timestamp is not None else None
        conn.execute(
            "INSERT INTO sequence_counters (tenant_id, store_id, current_sequence, updated_at) "
            "VALUES (:tenant, :store, :seq, COALESCE(:now, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))) "
            "ON CONFLICT (tenant_id, store_id) DO UPDATE SET "
            "current_sequence = excluded.current_sequence, updated_at = excluded.updated_at",
            {**_filter_params(stream), "seq": current.max_sequence, "now": now},
        )
        append_in_transaction(conn, audit)
        return counter_states(conn, stream)[0]


def stream_summaries(conn: sqlite3.Connection) -> list[StreamSummary]:
    # One read transaction: counters and commitments from the same state.
    builder = SummaryBuilder()
    with snapshot(conn):
        states = counter_states(conn, None)
        if _table_exists(conn, "ves_commitments"):
            for r in conn.execute(COMMITMENT_DIGEST_SQL):
                builder.add_commitment(_stream(r["tenant_id"], r["store_id"]), r)
    return builder.build(states)


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def row_counts(conn: sqlite3.Connection, tables: Sequence[str]) -> dict[str, int]:
    names = [checked_table(t) for t in tables]
    counts: dict[str, int] = {}
    with snapshot(conn):
        for name in names:
            if _table_exists(conn, name):
                counts[name] = int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])  # noqa: S608
    return counts


def is_empty(conn: sqlite3.Connection) -> bool:
    for name in OCCUPIED_TABLES:
        if (
            _table_exists(conn, name)
            and conn.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone() is not None  # noqa: S608
        ):
            return False
    return True


class SqliteMaintenance(Connections, Maintenance):
    async def counter_states(self, stream: StreamKey | None = None) -> list[CounterState]:
        return await self._read(counter_states, stream)

    async def sequence_gaps(self, stream: StreamKey | None = None) -> list[SequenceGap]:
        return await self._read(sequence_gaps, stream)

    async def set_counter_to_max(
        self, stream: StreamKey, expected: CounterState, audit: AuditEntry
    ) -> CounterState:
        stored = (
            audit if audit.timestamp is not None else replace(audit, timestamp=datetime.now(UTC))
        )
        return await self._write(set_counter_to_max, stream, expected, stored)

    async def stream_summaries(self) -> list[StreamSummary]:
        return await self._read(stream_summaries)

    async def row_counts(self, tables: Sequence[str]) -> dict[str, int]:
        return await self._read(row_counts, tables)

    async def is_empty(self) -> bool:
        return await self._read(is_empty)

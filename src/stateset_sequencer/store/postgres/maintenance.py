"""Recovery and maintenance queries on PostgreSQL, and the :class:`Maintenance` port.

The read functions take any connection or pool, so that the snapshot code can run them
inside the exported snapshot ``pg_dump`` reads from: the manifest then describes exactly
the rows that were dumped.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ConcurrentWriteError
from ..ports import Maintenance
from ..records import AuditEntry, CounterState, SequenceGap, StreamKey, StreamSummary
from ..rows import (
    COMMITMENT_DIGEST_SQL,
    COUNTER_STATES_SQL,
    GAPS_SQL,
    counter_state,
    sequence_gap,
    unchanged_state,
)
from ..summaries import OCCUPIED_TABLES, SummaryBuilder, checked_table
from .append import LOCK_COUNTERS_SQL
from .audit import append_in_transaction
from .errors import mapped
from .pool import Pools

if TYPE_CHECKING:
    from .pool import Conn, Executor

# One text for all streams and one naming the stream: a filter that may or may not name a
# tenant ("$1 IS NULL OR tenant_id = $1") would send a one-stream query to every shard.
_ALL = "TRUE"
_ONE = "tenant_id = $1 AND store_id = $2"
_COUNTER_STATES_SQL = {
    False: COUNTER_STATES_SQL.format(filter=_ALL),
    True: COUNTER_STATES_SQL.format(filter=_ONE),
}
_GAPS_SQL = {False: GAPS_SQL.format(filter=_ALL), True: GAPS_SQL.format(filter=_ONE)}
_UPSERT_COUNTER_SQL = (
    "INSERT INTO sequence_counters (tenant_id, store_id, current_sequence) VALUES ($1, $2, $3) "
    "ON CONFLICT (tenant_id, store_id) "
    "DO UPDATE SET current_sequence = EXCLUDED.current_sequence, updated_at = EXCLUDED.updated_at"
)


def _filter_args(stream: StreamKey | None) -> tuple[uuid.UUID, ...]:
    return () if stream is None else (stream.tenant_id, stream.store_id)


async def counter_states(conn: Executor, stream: StreamKey | None) -> list[CounterState]:
    rows = await conn.fetch(_COUNTER_STATES_SQL[stream is not None], *_filter_args(stream))
    return [counter_state(StreamKey(r["tenant_id"], r["store_id"]), r) for r in rows]


async def sequence_gaps(conn: Executor, stream: StreamKey | None) -> list[SequenceGap]:
    rows = await conn.fetch(_GAPS_SQL[stream is not None], *_filter_args(stream))
    return [sequence_gap(StreamKey(r["tenant_id"], r["store_id"]), r) for r in rows]


async def set_counter_to_max(
    conn: Conn, stream: StreamKey, expected: CounterState, audit: AuditEntry
) -> CounterState:
    async with conn.transaction(isolation="read_committed"):
        # The row lock every append takes first: with it held, no event can be added to
        # the stream until this commits, so max(sequence_number) read next stays true.
        await conn.fetch(LOCK_COUNTERS_SQL, stream.tenant_id, [stream.store_id])
        current = unchanged_state(stream, await counter_states(conn, stream), expected)
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
        await append_in_transaction(conn, audit)
        return after


async def _table_exists(conn: Executor, name: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def stream_summaries(conn: Conn) -> list[StreamSummary]:
    """Call inside a REPEATABLE READ (or an exported snapshot) for one consistent view."""
    states = await counter_states(conn, None)
    builder = SummaryBuilder()
    if await _table_exists(conn, "ves_commitments"):
        # A cursor keeps memory bounded however many commitments there are.
        async for r in conn.cursor(COMMITMENT_DIGEST_SQL, prefetch=1000):
            builder.add_commitment(StreamKey(r["tenant_id"], r["store_id"]), r)
    return builder.build(states)


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


class PostgresMaintenance(Pools, Maintenance):
    async def counter_states(self, stream: StreamKey | None = None) -> list[CounterState]:
        with mapped():
            return await counter_states(self._reader, stream)

    async def sequence_gaps(self, stream: StreamKey | None = None) -> list[SequenceGap]:
        with mapped():
            return await sequence_gaps(self._reader, stream)

    async def set_counter_to_max(
        self, stream: StreamKey, expected: CounterState, audit: AuditEntry
    ) -> CounterState:
        with mapped():
            async with self._pool.acquire() as conn:
                return await set_counter_to_max(conn, stream, expected, audit)

    async def stream_summaries(self) -> list[StreamSummary]:
        with mapped():
            async with (
                self._reader.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await stream_summaries(conn)

    async def row_counts(self, tables: Sequence[str]) -> dict[str, int]:
        with mapped():
            async with (
                self._reader.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await row_counts(conn, tables)

    async def is_empty(self) -> bool:
        with mapped():
            return await is_empty(self._pool)

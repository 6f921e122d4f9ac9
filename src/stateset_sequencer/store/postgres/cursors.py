"""Agent cursors on PostgreSQL: the :class:`AgentCursors` port, on the primary pool (an
acknowledgement must read back at once, and the head it is checked against is the one
the writers move).

An advance reads the stream's counter ``FOR SHARE``: acknowledgements of one stream run
side by side, while a writer that would move the counter (ingest, a counter repair) waits
the few statements until the acknowledgement commits, so the head it was checked against
holds until then. Nothing else is locked first, so no lock order can cycle.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from ..errors import AheadOfHeadError
from ..ports import AgentCursors
from ..records import AgentCursor, CursorPosition, StreamKey
from ..rows import AGENT_CURSORS, check_cursor_sequence, column_list
from . import convert
from .errors import mapped
from .pool import Pools, one

_COLUMNS = column_list(AGENT_CURSORS.names)
_SELECT = f"SELECT {_COLUMNS} FROM ves_agent_cursors"  # noqa: S608 - fixed names
_GET_SQL = f"{_SELECT} WHERE tenant_id = $1 AND store_id = $2 AND agent_id = $3"
_HEAD_SQL = "SELECT current_sequence FROM sequence_counters WHERE tenant_id = $1 AND store_id = $2"
_LOCKED_HEAD_SQL = f"{_HEAD_SQL} FOR SHARE"
# Both values from EXCLUDED or the row itself: GREATEST keeps the cursor from moving back
# on a late or retried acknowledgement, and updated_at from moving back when two nodes'
# clocks disagree.
_UPSERT_SQL = (
    f"INSERT INTO ves_agent_cursors ({_COLUMNS}) "  # noqa: S608 - fixed names
    "VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (tenant_id, store_id, agent_id) DO UPDATE SET "
    "acknowledged_sequence = GREATEST(ves_agent_cursors.acknowledged_sequence, "
    "EXCLUDED.acknowledged_sequence), "
    "updated_at = GREATEST(ves_agent_cursors.updated_at, EXCLUDED.updated_at) "
    f"RETURNING {_COLUMNS}"
)
_LIST_SQL = (
    f"{_SELECT} WHERE ($1::uuid IS NULL OR tenant_id = $1) "
    "AND ($2::timestamptz IS NULL OR updated_at >= $2) "
    "ORDER BY updated_at DESC, tenant_id, store_id, agent_id LIMIT $3"
)


def _head(value: object) -> int:
    return 0 if value is None else int(str(value))


class PostgresAgentCursors(Pools, AgentCursors):
    async def get_cursor(self, stream: StreamKey, agent_id: uuid.UUID) -> AgentCursor | None:
        with mapped():
            row = await self._pool.fetchrow(_GET_SQL, stream.tenant_id, stream.store_id, agent_id)
        return None if row is None else convert.record(AGENT_CURSORS, row)

    async def cursor_position(self, stream: StreamKey, agent_id: uuid.UUID) -> CursorPosition:
        with mapped():
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                row = await conn.fetchrow(_GET_SQL, stream.tenant_id, stream.store_id, agent_id)
                head = await conn.fetchval(_HEAD_SQL, stream.tenant_id, stream.store_id)
        cursor = None if row is None else convert.record(AGENT_CURSORS, row)
        return CursorPosition(cursor, _head(head))

    async def advance_cursor(
        self, stream: StreamKey, agent_id: uuid.UUID, sequence: int, *, now: datetime
    ) -> CursorPosition:
        check_cursor_sequence(sequence)
        record = AgentCursor(stream.tenant_id, stream.store_id, agent_id, sequence, now)
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                head = _head(
                    await conn.fetchval(_LOCKED_HEAD_SQL, stream.tenant_id, stream.store_id)
                )
                if sequence > head:
                    raise AheadOfHeadError(sequence, head)
                row = await conn.fetchrow(_UPSERT_SQL, *convert.params(AGENT_CURSORS, record))
        return CursorPosition(convert.record(AGENT_CURSORS, one(row)), head)

    async def list_cursors(
        self,
        tenant_id: uuid.UUID | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AgentCursor]:
        with mapped():
            rows = await self._pool.fetch(_LIST_SQL, tenant_id, since, limit)
        return [convert.record(AGENT_CURSORS, row) for row in rows]

"""Agent cursors on SQLite: jobs run on a connection's thread and the
:class:`AgentCursors` port over them.

The one writer connection serialises every acknowledgement and every append, so the head
read inside the ``BEGIN IMMEDIATE`` of an advance cannot move before it commits.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime

from ..errors import AheadOfHeadError
from ..ports import AgentCursors
from ..records import AgentCursor, CursorPosition, StreamKey
from ..rows import AGENT_CURSORS, check_cursor_sequence, column_list, time_to_text
from . import convert
from .worker import Connections, immediate, snapshot

_COLUMNS = column_list(AGENT_CURSORS.names)
_SELECT = f"SELECT {_COLUMNS} FROM ves_agent_cursors"  # noqa: S608 - fixed names
_GET = f"{_SELECT} WHERE tenant_id = ? AND store_id = ? AND agent_id = ?"
_HEAD = "SELECT current_sequence FROM sequence_counters WHERE tenant_id = ? AND store_id = ?"
# CASE rather than SQLite's two-argument MAX(): the schema guard admits no function but a
# few immutable ones in an upsert's update clause. Times are fixed-width UTC text, so text
# order is time order: updated_at never moves back when two writers' clocks disagree.
_UPSERT = (
    f"INSERT INTO ves_agent_cursors ({_COLUMNS}) "  # noqa: S608 - fixed names
    f"VALUES ({convert.placeholders(len(AGENT_CURSORS.names))}) "
    "ON CONFLICT (tenant_id, store_id, agent_id) DO UPDATE SET "
    "acknowledged_sequence = CASE "
    "WHEN excluded.acknowledged_sequence > ves_agent_cursors.acknowledged_sequence "
    "THEN excluded.acknowledged_sequence ELSE ves_agent_cursors.acknowledged_sequence END, "
    "updated_at = CASE WHEN excluded.updated_at > ves_agent_cursors.updated_at "
    "THEN excluded.updated_at ELSE ves_agent_cursors.updated_at END"
)


def _key(stream: StreamKey, agent_id: uuid.UUID) -> tuple[str, str, str]:
    return str(stream.tenant_id), str(stream.store_id), str(agent_id)


def _head(conn: sqlite3.Connection, stream: StreamKey) -> int:
    row = conn.execute(_HEAD, (str(stream.tenant_id), str(stream.store_id))).fetchone()
    return 0 if row is None else int(row["current_sequence"])


def get_cursor(
    conn: sqlite3.Connection, stream: StreamKey, agent_id: uuid.UUID
) -> AgentCursor | None:
    row = conn.execute(_GET, _key(stream, agent_id)).fetchone()
    return None if row is None else convert.record(AGENT_CURSORS, row)


def cursor_position(
    conn: sqlite3.Connection, stream: StreamKey, agent_id: uuid.UUID
) -> CursorPosition:
    with snapshot(conn):
        return CursorPosition(get_cursor(conn, stream, agent_id), _head(conn, stream))


def advance_cursor(
    conn: sqlite3.Connection, stream: StreamKey, agent_id: uuid.UUID, sequence: int, now: datetime
) -> CursorPosition:
    with immediate(conn):
        head = _head(conn, stream)
        if sequence > head:
            raise AheadOfHeadError(sequence, head)
        row = AgentCursor(stream.tenant_id, stream.store_id, agent_id, sequence, now)
        conn.execute(_UPSERT, convert.params(AGENT_CURSORS, row))
        return CursorPosition(get_cursor(conn, stream, agent_id), head)


def list_cursors(
    conn: sqlite3.Connection, tenant_id: uuid.UUID | None, since: datetime | None, limit: int
) -> list[AgentCursor]:
    tenant = None if tenant_id is None else str(tenant_id)
    after = None if since is None else time_to_text(since)
    rows = conn.execute(
        f"{_SELECT} WHERE (? IS NULL OR tenant_id = ?) AND (? IS NULL OR updated_at >= ?) "
        "ORDER BY updated_at DESC, tenant_id, store_id, agent_id LIMIT ?",
        (tenant, tenant, after, after, limit),
    ).fetchall()
    return [convert.record(AGENT_CURSORS, r) for r in rows]


class SqliteAgentCursors(Connections, AgentCursors):
    async def get_cursor(self, stream: StreamKey, agent_id: uuid.UUID) -> AgentCursor | None:
        return await self._read(get_cursor, stream, agent_id)

    async def cursor_position(self, stream: StreamKey, agent_id: uuid.UUID) -> CursorPosition:
        return await self._read(cursor_position, stream, agent_id)

    async def advance_cursor(
        self, stream: StreamKey, agent_id: uuid.UUID, sequence: int, *, now: datetime
    ) -> CursorPosition:
        check_cursor_sequence(sequence)
        return await self._write(advance_cursor, stream, agent_id, sequence, now)

    async def list_cursors(
        self,
        tenant_id: uuid.UUID | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AgentCursor]:
        return await self._read(list_cursors, tenant_id, since, limit)

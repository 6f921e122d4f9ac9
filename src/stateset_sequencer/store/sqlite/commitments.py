"""Commitment rows on SQLite: jobs run on a connection's thread and the
:class:`Commitments` port over them."""

from __future__ import annotations

import sqlite3
import uuid

from ..ports import Commitments
from ..records import CommitmentRow, StreamKey
from ..rows import COMMITMENT_COLUMNS, COMMITMENTS, column_list
from . import convert
from .worker import Connections, immediate

_INSERT = (
    f"INSERT INTO ves_commitments ({column_list(COMMITMENT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({convert.placeholders(len(COMMITMENT_COLUMNS))})"
)
_SELECT = f"SELECT {column_list(COMMITMENT_COLUMNS)} FROM ves_commitments"  # noqa: S608


def put_commitment(conn: sqlite3.Connection, row: CommitmentRow) -> None:
    with immediate(conn):
        conn.execute(_INSERT, convert.params(COMMITMENTS, row))


def get_commitment(conn: sqlite3.Connection, batch_id: uuid.UUID) -> CommitmentRow | None:
    row = conn.execute(f"{_SELECT} WHERE batch_id = ?", (str(batch_id),)).fetchone()
    return None if row is None else convert.record(COMMITMENTS, row)


def list_commitments(conn: sqlite3.Connection, stream: StreamKey) -> list[CommitmentRow]:
    rows = conn.execute(
        f"{_SELECT} WHERE tenant_id = ? AND store_id = ? ORDER BY sequence_start",
        (str(stream.tenant_id), str(stream.store_id)),
    ).fetchall()
    return [convert.record(COMMITMENTS, r) for r in rows]


class SqliteCommitments(Connections, Commitments):
    async def put_commitment(self, row: CommitmentRow) -> None:
        await self._write(put_commitment, row)

    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None:
        return await self._read(get_commitment, batch_id)

    async def list_commitments(self, stream: StreamKey) -> list[CommitmentRow]:
        return await self._read(list_commitments, stream)

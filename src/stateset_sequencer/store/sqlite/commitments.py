"""Commitment rows on SQLite: jobs run on a connection's thread and the
:class:`Commitments` port over them."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime

from ..ports import Commitments
from ..records import AnchorOutcome, CommitBacklog, CommitmentRow, LeafInput, StreamKey
from ..rows import (
    ANCHOR_COLUMNS,
    COMMIT_BACKLOG_SQL,
    COMMITMENT_COLUMNS,
    COMMITMENTS,
    PENDING_HEADS_SQL,
    anchored,
    column_list,
    time_from_text,
    time_to_text,
)
from . import convert
from .worker import Connections, immediate

_INSERT = (
    f"INSERT INTO ves_commitments ({column_list(COMMITMENT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({convert.placeholders(len(COMMITMENT_COLUMNS))})"
)
_SELECT = f"SELECT {column_list(COMMITMENT_COLUMNS)} FROM ves_commitments"  # noqa: S608
_STREAM = "tenant_id = ? AND store_id = ?"
_ANCHORED = {None: "", True: " AND chain_tx_hash IS NOT NULL", False: " AND chain_tx_hash IS NULL"}
_SET_ANCHOR = (
    "UPDATE ves_commitments SET "  # noqa: S608 - fixed names
    + ", ".join(f"{name} = ?" for name in ANCHOR_COLUMNS)
    + " WHERE tenant_id = ? AND batch_id = ?"
)
_LEAF_INPUTS_SQL = (
    "SELECT sequence_number, event_signing_hash, agent_signature FROM ves_events "  # noqa: S608
    f"WHERE {_STREAM} AND sequence_number BETWEEN ? AND ? ORDER BY sequence_number"
)
_ANCHOR_INDEXES = [COMMITMENT_COLUMNS.index(name) for name in ANCHOR_COLUMNS]


def _key(stream: StreamKey) -> tuple[str, str]:
    return str(stream.tenant_id), str(stream.store_id)


def _one(conn: sqlite3.Connection, where: str, args: tuple[object, ...]) -> CommitmentRow | None:
    row = conn.execute(f"{_SELECT} WHERE {where}", args).fetchone()
    return None if row is None else convert.record(COMMITMENTS, row)


def put_commitment(conn: sqlite3.Connection, row: CommitmentRow) -> None:
    with immediate(conn):
        conn.execute(_INSERT, convert.params(COMMITMENTS, row))


def get_commitment(conn: sqlite3.Connection, batch_id: uuid.UUID) -> CommitmentRow | None:
    return _one(conn, "batch_id = ?", (str(batch_id),))


def list_commitments(
    conn: sqlite3.Connection, stream: StreamKey, anchored_only: bool | None, limit: int | None
) -> list[CommitmentRow]:
    sql = f"{_SELECT} WHERE {_STREAM}{_ANCHORED[anchored_only]} ORDER BY sequence_start"
    args: tuple[object, ...] = _key(stream)
    if limit is not None:
        sql, args = sql + " LIMIT ?", (*args, max(limit, 0))
    return [convert.record(COMMITMENTS, r) for r in conn.execute(sql, args).fetchall()]


def last_commitment(conn: sqlite3.Connection, stream: StreamKey) -> CommitmentRow | None:
    return _one(conn, f"{_STREAM} ORDER BY sequence_end DESC LIMIT 1", _key(stream))


def commitment_starting_at(
    conn: sqlite3.Connection, stream: StreamKey, start: int
) -> CommitmentRow | None:
    return _one(conn, f"{_STREAM} AND sequence_start = ?", (*_key(stream), start))


def commitment_covering(
    conn: sqlite3.Connection, stream: StreamKey, sequence: int
) -> CommitmentRow | None:
    # The commitment starting at or below it with the highest start is the only candidate
    # (ranges never overlap); it covers the sequence when it also ends at or above it.
    found = _one(
        conn,
        f"{_STREAM} AND sequence_start <= ? ORDER BY sequence_start DESC LIMIT 1",
        (*_key(stream), sequence),
    )
    return found if found is not None and found.sequence_end >= sequence else None


def leaf_inputs(
    conn: sqlite3.Connection, stream: StreamKey, start: int, end: int
) -> list[LeafInput]:
    rows = conn.execute(
        _LEAF_INPUTS_SQL,
        (*_key(stream), start, end),
    ).fetchall()
    return [LeafInput(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]


def pending_commitments(conn: sqlite3.Connection, limit: int) -> list[CommitmentRow]:
    rows = conn.execute(
        f"{_SELECT} WHERE chain_tx_hash IS NULL "
        "ORDER BY committed_at, tenant_id, store_id, sequence_start LIMIT ?",
        (max(limit, 0),),
    ).fetchall()
    return [convert.record(COMMITMENTS, r) for r in rows]


_PENDING_HEADS_SQL = PENDING_HEADS_SQL.format(
    columns=", ".join(f"c.{name}" for name in COMMITMENT_COLUMNS), P1="?"
)


def pending_heads(conn: sqlite3.Connection, limit: int) -> list[CommitmentRow]:
    rows = conn.execute(_PENDING_HEADS_SQL, (max(limit, 0),)).fetchall()
    return [convert.record(COMMITMENTS, r) for r in rows]


def record_anchor(
    conn: sqlite3.Connection,
    batch_id: uuid.UUID,
    chain_id: int,
    chain_tx_hash: bytes,
    chain_block_number: int | None,
    anchored_at: datetime | None,
) -> tuple[AnchorOutcome, CommitmentRow | None]:
    with immediate(conn):
        row = get_commitment(conn, batch_id)
        if row is None:
            return AnchorOutcome.NOT_FOUND, None
        outcome, after = anchored(row, chain_id, chain_tx_hash, chain_block_number, anchored_at)
        if outcome is AnchorOutcome.RECORDED:
            encoded = convert.params(COMMITMENTS, after)
            values = [encoded[i] for i in _ANCHOR_INDEXES]
            conn.execute(_SET_ANCHOR, (*values, str(after.tenant_id), str(after.batch_id)))
        return outcome, after


def unconfirmed_anchors(conn: sqlite3.Connection, limit: int) -> list[CommitmentRow]:
    rows = conn.execute(
        f"{_SELECT} WHERE chain_tx_hash IS NOT NULL AND anchored_at IS NULL "
        "ORDER BY chain_block_number, committed_at, tenant_id, store_id, sequence_start "
        "LIMIT ?",
        (max(limit, 0),),
    ).fetchall()
    return [convert.record(COMMITMENTS, r) for r in rows]


def _same_anchor(row: CommitmentRow) -> tuple[object, ...]:
    assert row.chain_tx_hash is not None, "only an anchored row is confirmed or cleared"
    return (str(row.tenant_id), str(row.batch_id), bytes(row.chain_tx_hash))


def confirm_anchor(conn: sqlite3.Connection, row: CommitmentRow, anchored_at: datetime) -> bool:
    with immediate(conn):
        cur = conn.execute(
            "UPDATE ves_commitments SET anchored_at = ? WHERE tenant_id = ? AND batch_id = ? "
            "AND chain_tx_hash = ? AND anchored_at IS NULL",
            (time_to_text(anchored_at), *_same_anchor(row)),
        )
        return cur.rowcount == 1


def clear_anchor(conn: sqlite3.Connection, row: CommitmentRow) -> bool:
    with immediate(conn):
        cur = conn.execute(
            "UPDATE ves_commitments SET chain_id = NULL, chain_tx_hash = NULL, "
            "chain_block_number = NULL, anchored_at = NULL "
            "WHERE tenant_id = ? AND batch_id = ? AND chain_tx_hash = ?",
            _same_anchor(row),
        )
        return cur.rowcount == 1


_BACKLOG_SQL = COMMIT_BACKLOG_SQL.format(P1="?1", P2="?2", P3="?3")


def commit_backlog(
    conn: sqlite3.Connection, after: StreamKey | None, limit: int
) -> list[CommitBacklog]:
    key = (None, None) if after is None else _key(after)
    rows = conn.execute(_BACKLOG_SQL, (*key, max(limit, 0))).fetchall()
    return [
        CommitBacklog(
            StreamKey(uuid.UUID(r[0]), uuid.UUID(r[1])),
            int(r[2]),
            int(r[3]),
            None if r[4] is None else time_from_text(r[4]),
        )
        for r in rows
    ]


class SqliteCommitments(Connections, Commitments):
    async def put_commitment(self, row: CommitmentRow) -> None:
        await self._write(put_commitment, row)

    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None:
        return await self._read(get_commitment, batch_id)

    async def list_commitments(
        self, stream: StreamKey, anchored: bool | None = None, limit: int | None = None
    ) -> list[CommitmentRow]:
        return await self._read(list_commitments, stream, anchored, limit)

    async def last_commitment(self, stream: StreamKey) -> CommitmentRow | None:
        return await self._read(last_commitment, stream)

    async def commitment_starting_at(
        self, stream: StreamKey, sequence_start: int
    ) -> CommitmentRow | None:
        return await self._read(commitment_starting_at, stream, sequence_start)

    async def commitment_covering(
        self, stream: StreamKey, sequence_number: int
    ) -> CommitmentRow | None:
        return await self._read(commitment_covering, stream, sequence_number)

    async def leaf_inputs(self, stream: StreamKey, start: int, end: int) -> list[LeafInput]:
        return await self._read(leaf_inputs, stream, start, end)

    async def pending_commitments(self, limit: int) -> list[CommitmentRow]:
        return await self._read(pending_commitments, limit)

    async def pending_heads(self, limit: int) -> list[CommitmentRow]:
        return await self._read(pending_heads, limit)

    async def record_anchor(
        self,
        batch_id: uuid.UUID,
        chain_id: int,
        chain_tx_hash: bytes,
        chain_block_number: int | None,
        anchored_at: datetime | None,
    ) -> tuple[AnchorOutcome, CommitmentRow | None]:
        return await self._write(
            record_anchor, batch_id, chain_id, chain_tx_hash, chain_block_number, anchored_at
        )

    async def unconfirmed_anchors(self, limit: int) -> list[CommitmentRow]:
        return await self._read(unconfirmed_anchors, limit)

    async def confirm_anchor(self, row: CommitmentRow, anchored_at: datetime) -> bool:
        return await self._write(confirm_anchor, row, anchored_at)

    async def clear_anchor(self, row: CommitmentRow) -> bool:
        return await self._write(clear_anchor, row)

    async def commit_backlog(self, after: StreamKey | None, limit: int) -> list[CommitBacklog]:
        return await self._read(commit_backlog, after, limit)

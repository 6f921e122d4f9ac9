"""Commitment rows on PostgreSQL: the :class:`Commitments` port. Lookups by batch id and
lists may be served by the read pool; what the engine builds a new commitment on (the tip,
a start, the leaf inputs) and proofs' lookups are read on the primary."""

from __future__ import annotations

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
)
from . import convert
from .errors import mapped
from .pool import Pools

_COLUMNS = column_list(COMMITMENT_COLUMNS)
_PUT_SQL = (
    f"INSERT INTO ves_commitments ({_COLUMNS}) VALUES "  # noqa: S608 - fixed names
    f"({', '.join(f'${i}' for i in range(1, len(COMMITMENT_COLUMNS) + 1))})"
)
_SELECT = f"SELECT {_COLUMNS} FROM ves_commitments"  # noqa: S608 - fixed names
_STREAM = "tenant_id = $1 AND store_id = $2"
_ANCHORED = {None: "", True: " AND chain_tx_hash IS NOT NULL", False: " AND chain_tx_hash IS NULL"}
_SET_ANCHOR = (
    "UPDATE ves_commitments SET "  # noqa: S608 - fixed names
    + ", ".join(f"{name} = ${i}" for i, name in enumerate(ANCHOR_COLUMNS, start=1))
    + f" WHERE tenant_id = ${len(ANCHOR_COLUMNS) + 1} AND batch_id = ${len(ANCHOR_COLUMNS) + 2}"
)
_ANCHOR_INDEXES = [COMMITMENT_COLUMNS.index(name) for name in ANCHOR_COLUMNS]


_PENDING_HEADS_SQL = PENDING_HEADS_SQL.format(
    columns=", ".join(f"c.{name}" for name in COMMITMENT_COLUMNS), P1="$1"
)


def _same_anchor(row: CommitmentRow) -> tuple[object, ...]:
    assert row.chain_tx_hash is not None, "only an anchored row is confirmed or cleared"
    return (row.tenant_id, row.batch_id, bytes(row.chain_tx_hash))


_BACKLOG_SQL = COMMIT_BACKLOG_SQL.format(P1="$1::uuid", P2="$2::uuid", P3="$3")


class PostgresCommitments(Pools, Commitments):
    async def _one(self, where: str, *args: object) -> CommitmentRow | None:
        with mapped():
            row = await self._pool.fetchrow(f"{_SELECT} WHERE {where}", *args)
        return None if row is None else convert.record(COMMITMENTS, row)

    async def put_commitment(self, row: CommitmentRow) -> None:
        with mapped():
            await self._pool.execute(_PUT_SQL, *convert.params(COMMITMENTS, row))

    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None:
        with mapped():
            row = await self._reader.fetchrow(f"{_SELECT} WHERE batch_id = $1", batch_id)
        return convert.record(COMMITMENTS, row) if row is not None else None

    async def list_commitments(
        self, stream: StreamKey, anchored: bool | None = None, limit: int | None = None
    ) -> list[CommitmentRow]:
        sql = f"{_SELECT} WHERE {_STREAM}{_ANCHORED[anchored]} ORDER BY sequence_start"
        args: list[object] = [stream.tenant_id, stream.store_id]
        if limit is not None:
            sql += " LIMIT $3"
            args.append(max(limit, 0))
        with mapped():
            rows = await self._reader.fetch(sql, *args)
        return [convert.record(COMMITMENTS, row) for row in rows]

    async def last_commitment(self, stream: StreamKey) -> CommitmentRow | None:
        return await self._one(
            f"{_STREAM} ORDER BY sequence_end DESC LIMIT 1", stream.tenant_id, stream.store_id
        )

    async def commitment_starting_at(
        self, stream: StreamKey, sequence_start: int
    ) -> CommitmentRow | None:
        return await self._one(
            f"{_STREAM} AND sequence_start = $3", stream.tenant_id, stream.store_id, sequence_start
        )

    async def commitment_covering(
        self, stream: StreamKey, sequence_number: int
    ) -> CommitmentRow | None:
        # The commitment starting at or below it with the highest start is the only
        # candidate (ranges never overlap); it covers the sequence if it ends at or above.
        found = await self._one(
            f"{_STREAM} AND sequence_start <= $3 ORDER BY sequence_start DESC LIMIT 1",
            stream.tenant_id,
            stream.store_id,
            sequence_number,
        )
        return found if found is not None and found.sequence_end >= sequence_number else None

    async def leaf_inputs(self, stream: StreamKey, start: int, end: int) -> list[LeafInput]:
        with mapped():
            rows = await self._pool.fetch(
                "SELECT sequence_number, event_signing_hash, agent_signature FROM ves_events "
                "WHERE store_id = $2 AND tenant_id = $1 AND sequence_number BETWEEN $3 AND $4 "
                "ORDER BY sequence_number",
                stream.tenant_id,
                stream.store_id,
                start,
                end,
            )
        return [LeafInput(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    async def pending_commitments(self, limit: int) -> list[CommitmentRow]:
        with mapped():
            rows = await self._pool.fetch(
                f"{_SELECT} WHERE chain_tx_hash IS NULL "
                "ORDER BY committed_at, tenant_id, store_id, sequence_start LIMIT $1",
                max(limit, 0),
            )
        return [convert.record(COMMITMENTS, row) for row in rows]

    async def pending_heads(self, limit: int) -> list[CommitmentRow]:
        with mapped():
            rows = await self._pool.fetch(_PENDING_HEADS_SQL, max(limit, 0))
        return [convert.record(COMMITMENTS, row) for row in rows]

    async def record_anchor(
        self,
        batch_id: uuid.UUID,
        chain_id: int,
        chain_tx_hash: bytes,
        chain_block_number: int | None,
        anchored_at: datetime | None,
    ) -> tuple[AnchorOutcome, CommitmentRow | None]:
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(f"{_SELECT} WHERE batch_id = $1 FOR UPDATE", batch_id)
                if row is None:
                    return AnchorOutcome.NOT_FOUND, None
                outcome, after = anchored(
                    convert.record(COMMITMENTS, row),
                    chain_id,
                    chain_tx_hash,
                    chain_block_number,
                    anchored_at,
                )
                if outcome is AnchorOutcome.RECORDED:
                    encoded = convert.params(COMMITMENTS, after)
                    values = [encoded[i] for i in _ANCHOR_INDEXES]
                    await conn.execute(_SET_ANCHOR, *values, after.tenant_id, after.batch_id)
        return outcome, after

    async def unconfirmed_anchors(self, limit: int) -> list[CommitmentRow]:
        with mapped():
            rows = await self._pool.fetch(
                f"{_SELECT} WHERE chain_tx_hash IS NOT NULL AND anchored_at IS NULL "
                "ORDER BY chain_block_number, committed_at, tenant_id, store_id, sequence_start "
                "LIMIT $1",
                max(limit, 0),
            )
        return [convert.record(COMMITMENTS, row) for row in rows]

    async def confirm_anchor(self, row: CommitmentRow, anchored_at: datetime) -> bool:
        with mapped():
            status = await self._pool.execute(
                "UPDATE ves_commitments SET anchored_at = $4 WHERE tenant_id = $1 "
                "AND batch_id = $2 AND chain_tx_hash = $3 AND anchored_at IS NULL",
                *_same_anchor(row),
                anchored_at,
            )
        return bool(status == "UPDATE 1")

    async def clear_anchor(self, row: CommitmentRow) -> bool:
        with mapped():
            status = await self._pool.execute(
                "UPDATE ves_commitments SET chain_id = NULL, chain_tx_hash = NULL, "
                "chain_block_number = NULL, anchored_at = NULL "
                "WHERE tenant_id = $1 AND batch_id = $2 AND chain_tx_hash = $3",
                *_same_anchor(row),
            )
        return bool(status == "UPDATE 1")

    async def commit_backlog(self, after: StreamKey | None, limit: int) -> list[CommitBacklog]:
        with mapped():
            rows = await self._pool.fetch(
                _BACKLOG_SQL,
                None if after is None else after.tenant_id,
                None if after is None else after.store_id,
                max(limit, 0),
            )
        return [
            CommitBacklog(
                StreamKey(r["tenant_id"], r["store_id"]),
                int(r["head"]),
                int(r["committed"]),
                r["oldest"],
            )
            for r in rows
        ]

"""Commitment rows on PostgreSQL: the :class:`Commitments` port (writes on the primary,
reads on the read pool)."""

from __future__ import annotations

import uuid

from ..ports import Commitments
from ..records import CommitmentRow, StreamKey
from ..rows import COMMITMENT_COLUMNS, COMMITMENTS, column_list
from . import convert
from .errors import mapped
from .pool import Pools

_COLUMNS = column_list(COMMITMENT_COLUMNS)
_PUT_SQL = (
    f"INSERT INTO ves_commitments ({_COLUMNS}) VALUES "  # noqa: S608 - fixed names
    f"({', '.join(f'${i}' for i in range(1, len(COMMITMENT_COLUMNS) + 1))})"
)
_SELECT = f"SELECT {_COLUMNS} FROM ves_commitments"  # noqa: S608 - fixed names


class PostgresCommitments(Pools, Commitments):
    async def put_commitment(self, row: CommitmentRow) -> None:
        with mapped():
            await self._pool.execute(_PUT_SQL, *convert.params(COMMITMENTS, row))

    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None:
        with mapped():
            row = await self._reader.fetchrow(f"{_SELECT} WHERE batch_id = $1", batch_id)
        return convert.record(COMMITMENTS, row) if row is not None else None

    async def list_commitments(self, stream: StreamKey) -> list[CommitmentRow]:
        with mapped():
            rows = await self._reader.fetch(
                f"{_SELECT} WHERE tenant_id = $1 AND store_id = $2 ORDER BY sequence_start",
                stream.tenant_id,
                stream.store_id,
            )
        return [convert.record(COMMITMENTS, row) for row in rows]

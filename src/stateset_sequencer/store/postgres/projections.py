"""Projection documents and checkpoints on PostgreSQL: the :class:`Projections` port.
Everything goes to the primary: the worker must read back exactly what it wrote, and
the counters it compares checkpoints with are the ones the writers move."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ...ves.jsontext import dump_json, load_json
from ..errors import ConcurrentWriteError
from ..ports import Projections
from ..records import ProjectionDocument, ProjectionLag, StreamKey
from ..rows import check_projection_apply
from .errors import mapped
from .pool import Pools

_DOCUMENT_COLUMNS = "tenant_id, store_id, entity_type, entity_id, version, document, updated_at"
# The document is sent and read as JSON text: no JSON codec is registered on the pools.
_SELECT_DOCUMENTS = (
    "SELECT tenant_id, store_id, entity_type, entity_id, version, document::text AS document, "
    "updated_at FROM ves_projection_documents d "
    "WHERE d.tenant_id = $1 AND d.store_id = $2 "
    "AND (d.entity_type, d.entity_id) IN (SELECT * FROM unnest($3::text[], $4::text[]))"
)
_UPSERT_DOCUMENT = (
    f"INSERT INTO ves_projection_documents ({_DOCUMENT_COLUMNS}) "  # noqa: S608 - fixed names
    "VALUES ($1, $2, $3, $4, $5, $6::json, $7) "
    "ON CONFLICT (tenant_id, store_id, entity_type, entity_id) DO UPDATE SET "
    "version = EXCLUDED.version, document = EXCLUDED.document, updated_at = EXCLUDED.updated_at"
)
_SELECT_CHECKPOINT = (
    "SELECT last_projected_sequence FROM ves_projection_checkpoints "
    "WHERE tenant_id = $1 AND store_id = $2"
)
# A concurrent applier's new row is waited for here, so the locked read below sees it.
_ENSURE_CHECKPOINT = (
    "INSERT INTO ves_projection_checkpoints "
    "(tenant_id, store_id, last_projected_sequence, updated_at) VALUES ($1, $2, 0, $3) "
    "ON CONFLICT (tenant_id, store_id) DO NOTHING"
)
_LOCK_CHECKPOINT = f"{_SELECT_CHECKPOINT} FOR UPDATE"
_SET_CHECKPOINT = (
    "UPDATE ves_projection_checkpoints SET last_projected_sequence = $3, updated_at = $4 "
    "WHERE tenant_id = $1 AND store_id = $2"
)
_LAGGING = (
    "SELECT c.tenant_id, c.store_id, c.current_sequence, "
    "COALESCE(p.last_projected_sequence, 0) AS checkpoint "
    "FROM sequence_counters c LEFT JOIN ves_projection_checkpoints p "
    "ON p.tenant_id = c.tenant_id AND p.store_id = c.store_id "
    "WHERE c.current_sequence > COALESCE(p.last_projected_sequence, 0)"
)
_LAGGING_FIRST = f"{_LAGGING} ORDER BY c.tenant_id, c.store_id LIMIT $1"
_LAGGING_AFTER = (
    f"{_LAGGING} AND (c.tenant_id, c.store_id) > ($1, $2) ORDER BY c.tenant_id, c.store_id LIMIT $3"
)


def _document(row: Any) -> ProjectionDocument:
    return ProjectionDocument(
        tenant_id=row["tenant_id"],
        store_id=row["store_id"],
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        version=int(row["version"]),
        document=load_json(row["document"]),
        updated_at=row["updated_at"],
    )


class PostgresProjections(Pools, Projections):
    async def projection_checkpoint(self, stream: StreamKey) -> int:
        with mapped():
            value = await self._pool.fetchval(_SELECT_CHECKPOINT, stream.tenant_id, stream.store_id)
        return 0 if value is None else int(value)

    async def get_projection(
        self, stream: StreamKey, entity_type: str, entity_id: str
    ) -> ProjectionDocument | None:
        found = await self.get_projections(stream, [(entity_type, entity_id)])
        return found.get((entity_type, entity_id))

    async def get_projections(
        self, stream: StreamKey, entities: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ProjectionDocument]:
        unique = list(dict.fromkeys(entities))
        if not unique:
            return {}
        with mapped():
            rows = await self._pool.fetch(
                _SELECT_DOCUMENTS,
                stream.tenant_id,
                stream.store_id,
                [t for t, _ in unique],
                [i for _, i in unique],
            )
        documents = [_document(row) for row in rows]
        return {(d.entity_type, d.entity_id): d for d in documents}

    async def apply_projection(
        self,
        stream: StreamKey,
        expected: int,
        checkpoint: int,
        documents: Sequence[ProjectionDocument],
        now: datetime,
    ) -> None:
        check_projection_apply(stream, expected, checkpoint, documents)
        key = (stream.tenant_id, stream.store_id)
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_ENSURE_CHECKPOINT, *key, now)
                current = int(await conn.fetchval(_LOCK_CHECKPOINT, *key))
                if current != expected:
                    raise ConcurrentWriteError(
                        f"projection checkpoint moved from {expected} to {current} meanwhile"
                    )
                if documents:
                    await conn.executemany(
                        _UPSERT_DOCUMENT,
                        [
                            (
                                *key,
                                d.entity_type,
                                d.entity_id,
                                d.version,
                                dump_json(d.document),
                                d.updated_at,
                            )
                            for d in documents
                        ],
                    )
                await conn.execute(_SET_CHECKPOINT, *key, checkpoint, now)

    async def lagging_projections(self, after: StreamKey | None, limit: int) -> list[ProjectionLag]:
        with mapped():
            if after is None:
                rows = await self._pool.fetch(_LAGGING_FIRST, max(limit, 0))
            else:
                rows = await self._pool.fetch(
                    _LAGGING_AFTER, after.tenant_id, after.store_id, max(limit, 0)
                )
        return [
            ProjectionLag(
                StreamKey(r["tenant_id"], r["store_id"]),
                checkpoint=int(r["checkpoint"]),
                head=int(r["current_sequence"]),
            )
            for r in rows
        ]

    async def clear_projections(self, stream: StreamKey | None = None) -> int:
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                if stream is None:
                    status = await conn.execute("DELETE FROM ves_projection_documents")
                    await conn.execute("DELETE FROM ves_projection_checkpoints")
                else:
                    key = (stream.tenant_id, stream.store_id)
                    status = await conn.execute(
                        "DELETE FROM ves_projection_documents "
                        "WHERE tenant_id = $1 AND store_id = $2",
                        *key,
                    )
                    await conn.execute(
                        "DELETE FROM ves_projection_checkpoints "
                        "WHERE tenant_id = $1 AND store_id = $2",
                        *key,
                    )
        return int(status.rsplit(" ", 1)[-1])

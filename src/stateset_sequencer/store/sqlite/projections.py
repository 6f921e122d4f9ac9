"""Projection documents and checkpoints on SQLite: jobs run on a connection's thread
(writers in their own ``BEGIN IMMEDIATE``) and the :class:`Projections` port over them."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime

from ...ves.jsontext import dump_json, load_json
from ..errors import ConcurrentWriteError
from ..ports import Projections
from ..records import ProjectionDocument, ProjectionLag, StreamKey
from ..rows import check_projection_apply, time_from_text, time_to_text
from .worker import Connections, immediate, snapshot

_DOCUMENT_COLUMNS = "tenant_id, store_id, entity_type, entity_id, version, document, updated_at"
_SELECT_DOCUMENT = (
    f"SELECT {_DOCUMENT_COLUMNS} FROM ves_projection_documents "  # noqa: S608 - fixed names
    "WHERE tenant_id = ? AND store_id = ? AND entity_type = ? AND entity_id = ?"
)
_UPSERT_DOCUMENT = (
    f"INSERT INTO ves_projection_documents ({_DOCUMENT_COLUMNS}) "  # noqa: S608 - fixed names
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant_id, store_id, entity_type, entity_id) DO UPDATE SET "
    "version = excluded.version, document = excluded.document, updated_at = excluded.updated_at"
)
_SELECT_CHECKPOINT = (
    "SELECT last_projected_sequence FROM ves_projection_checkpoints "
    "WHERE tenant_id = ? AND store_id = ?"
)
_UPSERT_CHECKPOINT = (
    "INSERT INTO ves_projection_checkpoints "
    "(tenant_id, store_id, last_projected_sequence, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tenant_id, store_id) DO UPDATE SET "
    "last_projected_sequence = excluded.last_projected_sequence, "
    "updated_at = excluded.updated_at"
)
_LAGGING = (
    "SELECT c.tenant_id, c.store_id, c.current_sequence, "
    "COALESCE(p.last_projected_sequence, 0) AS checkpoint "
    "FROM sequence_counters c LEFT JOIN ves_projection_checkpoints p "
    "ON p.tenant_id = c.tenant_id AND p.store_id = c.store_id "
    "WHERE c.current_sequence > COALESCE(p.last_projected_sequence, 0)"
)
_LAGGING_FIRST = f"{_LAGGING} ORDER BY c.tenant_id, c.store_id LIMIT ?"
_LAGGING_AFTER = (
    f"{_LAGGING} AND (c.tenant_id, c.store_id) > (?, ?) ORDER BY c.tenant_id, c.store_id LIMIT ?"
)


def _stream_params(stream: StreamKey) -> tuple[str, str]:
    return str(stream.tenant_id), str(stream.store_id)


def _document(row: sqlite3.Row) -> ProjectionDocument:
    return ProjectionDocument(
        tenant_id=uuid.UUID(row["tenant_id"]),
        store_id=uuid.UUID(row["store_id"]),
        entity_type=str(row["entity_type"]),
        entity_id=str(row["entity_id"]),
        version=int(row["version"]),
        document=load_json(row["document"]),
        updated_at=time_from_text(row["updated_at"]),
    )


def checkpoint(conn: sqlite3.Connection, stream: StreamKey) -> int:
    row = conn.execute(_SELECT_CHECKPOINT, _stream_params(stream)).fetchone()
    return 0 if row is None else int(row[0])


def get_documents(
    conn: sqlite3.Connection, stream: StreamKey, entities: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], ProjectionDocument]:
    found: dict[tuple[str, str], ProjectionDocument] = {}
    with snapshot(conn):
        for entity_type, entity_id in dict.fromkeys(entities):
            row = conn.execute(
                _SELECT_DOCUMENT, (*_stream_params(stream), entity_type, entity_id)
            ).fetchone()
            if row is not None:
                found[(entity_type, entity_id)] = _document(row)
    return found


def apply(
    conn: sqlite3.Connection,
    stream: StreamKey,
    expected: int,
    new_checkpoint: int,
    documents: Sequence[ProjectionDocument],
    now: datetime,
) -> None:
    with immediate(conn):
        current = checkpoint(conn, stream)
        if current != expected:
            raise ConcurrentWriteError(
                f"projection checkpoint moved from {expected} to {current} meanwhile"
            )
        conn.executemany(
            _UPSERT_DOCUMENT,
            [
                (
                    *_stream_params(stream),
                    d.entity_type,
                    d.entity_id,
                    d.version,
                    dump_json(d.document),
                    time_to_text(d.updated_at),
                )
                for d in documents
            ],
        )
        conn.execute(
            _UPSERT_CHECKPOINT, (*_stream_params(stream), new_checkpoint, time_to_text(now))
        )


def lagging(conn: sqlite3.Connection, after: StreamKey | None, limit: int) -> list[ProjectionLag]:
    if after is None:
        rows = conn.execute(_LAGGING_FIRST, (limit,)).fetchall()
    else:
        rows = conn.execute(_LAGGING_AFTER, (*_stream_params(after), limit)).fetchall()
    return [
        ProjectionLag(
            StreamKey(uuid.UUID(r["tenant_id"]), uuid.UUID(r["store_id"])),
            checkpoint=int(r["checkpoint"]),
            head=int(r["current_sequence"]),
        )
        for r in rows
    ]


def clear(conn: sqlite3.Connection, stream: StreamKey | None) -> int:
    with immediate(conn):
        if stream is None:
            deleted = conn.execute("DELETE FROM ves_projection_documents").rowcount
            conn.execute("DELETE FROM ves_projection_checkpoints")
        else:
            deleted = conn.execute(
                "DELETE FROM ves_projection_documents WHERE tenant_id = ? AND store_id = ?",
                _stream_params(stream),
            ).rowcount
            conn.execute(
                "DELETE FROM ves_projection_checkpoints WHERE tenant_id = ? AND store_id = ?",
                _stream_params(stream),
            )
    return int(deleted)


class SqliteProjections(Connections, Projections):
    async def projection_checkpoint(self, stream: StreamKey) -> int:
        return await self._read(checkpoint, stream)

    async def get_projection(
        self, stream: StreamKey, entity_type: str, entity_id: str
    ) -> ProjectionDocument | None:
        found = await self._read(get_documents, stream, [(entity_type, entity_id)])
        return found.get((entity_type, entity_id))

    async def get_projections(
        self, stream: StreamKey, entities: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ProjectionDocument]:
        return await self._read(get_documents, stream, list(entities))

    async def apply_projection(
        self,
        stream: StreamKey,
        expected: int,
        checkpoint: int,
        documents: Sequence[ProjectionDocument],
        now: datetime,
    ) -> None:
        check_projection_apply(stream, expected, checkpoint, documents)
        await self._write(apply, stream, expected, checkpoint, list(documents), now)

    async def lagging_projections(self, after: StreamKey | None, limit: int) -> list[ProjectionLag]:
        return await self._read(lagging, after, max(limit, 0))

    async def clear_projections(self, stream: StreamKey | None = None) -> int:
        return await self._write(clear, stream)

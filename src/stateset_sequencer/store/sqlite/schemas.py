"""The schema registry (``event_schemas``) on SQLite: jobs run on a connection's thread
(``fn(conn, ...)``, writers in their own ``BEGIN IMMEDIATE``) and the
:class:`SchemaStore` port over them."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime

from ..errors import IntegrityError
from ..ports import SchemaStore
from ..records import AuditEntry, Change, ChangeKind, SchemaRecord
from ..rows import (
    EVENT_SCHEMAS,
    SCHEMA_COLUMNS,
    check_schema_status,
    column_list,
    schema_audit,
    time_to_text,
)
from . import convert
from .audit import append_in_transaction
from .changes import SqlitePublisher
from .worker import Connections, immediate

_COLUMNS = column_list(SCHEMA_COLUMNS)
_SELECT = f"SELECT {_COLUMNS} FROM event_schemas"  # noqa: S608 - fixed names
_ORDER = "ORDER BY event_type, version"

# The version is computed inside the INSERT, and the write lock BEGIN IMMEDIATE takes is
# held from the first statement, so two registrations (even from two processes) can never
# read the same maximum.
_INSERT = (
    f"INSERT INTO event_schemas ({_COLUMNS}) "  # noqa: S608 - fixed names
    "SELECT ?, ?, ?, COALESCE(MAX(version), 0) + 1, ?, 'active', ?, ?, ?, ?, ? "
    "FROM event_schemas WHERE tenant_id = ? AND event_type = ?"
)


def put_schema(
    conn: sqlite3.Connection,
    schema_id: uuid.UUID,
    tenant_id: uuid.UUID,
    event_type: str,
    schema_json: str,
    compatibility: str,
    description: str | None,
    created_by: str | None,
    now: datetime,
    audit: AuditEntry | None,
) -> SchemaRecord:
    stamp = time_to_text(now)
    with immediate(conn):
        conn.execute(
            _INSERT,
            (
                str(schema_id),
                str(tenant_id),
                event_type,
                schema_json,
                compatibility,
                description,
                stamp,
                stamp,
                created_by,
                str(tenant_id),
                event_type,
            ),
        )
        record = get_schema(conn, schema_id)
        if record is not None and audit is not None:
            append_in_transaction(conn, schema_audit(audit, record))
    if record is None:  # the INSERT … SELECT always yields one row; this guards the invariant
        raise IntegrityError("the registered schema was not found after its insert")
    return record


def get_schema(conn: sqlite3.Connection, schema_id: uuid.UUID) -> SchemaRecord | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (str(schema_id),)).fetchone()
    return None if row is None else convert.record(EVENT_SCHEMAS, row)


def list_schemas(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, event_type: str | None
) -> list[SchemaRecord]:
    if event_type is None:
        rows = conn.execute(f"{_SELECT} WHERE tenant_id = ? {_ORDER}", (str(tenant_id),))
    else:
        rows = conn.execute(
            f"{_SELECT} WHERE tenant_id = ? AND event_type = ? {_ORDER}",
            (str(tenant_id), event_type),
        )
    return [convert.record(EVENT_SCHEMAS, r) for r in rows.fetchall()]


def get_schema_version(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, event_type: str, version: int
) -> SchemaRecord | None:
    row = conn.execute(
        f"{_SELECT} WHERE tenant_id = ? AND event_type = ? AND version = ?",
        (str(tenant_id), event_type, version),
    ).fetchone()
    return None if row is None else convert.record(EVENT_SCHEMAS, row)


def latest_active_schema(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, event_type: str
) -> SchemaRecord | None:
    row = conn.execute(
        f"{_SELECT} WHERE tenant_id = ? AND event_type = ? AND status = 'active' "
        "ORDER BY version DESC LIMIT 1",
        (str(tenant_id), event_type),
    ).fetchone()
    return None if row is None else convert.record(EVENT_SCHEMAS, row)


def set_schema_status(
    conn: sqlite3.Connection,
    schema_id: uuid.UUID,
    status: str,
    now: datetime,
    audit: AuditEntry | None,
) -> SchemaRecord | None:
    check_schema_status(status)
    with immediate(conn):
        conn.execute(
            "UPDATE event_schemas SET status = ?, updated_at = ? WHERE id = ?",
            (status, time_to_text(now), str(schema_id)),
        )
        record = get_schema(conn, schema_id)
        if record is not None and audit is not None:
            append_in_transaction(conn, schema_audit(audit, record))
        return record


def delete_schema(
    conn: sqlite3.Connection, schema_id: uuid.UUID, audit: AuditEntry | None
) -> SchemaRecord | None:
    """The deleted schema, None when there was none."""
    with immediate(conn):
        deleted = get_schema(conn, schema_id)
        conn.execute("DELETE FROM event_schemas WHERE id = ?", (str(schema_id),))
        if deleted is not None and audit is not None:
            append_in_transaction(conn, schema_audit(audit, deleted))
        return deleted


def _change(record: SchemaRecord) -> Change:
    return Change(ChangeKind.SCHEMA, tenant_id=record.tenant_id, event_type=record.event_type)


class SqliteSchemaStore(Connections, SqlitePublisher, SchemaStore):
    async def put_schema(
        self,
        tenant_id: uuid.UUID,
        event_type: str,
        schema_json: str,
        *,
        compatibility: str = "backward",
        description: str | None = None,
        created_by: str | None = None,
        audit: AuditEntry | None = None,
    ) -> SchemaRecord:
        record = await self._write(
            put_schema,
            uuid.uuid4(),
            tenant_id,
            event_type,
            schema_json,
            compatibility,
            description,
            created_by,
            datetime.now(UTC),
            audit,
        )
        self._changed(_change(record))
        return record

    async def get_schema(self, schema_id: uuid.UUID) -> SchemaRecord | None:
        return await self._read(get_schema, schema_id)

    async def list_schemas(
        self, tenant_id: uuid.UUID, event_type: str | None = None
    ) -> list[SchemaRecord]:
        return await self._read(list_schemas, tenant_id, event_type)

    async def get_schema_version(
        self, tenant_id: uuid.UUID, event_type: str, version: int
    ) -> SchemaRecord | None:
        return await self._read(get_schema_version, tenant_id, event_type, version)

    async def latest_active_schema(
        self, tenant_id: uuid.UUID, event_type: str
    ) -> SchemaRecord | None:
        return await self._read(latest_active_schema, tenant_id, event_type)

    async def set_schema_status(
        self, schema_id: uuid.UUID, status: str, audit: AuditEntry | None = None
    ) -> SchemaRecord | None:
        record = await self._write(set_schema_status, schema_id, status, datetime.now(UTC), audit)
        if record is not None:
            self._changed(_change(record))
        return record

    async def delete_schema(self, schema_id: uuid.UUID, audit: AuditEntry | None = None) -> bool:
        deleted = await self._write(delete_schema, schema_id, audit)
        if deleted is not None:
            self._changed(_change(deleted))
        return deleted is not None

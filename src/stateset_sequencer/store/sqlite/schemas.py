"""The schema registry (``event_schemas``) as jobs run on a connection's thread
(``fn(conn, ...)``). Writers open their own ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime

from ..base import SCHEMA_STATUSES, IntegrityError, SchemaRecord
from ..rows import time_from_text, time_to_text
from .worker import immediate

_COLUMNS = (
    "id, tenant_id, event_type, version, schema_json, status, compatibility, description, "
    "created_at, updated_at, created_by"
)
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


def _record(row: sqlite3.Row) -> SchemaRecord:
    return SchemaRecord(
        id=uuid.UUID(row["id"]),
        tenant_id=uuid.UUID(row["tenant_id"]),
        event_type=row["event_type"],
        version=row["version"],
        schema_json=row["schema_json"],
        status=row["status"],
        compatibility=row["compatibility"],
        description=row["description"],
        created_at=time_from_text(row["created_at"]),
        updated_at=time_from_text(row["updated_at"]),
        created_by=row["created_by"],
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
    if record is None:  # the INSERT … SELECT always yields one row; this guards the invariant
        raise IntegrityError("the registered schema was not found after its insert")
    return record


def get_schema(conn: sqlite3.Connection, schema_id: uuid.UUID) -> SchemaRecord | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (str(schema_id),)).fetchone()
    return None if row is None else _record(row)


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
    return [_record(r) for r in rows.fetchall()]


def get_schema_version(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, event_type: str, version: int
) -> SchemaRecord | None:
    row = conn.execute(
        f"{_SELECT} WHERE tenant_id = ? AND event_type = ? AND version = ?",
        (str(tenant_id), event_type, version),
    ).fetchone()
    return None if row is None else _record(row)


def latest_active_schema(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, event_type: str
) -> SchemaRecord | None:
    row = conn.execute(
        f"{_SELECT} WHERE tenant_id = ? AND event_type = ? AND status = 'active' "
        "ORDER BY version DESC LIMIT 1",
        (str(tenant_id), event_type),
    ).fetchone()
    return None if row is None else _record(row)


def set_schema_status(
    conn: sqlite3.Connection, schema_id: uuid.UUID, status: str, now: datetime
) -> SchemaRecord | None:
    # Checked here as well as by the table's CHECK, which only fires when a row matches:
    # a bad status is refused whether or not the schema exists.
    if status not in SCHEMA_STATUSES:
        raise IntegrityError(f"schema status must be one of {', '.join(SCHEMA_STATUSES)}")
    with immediate(conn):
        conn.execute(
            "UPDATE event_schemas SET status = ?, updated_at = ? WHERE id = ?",
            (status, time_to_text(now), str(schema_id)),
        )
        return get_schema(conn, schema_id)


def delete_schema(conn: sqlite3.Connection, schema_id: uuid.UUID) -> bool:
    with immediate(conn):
        cursor = conn.execute("DELETE FROM event_schemas WHERE id = ?", (str(schema_id),))
        return cursor.rowcount > 0

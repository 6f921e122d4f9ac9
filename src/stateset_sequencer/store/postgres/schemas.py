"""The schema registry (``event_schemas``) on the primary pool. Callers wrap these in
``errors.mapped()``.

Schemas stay on the primary for reads too: a schema registered or deprecated a moment ago
must already govern the next ingest, which a lagging replica would not guarantee.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from ..base import SCHEMA_STATUSES, IntegrityError, OperationalError, SchemaRecord

if TYPE_CHECKING:  # generic only in the stubs, not at run time
    Pool = asyncpg.Pool[asyncpg.Record]

# Two-key advisory locks live in a key space of their own, apart from the single 64-bit
# key the migrator locks on; the first key says "schema registry" (b"SSSR").
_LOCK_CLASS = 0x5353_5352

_COLUMNS = (
    "id, tenant_id, event_type, version, schema_json, status, compatibility, description, "
    "created_at, updated_at, created_by"
)
_SELECT = f"SELECT {_COLUMNS} FROM event_schemas"  # noqa: S608 - fixed names
# The column's "C" collation makes this UTF-8 byte order, as on SQLite.
_ORDER = "ORDER BY event_type, version"

_LOCK_SQL = "SELECT pg_advisory_xact_lock($1::integer, $2::integer)"
_INSERT_SQL = (
    f"INSERT INTO event_schemas ({_COLUMNS}) "  # noqa: S608 - fixed names
    "SELECT $1::uuid, $2::uuid, $3::text, COALESCE(MAX(version), 0) + 1, $4::json, 'active', "
    "$5::text, $6::text, $7::timestamptz, $7::timestamptz, $8::text "
    "FROM event_schemas WHERE tenant_id = $2 AND event_type = $3 "
    f"RETURNING {_COLUMNS}"
)
_LIST_SQL = f"{_SELECT} WHERE tenant_id = $1 AND ($2::text IS NULL OR event_type = $2) {_ORDER}"
_VERSION_SQL = f"{_SELECT} WHERE tenant_id = $1 AND event_type = $2 AND version = $3"
_LATEST_SQL = (
    f"{_SELECT} WHERE tenant_id = $1 AND event_type = $2 AND status = 'active' "
    "ORDER BY version DESC LIMIT 1"
)
_SET_STATUS_SQL = (
    "UPDATE event_schemas SET status = $2, updated_at = $3 "  # noqa: S608 - fixed names
    f"WHERE id = $1 RETURNING {_COLUMNS}"
)


def _lock_key(tenant_id: uuid.UUID, event_type: str) -> int:
    """A stable signed 32-bit key for one (tenant, event_type): the same in every process,
    which Python's ``hash`` is not. A collision only makes two registrations wait on
    each other."""
    digest = hashlib.sha256(tenant_id.bytes + event_type.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def _record(row: asyncpg.Record) -> SchemaRecord:
    return SchemaRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        event_type=row["event_type"],
        version=row["version"],
        schema_json=row["schema_json"],
        status=row["status"],
        compatibility=row["compatibility"],
        description=row["description"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        created_by=row["created_by"],
    )


async def put_schema(
    pool: Pool,
    schema_id: uuid.UUID,
    tenant_id: uuid.UUID,
    event_type: str,
    schema_json: str,
    compatibility: str,
    description: str | None,
    created_by: str | None,
    now: datetime,
) -> SchemaRecord:
    async with pool.acquire() as conn, conn.transaction():
        # MAX(version) + 1 alone would let two transactions read the same maximum; the
        # loser would then fail on the unique key. The lock makes registrations of one
        # (tenant, event_type) take turns, and under READ COMMITTED the INSERT, a new
        # statement, sees the version the previous holder committed.
        await conn.execute(_LOCK_SQL, _LOCK_CLASS, _lock_key(tenant_id, event_type))
        row = await conn.fetchrow(
            _INSERT_SQL,
            schema_id,
            tenant_id,
            event_type,
            schema_json,
            compatibility,
            description,
            now,
            created_by,
        )
    if row is None:
        raise OperationalError("the database returned no row for an INSERT … RETURNING")
    return _record(row)


async def get_schema(pool: Pool, schema_id: uuid.UUID) -> SchemaRecord | None:
    row = await pool.fetchrow(f"{_SELECT} WHERE id = $1", schema_id)
    return None if row is None else _record(row)


async def list_schemas(
    pool: Pool, tenant_id: uuid.UUID, event_type: str | None
) -> list[SchemaRecord]:
    rows = await pool.fetch(_LIST_SQL, tenant_id, event_type)
    return [_record(row) for row in rows]


async def get_schema_version(
    pool: Pool, tenant_id: uuid.UUID, event_type: str, version: int
) -> SchemaRecord | None:
    row = await pool.fetchrow(_VERSION_SQL, tenant_id, event_type, version)
    return None if row is None else _record(row)


async def latest_active_schema(
    pool: Pool, tenant_id: uuid.UUID, event_type: str
) -> SchemaRecord | None:
    row = await pool.fetchrow(_LATEST_SQL, tenant_id, event_type)
    return None if row is None else _record(row)


async def set_schema_status(
    pool: Pool, schema_id: uuid.UUID, status: str, now: datetime
) -> SchemaRecord | None:
    # Checked here as well as by the table's CHECK, which only fires when a row matches:
    # a bad status is refused whether or not the schema exists.
    if status not in SCHEMA_STATUSES:
        raise IntegrityError(f"schema status must be one of {', '.join(SCHEMA_STATUSES)}")
    row = await pool.fetchrow(_SET_STATUS_SQL, schema_id, status, now)
    return None if row is None else _record(row)


async def delete_schema(pool: Pool, schema_id: uuid.UUID) -> bool:
    status = await pool.execute("DELETE FROM event_schemas WHERE id = $1", schema_id)
    return status == "DELETE 1"

"""The schema registry (``event_schemas``) on PostgreSQL: the :class:`SchemaStore` port.

Schemas stay on the primary for reads too: a schema registered or deprecated a moment ago
must already govern the next ingest, which a lagging replica would not guarantee.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..ports import SchemaStore
from ..records import AuditEntry, Change, ChangeKind, SchemaRecord
from ..rows import EVENT_SCHEMAS, SCHEMA_COLUMNS, check_schema_status, column_list, schema_audit
from . import convert
from .audit import append_in_transaction
from .changes import notify
from .errors import mapped
from .pool import Pools, one

if TYPE_CHECKING:
    from .pool import Pool

# Two-key advisory locks live in a key space of their own, apart from the single 64-bit
# key the migrator locks on; the first key says "schema registry" (b"SSSR").
_LOCK_CLASS = 0x5353_5352

_COLUMNS = column_list(SCHEMA_COLUMNS)
_SELECT = f"SELECT {_COLUMNS} FROM event_schemas"  # noqa: S608 - fixed names
# The column's "C" collation makes this UTF-8 byte order, as on SQLite.
_ORDER = "ORDER BY event_type, version"

_LOCK_SQL = "SELECT pg_advisory_xact_lock($1::integer, $2::integer)"
# Two statements, not one INSERT … SELECT MAX(version) + 1: Citus runs such an INSERT on
# the shard with explicit casts to the column types, which cut an over-long event type to
# 256 characters instead of refusing it.
_NEXT_VERSION_SQL = (
    "SELECT COALESCE(MAX(version), 0) + 1 FROM event_schemas "
    "WHERE tenant_id = $1 AND event_type = $2"
)
_INSERT_SQL = (
    f"INSERT INTO event_schemas ({_COLUMNS}) "  # noqa: S608 - fixed names
    "VALUES ($1, $2, $3, $4, $5::json, 'active', $6, $7, $8, $8, $9) "
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
_DELETE_SQL = f"DELETE FROM event_schemas WHERE id = $1 RETURNING {_COLUMNS}"  # noqa: S608


def _change(tenant_id: uuid.UUID, event_type: str) -> Change:
    return Change(ChangeKind.SCHEMA, tenant_id=tenant_id, event_type=event_type)


def _lock_key(tenant_id: uuid.UUID, event_type: str) -> int:
    """A stable signed 32-bit key for one (tenant, event_type): the same in every process,
    which Python's ``hash`` is not. A collision only makes two registrations wait on
    each other."""
    digest = hashlib.sha256(tenant_id.bytes + event_type.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


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
    audit: AuditEntry | None,
) -> SchemaRecord:
    async with pool.acquire() as conn, conn.transaction():
        # MAX(version) + 1 alone would let two transactions read the same maximum; the
        # loser would then fail on the unique key. The lock makes registrations of one
        # (tenant, event_type) take turns, and under READ COMMITTED the SELECT, a new
        # statement, sees the version the previous holder committed.
        await conn.execute(_LOCK_SQL, _LOCK_CLASS, _lock_key(tenant_id, event_type))
        version = await conn.fetchval(_NEXT_VERSION_SQL, tenant_id, event_type)
        row = await conn.fetchrow(
            _INSERT_SQL,
            schema_id,
            tenant_id,
            event_type,
            version,
            schema_json,
            compatibility,
            description,
            now,
            created_by,
        )
        record = convert.record(EVENT_SCHEMAS, one(row))
        if audit is not None:
            await append_in_transaction(conn, schema_audit(audit, record))
        await notify(conn, _change(tenant_id, event_type))
    return record


async def get_schema(pool: Pool, schema_id: uuid.UUID) -> SchemaRecord | None:
    row = await pool.fetchrow(f"{_SELECT} WHERE id = $1", schema_id)
    return None if row is None else convert.record(EVENT_SCHEMAS, row)


async def list_schemas(
    pool: Pool, tenant_id: uuid.UUID, event_type: str | None
) -> list[SchemaRecord]:
    rows = await pool.fetch(_LIST_SQL, tenant_id, event_type)
    return [convert.record(EVENT_SCHEMAS, row) for row in rows]


async def get_schema_version(
    pool: Pool, tenant_id: uuid.UUID, event_type: str, version: int
) -> SchemaRecord | None:
    row = await pool.fetchrow(_VERSION_SQL, tenant_id, event_type, version)
    return None if row is None else convert.record(EVENT_SCHEMAS, row)


async def latest_active_schema(
    pool: Pool, tenant_id: uuid.UUID, event_type: str
) -> SchemaRecord | None:
    row = await pool.fetchrow(_LATEST_SQL, tenant_id, event_type)
    return None if row is None else convert.record(EVENT_SCHEMAS, row)


async def set_schema_status(
    pool: Pool, schema_id: uuid.UUID, status: str, now: datetime, audit: AuditEntry | None
) -> SchemaRecord | None:
    check_schema_status(status)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_SET_STATUS_SQL, schema_id, status, now)
        if row is None:
            return None
        record = convert.record(EVENT_SCHEMAS, row)
        if audit is not None:
            await append_in_transaction(conn, schema_audit(audit, record))
        await notify(conn, _change(record.tenant_id, record.event_type))
    return record


async def delete_schema(pool: Pool, schema_id: uuid.UUID, audit: AuditEntry | None) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_DELETE_SQL, schema_id)
        if row is not None:
            if audit is not None:
                await append_in_transaction(
                    conn, schema_audit(audit, convert.record(EVENT_SCHEMAS, row))
                )
            await notify(conn, _change(row["tenant_id"], row["event_type"]))
    return row is not None


class PostgresSchemaStore(Pools, SchemaStore):
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
        with mapped():
            return await put_schema(
                self._pool,
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

    async def get_schema(self, schema_id: uuid.UUID) -> SchemaRecord | None:
        with mapped():
            return await get_schema(self._pool, schema_id)

    async def list_schemas(
        self, tenant_id: uuid.UUID, event_type: str | None = None
    ) -> list[SchemaRecord]:
        with mapped():
            return await list_schemas(self._pool, tenant_id, event_type)

    async def get_schema_version(
        self, tenant_id: uuid.UUID, event_type: str, version: int
    ) -> SchemaRecord | None:
        with mapped():
            return await get_schema_version(self._pool, tenant_id, event_type, version)

    async def latest_active_schema(
        self, tenant_id: uuid.UUID, event_type: str
    ) -> SchemaRecord | None:
        with mapped():
            return await latest_active_schema(self._pool, tenant_id, event_type)

    async def set_schema_status(
        self, schema_id: uuid.UUID, status: str, audit: AuditEntry | None = None
    ) -> SchemaRecord | None:
        with mapped():
            return await set_schema_status(self._pool, schema_id, status, datetime.now(UTC), audit)

    async def delete_schema(self, schema_id: uuid.UUID, audit: AuditEntry | None = None) -> bool:
        with mapped():
            return await delete_schema(self._pool, schema_id, audit)

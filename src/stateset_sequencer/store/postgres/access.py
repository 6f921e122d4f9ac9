"""API keys and the audit log on PostgreSQL: the :class:`AccessStore` port. API keys are
read on the primary (a revoked key must stop working at once); the audit log is read on
the read pool."""

from __future__ import annotations

import uuid

from ..ports import AccessStore
from ..records import ApiKeyRecord, AuditEntry, Change, ChangeKind
from ..rows import API_KEY_COLUMNS, API_KEYS, AUDIT_COLUMNS, AUDIT_LOG, column_list
from . import convert
from .audit import append_in_transaction
from .changes import notify
from .errors import mapped
from .pool import Pools, affected, one

_API_KEY_COLUMNS = column_list(API_KEY_COLUMNS)
# "Replace" keeps nothing of the old row, as an INSERT OR REPLACE would. The update clause
# reads the new updated_at from the proposed row: Citus allows only IMMUTABLE functions
# there.
_PUT_API_KEY_SQL = (
    f"INSERT INTO api_keys ({_API_KEY_COLUMNS}, updated_at) "  # noqa: S608 - fixed names
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, NOW()), $11, $12, NOW()) "
    "ON CONFLICT (key_hash) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in API_KEY_COLUMNS if c != "key_hash")
    + f", updated_at = EXCLUDED.updated_at RETURNING {_API_KEY_COLUMNS}"
)
_API_KEYS_FROM = f"SELECT {_API_KEY_COLUMNS} FROM api_keys"  # noqa: S608 - fixed names
_LIST_API_KEYS_SQL = (
    f"{_API_KEYS_FROM} WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY created_at, key_hash"
)
# A literal prefix comparison, not LIKE: '_' and '%' are not wildcards here.
_DEACTIVATE_SQL = (
    "UPDATE api_keys SET active = FALSE, updated_at = NOW() "
    "WHERE active AND left(key_hash, length($1)) = $1"
)
_AUDIT_COLUMNS = column_list(AUDIT_COLUMNS)
_LIST_AUDIT_SQL = (
    f"SELECT {_AUDIT_COLUMNS} FROM audit_log "  # noqa: S608 - fixed names
    # ctid breaks ties between entries with the same timestamp: the audit log is never
    # updated or deleted from, so a later row sits at a higher ctid (later insert first).
    "WHERE $1::text IS NULL OR action = $1 ORDER BY timestamp DESC, ctid DESC LIMIT $2"
)


class PostgresAccessStore(Pools, AccessStore):
    async def put_api_key(
        self, record: ApiKeyRecord, audit: AuditEntry | None = None
    ) -> ApiKeyRecord:
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_PUT_API_KEY_SQL, *convert.params(API_KEYS, record))
                if audit is not None:
                    await append_in_transaction(conn, audit)
                change = Change(
                    ChangeKind.API_KEY, tenant_id=record.tenant_id, key_hash_prefix=record.key_hash
                )
                await notify(conn, change)
        return convert.record(API_KEYS, one(row))

    async def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        with mapped():
            row = await self._pool.fetchrow(f"{_API_KEYS_FROM} WHERE key_hash = $1", key_hash)
        return convert.record(API_KEYS, row) if row is not None else None

    async def list_api_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKeyRecord]:
        with mapped():
            rows = await self._pool.fetch(_LIST_API_KEYS_SQL, tenant_id)
        return [convert.record(API_KEYS, row) for row in rows]

    async def deactivate_api_keys(
        self, key_hash_prefix: str, audit: AuditEntry | None = None
    ) -> int:
        # An empty prefix would match every key: refused rather than read as "all".
        if not key_hash_prefix:
            raise ValueError("key hash prefix must not be empty")
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                status = await conn.execute(_DEACTIVATE_SQL, key_hash_prefix)
                if affected(status):
                    if audit is not None:
                        await append_in_transaction(conn, audit)
                    await notify(conn, Change(ChangeKind.API_KEY, key_hash_prefix=key_hash_prefix))
        return affected(status)

    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                return await append_in_transaction(conn, entry)

    async def list_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        with mapped():
            rows = await self._reader.fetch(_LIST_AUDIT_SQL, action, max(limit, 0))
        return [convert.record(AUDIT_LOG, row) for row in rows]

"""API keys and the audit log on SQLite: jobs run on a connection's thread (writers in
their own ``BEGIN IMMEDIATE``) and the :class:`AccessStore` port over them."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from ..ports import AccessStore
from ..records import ApiKeyRecord, AuditEntry, Change, ChangeKind
from ..rows import API_KEY_COLUMNS, API_KEYS, AUDIT_COLUMNS, AUDIT_LOG, column_list, time_to_text
from . import audit, convert
from .changes import SqlitePublisher
from .worker import Connections, immediate

_API_KEY_UPSERT = (
    f"INSERT OR REPLACE INTO api_keys ({column_list(API_KEY_COLUMNS)}, updated_at) "  # noqa: S608
    f"VALUES ({convert.placeholders(len(API_KEY_COLUMNS) + 1)})"
)
_API_KEY_SELECT = f"SELECT {column_list(API_KEY_COLUMNS)} FROM api_keys"  # noqa: S608
_AUDIT_SELECT = f"SELECT {column_list(AUDIT_COLUMNS)} FROM audit_log"  # noqa: S608


def put_api_key(
    conn: sqlite3.Connection, record: ApiKeyRecord, now: datetime, entry: AuditEntry | None
) -> None:
    with immediate(conn):
        conn.execute(_API_KEY_UPSERT, (*convert.params(API_KEYS, record), time_to_text(now)))
        if entry is not None:
            audit.append_in_transaction(conn, entry)


def get_api_key(conn: sqlite3.Connection, key_hash: str) -> ApiKeyRecord | None:
    row = conn.execute(f"{_API_KEY_SELECT} WHERE key_hash = ?", (key_hash,)).fetchone()
    return None if row is None else convert.record(API_KEYS, row)


def list_api_keys(conn: sqlite3.Connection, tenant_id: uuid.UUID | None) -> list[ApiKeyRecord]:
    if tenant_id is None:
        rows = conn.execute(f"{_API_KEY_SELECT} ORDER BY created_at, key_hash").fetchall()
    else:
        rows = conn.execute(
            f"{_API_KEY_SELECT} WHERE tenant_id = ? ORDER BY created_at, key_hash",
            (str(tenant_id),),
        ).fetchall()
    return [convert.record(API_KEYS, r) for r in rows]


def deactivate_api_keys(
    conn: sqlite3.Connection, prefix: str, now: datetime, entry: AuditEntry | None
) -> int:
    with immediate(conn):
        # substr, not LIKE: a prefix is literal text, and LIKE would read '_' and '%' as
        # wildcards (and fold case).
        cursor = conn.execute(
            "UPDATE api_keys SET active = 0, updated_at = ? "
            "WHERE active = 1 AND substr(key_hash, 1, length(?)) = ?",
            (time_to_text(now), prefix, prefix),
        )
        if cursor.rowcount and entry is not None:
            audit.append_in_transaction(conn, entry)
        return cursor.rowcount


def append_audit(conn: sqlite3.Connection, entry: AuditEntry) -> AuditEntry:
    with immediate(conn):
        return audit.append_in_transaction(conn, entry)


def list_audit(conn: sqlite3.Connection, limit: int, action: str | None) -> list[AuditEntry]:
    # rowid breaks ties between entries stamped in the same microsecond: later insert first.
    order = "ORDER BY timestamp DESC, rowid DESC LIMIT ?"
    if action is None:
        rows = conn.execute(f"{_AUDIT_SELECT} {order}", (limit,)).fetchall()
    else:
        rows = conn.execute(f"{_AUDIT_SELECT} WHERE action = ? {order}", (action, limit)).fetchall()
    return [convert.record(AUDIT_LOG, r) for r in rows]


class SqliteAccessStore(Connections, SqlitePublisher, AccessStore):
    async def put_api_key(
        self, record: ApiKeyRecord, audit: AuditEntry | None = None
    ) -> ApiKeyRecord:
        now = datetime.now(UTC)
        stored = record if record.created_at is not None else replace(record, created_at=now)
        await self._write(put_api_key, stored, now, audit)
        self._changed(
            Change(ChangeKind.API_KEY, tenant_id=stored.tenant_id, key_hash_prefix=stored.key_hash)
        )
        return stored

    async def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        return await self._read(get_api_key, key_hash)

    async def list_api_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKeyRecord]:
        return await self._read(list_api_keys, tenant_id)

    async def deactivate_api_keys(
        self, key_hash_prefix: str, audit: AuditEntry | None = None
    ) -> int:
        # An empty prefix would match every key: refused rather than read as "all".
        if not key_hash_prefix:
            raise ValueError("key hash prefix must not be empty")
        changed = await self._write(deactivate_api_keys, key_hash_prefix, datetime.now(UTC), audit)
        if changed:
            self._changed(Change(ChangeKind.API_KEY, key_hash_prefix=key_hash_prefix))
        return changed

    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        return await self._write(append_audit, entry)

    async def list_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        return await self._read(list_audit, limit, action)

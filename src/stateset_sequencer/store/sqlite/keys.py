"""Agent signing keys on SQLite: jobs run on a connection's thread (``fn(conn, ...)``,
writers in their own ``BEGIN IMMEDIATE``) and the :class:`KeyRegistry` port over them."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from ..errors import IntegrityError
from ..ports import KeyRegistry
from ..records import AgentKey, AuditEntry, Change, ChangeKind
from ..rows import AGENT_KEY_COLUMNS, AGENT_KEYS, column_list, time_to_text
from . import convert
from .audit import append_in_transaction
from .changes import SqlitePublisher
from .worker import Connections, immediate

_INSERT = (
    f"INSERT INTO agent_signing_keys ({column_list(AGENT_KEY_COLUMNS)}) "  # noqa: S608
    f"VALUES ({convert.placeholders(len(AGENT_KEY_COLUMNS))})"
)
_SELECT = f"SELECT {column_list(AGENT_KEY_COLUMNS)} FROM agent_signing_keys"  # noqa: S608
_PK = "tenant_id = ? AND agent_id = ? AND key_id = ?"


def put_agent_key(conn: sqlite3.Connection, key: AgentKey, audit: AuditEntry | None) -> None:
    with immediate(conn):
        conn.execute(_INSERT, convert.params(AGENT_KEYS, key))
        if audit is not None:
            append_in_transaction(conn, audit)


def get_agent_key(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
) -> AgentKey | None:
    row = conn.execute(f"{_SELECT} WHERE {_PK}", (str(tenant_id), str(agent_id), key_id)).fetchone()
    return None if row is None else convert.record(AGENT_KEYS, row)


def list_agent_keys(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, agent_id: uuid.UUID | None
) -> list[AgentKey]:
    where, params = "tenant_id = ?", [str(tenant_id)]
    if agent_id is not None:
        where += " AND agent_id = ?"
        params.append(str(agent_id))
    rows = conn.execute(f"{_SELECT} WHERE {where} ORDER BY agent_id, key_id", params).fetchall()
    return [convert.record(AGENT_KEYS, r) for r in rows]


def revoke_agent_key(
    conn: sqlite3.Connection,
    tenant_id: uuid.UUID,
    agent_id: uuid.UUID,
    key_id: int,
    at: datetime,
    audit: AuditEntry | None,
) -> AgentKey | None:
    pk = (str(tenant_id), str(agent_id), key_id)
    with immediate(conn):
        # A key already revoked keeps its first revocation time.
        conn.execute(
            "UPDATE agent_signing_keys SET status = 'revoked', revoked_at = ? "  # noqa: S608
            f"WHERE {_PK} AND status <> 'revoked'",
            (time_to_text(at), *pk),
        )
        revoked = get_agent_key(conn, tenant_id, agent_id, key_id)
        if revoked is not None and audit is not None:
            append_in_transaction(conn, audit)
        return revoked


def _change(tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int) -> Change:
    return Change(ChangeKind.AGENT_KEY, tenant_id=tenant_id, agent_id=agent_id, key_id=key_id)


class SqliteKeyRegistry(Connections, SqlitePublisher, KeyRegistry):
    async def put_agent_key(self, key: AgentKey, audit: AuditEntry | None = None) -> AgentKey:
        if (
            key.valid_from is not None
            and key.valid_to is not None
            and key.valid_from > key.valid_to
        ):
            raise IntegrityError("agent key valid_from is after valid_to")
        stored = key if key.created_at is not None else replace(key, created_at=datetime.now(UTC))
        await self._write(put_agent_key, stored, audit)
        self._changed(_change(stored.tenant_id, stored.agent_id, stored.key_id))
        return stored

    async def get_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> AgentKey | None:
        return await self._read(get_agent_key, tenant_id, agent_id, key_id)

    async def list_agent_keys(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID | None = None
    ) -> list[AgentKey]:
        return await self._read(list_agent_keys, tenant_id, agent_id)

    async def revoke_agent_key(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        key_id: int,
        at: datetime,
        audit: AuditEntry | None = None,
    ) -> AgentKey | None:
        revoked = await self._write(revoke_agent_key, tenant_id, agent_id, key_id, at, audit)
        if revoked is not None:
            self._changed(_change(tenant_id, agent_id, key_id))
        return revoked

"""Agent signing keys on PostgreSQL: the :class:`KeyRegistry` port, on the primary pool
(a lagging replica would still accept a key revoked a moment ago)."""

from __future__ import annotations

import uuid
from datetime import datetime

from ..ports import KeyRegistry
from ..records import AgentKey, AuditEntry, Change, ChangeKind
from ..rows import AGENT_KEY_COLUMNS, AGENT_KEYS, column_list
from . import convert
from .audit import append_in_transaction
from .changes import notify
from .errors import mapped
from .pool import Pools, one

_COLUMNS = column_list(AGENT_KEY_COLUMNS)
_SELECT = f"SELECT {_COLUMNS} FROM agent_signing_keys"  # noqa: S608 - fixed names
_PUT_SQL = (
    f"INSERT INTO agent_signing_keys ({_COLUMNS}) "  # noqa: S608 - fixed names
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, NOW())) "
    f"RETURNING {_COLUMNS}"
)
_GET_SQL = f"{_SELECT} WHERE tenant_id = $1 AND agent_id = $2 AND key_id = $3"
_LIST_SQL = (
    f"{_SELECT} WHERE tenant_id = $1 AND ($2::uuid IS NULL OR agent_id = $2) "
    "ORDER BY agent_id, key_id"
)
# A key already revoked keeps its first revocation time.
_REVOKE_SQL = (
    "UPDATE agent_signing_keys "  # noqa: S608 - fixed names
    "SET status = 'revoked', revoked_at = COALESCE(revoked_at, $4) "
    "WHERE tenant_id = $1 AND agent_id = $2 AND key_id = $3 "
    f"RETURNING {_COLUMNS}"
)


def _change(tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int) -> Change:
    return Change(ChangeKind.AGENT_KEY, tenant_id=tenant_id, agent_id=agent_id, key_id=key_id)


class PostgresKeyRegistry(Pools, KeyRegistry):
    async def put_agent_key(self, key: AgentKey, audit: AuditEntry | None = None) -> AgentKey:
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_PUT_SQL, *convert.params(AGENT_KEYS, key))
                if audit is not None:
                    await append_in_transaction(conn, audit)
                await notify(conn, _change(key.tenant_id, key.agent_id, key.key_id))
        return convert.record(AGENT_KEYS, one(row))

    async def get_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> AgentKey | None:
        with mapped():
            row = await self._pool.fetchrow(_GET_SQL, tenant_id, agent_id, key_id)
        return convert.record(AGENT_KEYS, row) if row is not None else None

    async def list_agent_keys(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID | None = None
    ) -> list[AgentKey]:
        with mapped():
            rows = await self._pool.fetch(_LIST_SQL, tenant_id, agent_id)
        return [convert.record(AGENT_KEYS, row) for row in rows]

    async def revoke_agent_key(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        key_id: int,
        at: datetime,
        audit: AuditEntry | None = None,
    ) -> AgentKey | None:
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_REVOKE_SQL, tenant_id, agent_id, key_id, at)
                if row is not None:
                    if audit is not None:
                        await append_in_transaction(conn, audit)
                    await notify(conn, _change(tenant_id, agent_id, key_id))
        return convert.record(AGENT_KEYS, row) if row is not None else None

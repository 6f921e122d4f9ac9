"""Agent event policies (``agent_event_policies``) on PostgreSQL: the
:class:`AgentPolicies` port. Reads go to the primary: a policy set a moment ago must
already govern the next ingest, which a lagging replica would not guarantee."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from ..ports import AgentPolicies
from ..records import AgentPolicy, AuditEntry, Change, ChangeKind
from ..rows import AGENT_POLICIES, AGENT_POLICY_COLUMNS, check_policy, column_list
from . import convert
from .audit import append_in_transaction
from .changes import notify
from .errors import mapped
from .pool import Pools, one

_COLUMNS = column_list(AGENT_POLICY_COLUMNS)
_SELECT = f"SELECT {_COLUMNS} FROM agent_event_policies"  # noqa: S608 - fixed names
_GET_SQL = f"{_SELECT} WHERE tenant_id = $1 AND agent_id = $2"
# A replaced policy keeps its created_at; every other value comes from the proposed row
# (Citus allows only immutable functions in the update clause, so no NOW() there).
_REPLACED = tuple(
    c for c in AGENT_POLICY_COLUMNS if c not in ("tenant_id", "agent_id", "created_at")
)
_UPSERT_SQL = (
    f"INSERT INTO agent_event_policies ({_COLUMNS}) "  # noqa: S608 - fixed names
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(AGENT_POLICY_COLUMNS) + 1))}) "
    "ON CONFLICT (tenant_id, agent_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _REPLACED)
    + f" RETURNING {_COLUMNS}"
)


class PostgresAgentPolicies(Pools, AgentPolicies):
    async def get_policy(self, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> AgentPolicy | None:
        with mapped():
            row = await self._pool.fetchrow(_GET_SQL, tenant_id, agent_id)
        return None if row is None else convert.record(AGENT_POLICIES, row)

    async def put_policy(self, policy: AgentPolicy, *, audit: AuditEntry) -> AgentPolicy:
        check_policy(policy)
        now = datetime.now(UTC)
        stamped = replace(policy, created_at=now, updated_at=now)
        with mapped():
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_UPSERT_SQL, *convert.params(AGENT_POLICIES, stamped))
                await notify(
                    conn,
                    Change(ChangeKind.POLICY, tenant_id=policy.tenant_id, agent_id=policy.agent_id),
                )
                # Last: the audit chain's lock is held from here until the commit.
                await append_in_transaction(conn, audit)
        return convert.record(AGENT_POLICIES, one(row))

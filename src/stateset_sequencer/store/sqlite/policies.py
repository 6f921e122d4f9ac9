"""Agent event policies (``agent_event_policies``) on SQLite: jobs run on a connection's
thread (``fn(conn, ...)``, writers in their own ``BEGIN IMMEDIATE``) and the
:class:`AgentPolicies` port over them."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from ..ports import AgentPolicies
from ..records import AgentPolicy, AuditEntry, Change, ChangeKind
from ..rows import AGENT_POLICIES, AGENT_POLICY_COLUMNS, check_policy, column_list
from . import convert
from .audit import append_in_transaction
from .changes import SqlitePublisher
from .worker import Connections, immediate

_COLUMNS = column_list(AGENT_POLICY_COLUMNS)
_SELECT = f"SELECT {_COLUMNS} FROM agent_event_policies"  # noqa: S608 - fixed names
_PK = "tenant_id = ? AND agent_id = ?"
# A replaced policy keeps its created_at; every other value comes from the proposed row.
_REPLACED = tuple(
    c for c in AGENT_POLICY_COLUMNS if c not in ("tenant_id", "agent_id", "created_at")
)
_UPSERT = (
    f"INSERT INTO agent_event_policies ({_COLUMNS}) "  # noqa: S608 - fixed names
    f"VALUES ({convert.placeholders(len(AGENT_POLICY_COLUMNS))}) "
    "ON CONFLICT (tenant_id, agent_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _REPLACED)
)


def get_policy(
    conn: sqlite3.Connection, tenant_id: uuid.UUID, agent_id: uuid.UUID
) -> AgentPolicy | None:
    row = conn.execute(f"{_SELECT} WHERE {_PK}", (str(tenant_id), str(agent_id))).fetchone()
    return None if row is None else convert.record(AGENT_POLICIES, row)


def put_policy(conn: sqlite3.Connection, policy: AgentPolicy, audit: AuditEntry) -> AgentPolicy:
    with immediate(conn):
        conn.execute(_UPSERT, convert.params(AGENT_POLICIES, policy))
        append_in_transaction(conn, audit)
        stored = get_policy(conn, policy.tenant_id, policy.agent_id)
    assert stored is not None  # written just above, in this transaction
    return stored


class SqliteAgentPolicies(Connections, SqlitePublisher, AgentPolicies):
    async def get_policy(self, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> AgentPolicy | None:
        return await self._read(get_policy, tenant_id, agent_id)

    async def put_policy(self, policy: AgentPolicy, *, audit: AuditEntry) -> AgentPolicy:
        check_policy(policy)
        now = datetime.now(UTC)
        stored = await self._write(
            put_policy, replace(policy, created_at=now, updated_at=now), audit
        )
        self._changed(
            Change(ChangeKind.POLICY, tenant_id=stored.tenant_id, agent_id=stored.agent_id)
        )
        return stored

"""Agent signing keys."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from datetime import datetime

from ..records import (
    AgentKey,
    AuditEntry,
)


class KeyRegistry(ABC):
    """Agents' registered signing keys (``agent_signing_keys``). Reads go to the primary:
    a lagging replica would still accept a key revoked a moment ago."""

    @abstractmethod
    async def put_agent_key(self, key: AgentKey, audit: AuditEntry | None = None) -> AgentKey:
        """Register a key and return it as stored (``created_at`` set when None);
        :class:`IntegrityError` if (tenant, agent, key_id) exists or valid_from >
        valid_to. ``audit`` is appended in the same transaction."""

    @abstractmethod
    async def get_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> AgentKey | None: ...

    @abstractmethod
    async def list_agent_keys(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID | None = None
    ) -> list[AgentKey]:
        """A tenant's keys (of one agent when given), ordered by agent then key id."""

    @abstractmethod
    async def revoke_agent_key(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        key_id: int,
        at: datetime,
        audit: AuditEntry | None = None,
    ) -> AgentKey | None:
        """Mark a key revoked at ``at`` (idempotent: a revoked key keeps its first time);
        None when no such key. ``audit`` is appended in the same transaction when the key
        exists."""

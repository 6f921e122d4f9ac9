"""Agent signing keys as the sequencer consults them: validity at server time, cached.

Validity is judged at the moment of sequencing (``now``), not at the event's
``created_at``, as the reference does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime

from ..store.base import AgentKey, Store

KEY_NOT_FOUND = "Agent key not found"
KEY_REVOKED = "Agent key has been revoked"
KEY_EXPIRED = "Agent key has expired"
KEY_NOT_YET_VALID = "Agent key is not yet valid"


def key_problem(key: AgentKey | None, now: datetime) -> str | None:
    """Why ``key`` cannot sign at ``now``, or None if it can."""
    if key is None:
        return KEY_NOT_FOUND
    if key.status == "revoked" or (key.revoked_at is not None and key.revoked_at <= now):
        return KEY_REVOKED
    if key.valid_to is not None and key.valid_to < now:
        return KEY_EXPIRED
    if key.valid_from is not None and key.valid_from > now:
        return KEY_NOT_YET_VALID
    return None


KeyId = tuple[uuid.UUID, uuid.UUID, int]


class KeyCache:
    """A small TTL cache in front of the key registry.

    Revocations made through this process invalidate their entry at once; a revocation
    made elsewhere (another process, direct SQL) is seen within ``ttl_seconds``.
    """

    def __init__(
        self,
        store: Store,
        ttl_seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._entries: dict[KeyId, tuple[float, AgentKey | None]] = {}

    async def get(self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int) -> AgentKey | None:
        ident = (tenant_id, agent_id, key_id)
        now = self._monotonic()
        hit = self._entries.get(ident)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await self._store.get_agent_key(tenant_id, agent_id, key_id)
        if len(self._entries) > 100_000:  # bound memory under a flood of unknown ids
            self._entries.clear()
        self._entries[ident] = (now + self._ttl, key)
        return key

    def invalidate(self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int) -> None:
        self._entries.pop((tenant_id, agent_id, key_id), None)

"""The TTL cache ingest reads agent state through (keys, policies), with one invalidation
rule for all of it.

A change made through this process drops its entry at once; one made through another
process arrives through the store's change feed (``runtime.changes``); one the feed cannot
tell (direct SQL, or while it is down) is seen within the TTL. Entries are keyed by tuples
that start with ``(tenant_id, agent_id)``, so a whole agent or tenant can be forgotten. A
missing row is cached too (as None): unknown or unrestricted agents cost no query per
batch either.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K", bound=tuple[object, ...])
V = TypeVar("V")

# Bounds memory under a flood of unknown ids: past it the cache starts over.
MAX_ENTRIES = 100_000


class AgentCache(Generic[K, V]):
    def __init__(
        self,
        ttl_seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._max_entries = max_entries
        self._entries: dict[K, tuple[float, V | None]] = {}
        # Bumped by every invalidation: a read that began before one may have fetched the
        # row as it was, and must not put it back for a whole TTL.
        self._generation = 0

    async def get(self, ident: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        now = self._monotonic()
        hit = self._entries.get(ident)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        value = await load()
        if generation != self._generation:
            return value
        if len(self._entries) > self._max_entries:
            self._entries.clear()
        self._entries[ident] = (now + self._ttl, value)
        return value

    def invalidate(self, ident: K) -> None:
        self._generation += 1
        self._entries.pop(ident, None)

    def forget(self, tenant_id: uuid.UUID | None = None, agent_id: uuid.UUID | None = None) -> None:
        """Drop every entry of the agent, of the tenant, or (both None) all of them."""
        self._generation += 1
        if tenant_id is None:
            self._entries.clear()
            return
        for ident in [i for i in self._entries if i[0] == tenant_id and agent_id in (None, i[1])]:
            del self._entries[ident]

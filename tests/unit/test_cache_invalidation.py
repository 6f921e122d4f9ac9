"""What a change from the store's feed drops from each cache (``runtime.changes``), and
the race every cache must win: a read that began before an invalidation must not put the
row it read back into the cache for a whole TTL (a revocation would then be forgotten)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

from stateset_sequencer.runtime.changes import CacheInvalidation
from stateset_sequencer.sequencer.auth import Authenticator
from stateset_sequencer.sequencer.keys import KeyCache
from stateset_sequencer.sequencer.schemas import SchemaRegistry
from stateset_sequencer.store.records import AgentKey, ApiKeyRecord, Change, ChangeKind

TENANT, OTHER = uuid.UUID(int=1), uuid.UUID(int=2)
AGENT = uuid.UUID(int=3)
KEY = AgentKey(TENANT, AGENT, 1, bytes(32))
HOUR = 3600.0


class SlowRegistry:
    """Holds each read until released, so a change can land while it is in flight."""

    def __init__(self) -> None:
        self.key = KEY
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def get_agent_key(self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int) -> Any:
        self.calls += 1
        seen = self.key
        await self.gate.wait()
        return replace(seen, tenant_id=tenant_id, agent_id=agent_id, key_id=key_id)


class Records:
    def __init__(self) -> None:
        self.calls = 0

    async def get_api_key(self, key_hash: str) -> ApiKeyRecord:
        self.calls += 1
        return ApiKeyRecord(key_hash, TENANT)

    async def latest_active_schema(self, tenant_id: uuid.UUID, event_type: str) -> None:
        self.calls += 1


async def test_a_read_in_flight_during_an_invalidation_is_not_cached() -> None:
    registry = SlowRegistry()
    cache = KeyCache(registry, ttl_seconds=HOUR)  # type: ignore[arg-type]
    registry.gate.clear()
    reading = asyncio.create_task(cache.get(TENANT, AGENT, 1))
    await asyncio.sleep(0)  # the read has fetched the row as it was
    registry.key = replace(KEY, status="revoked")
    cache.invalidate(TENANT, AGENT, 1)
    registry.gate.set()
    read, again = await reading, await cache.get(TENANT, AGENT, 1)
    assert read is not None and read.status == "active"  # the caller got what it read...
    assert again is not None and again.status == "revoked"  # ...but it was not kept
    assert registry.calls == 2


async def test_each_change_drops_only_what_it_names() -> None:
    registry = SlowRegistry()
    keys = KeyCache(registry, ttl_seconds=HOUR)  # type: ignore[arg-type]
    records = Records()
    auth = Authenticator(records, cache_ttl_seconds=HOUR)  # type: ignore[arg-type]
    schemas = SchemaRegistry(records, latest_ttl_seconds=HOUR)  # type: ignore[arg-type]
    apply = CacheInvalidation(keys, auth, schemas)

    async def warm() -> None:
        for tenant in (TENANT, OTHER):
            for key_id in (1, 2):
                await keys.get(tenant, AGENT, key_id)
            await schemas.latest(tenant, "a")
            await schemas.latest(tenant, "b")
        for digest in ("aa" * 32, "bb" * 32):
            await auth._lookup(digest)

    await warm()
    reads = (registry.calls, records.calls)
    await warm()
    assert (registry.calls, records.calls) == reads  # all cached

    apply(Change(ChangeKind.AGENT_KEY, tenant_id=TENANT, agent_id=AGENT, key_id=2))
    apply(Change(ChangeKind.API_KEY, key_hash_prefix="aaaa"))
    apply(Change(ChangeKind.SCHEMA, tenant_id=OTHER, event_type="b"))
    await warm()
    assert (registry.calls - reads[0], records.calls - reads[1]) == (1, 2)

    reads = (registry.calls, records.calls)
    apply(Change(ChangeKind.POLICY, tenant_id=TENANT))  # nothing derives from policies yet
    await warm()
    assert (registry.calls, records.calls) == reads

    apply(Change(ChangeKind.ALL))
    await warm()
    assert (registry.calls - reads[0], records.calls - reads[1]) == (4, 6)
    assert apply.received[Change(ChangeKind.ALL)] == 1

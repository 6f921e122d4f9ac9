"""Filling a PostgreSQL database with many streams through the real ingest pipeline, and
registering the test agent with a running server: shared by the scale test, the bulk-ingest
tests and the recovery benchmark."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit

INGEST_BATCH = 1000


def streams(count: int, base: int) -> list[StreamKey]:
    return [StreamKey(kit.TENANT, uuid.UUID(int=base + n)) for n in range(count)]


async def populate(
    dsn: str, keys: list[StreamKey], per_stream: int, *, encrypt_every: int = 50
) -> None:
    """``per_stream`` signed events on each stream (every ``encrypt_every``-th one
    VES-ENC-1 encrypted), migrated and ingested concurrently per stream, as concurrent
    clients would. Raises RuntimeError if the pipeline rejects any."""
    store = await open_store(parse_database_url(dsn, Path()), max_connections=len(keys) + 2)
    try:
        await store.migrate()
        await kit.register(store)
        signed = {
            key: [
                kit.event(
                    i,
                    stream=key,
                    recipients=[(1, kit.X25519_PUBLIC)] if i % encrypt_every == 7 else None,
                )
                for i in range(per_stream)
            ]
            for key in keys
        }
        seq = kit.sequencer(store)
        try:

            async def one(key: StreamKey) -> None:
                for start in range(0, per_stream, INGEST_BATCH):
                    batch = signed[key][start : start + INGEST_BATCH]
                    result = await seq.ingest(kit.AGENT_ID, batch)
                    if result.events_rejected:
                        raise RuntimeError(f"setup rejected events: {result.rejections[:3]}")

            await asyncio.gather(*(one(k) for k in keys))
        finally:
            seq.close()
    finally:
        await store.close()


def register_agent(url: str, admin_key: str, tenant_id: uuid.UUID = kit.TENANT) -> None:
    """Register the test agent's key 1 through the API. Raises RuntimeError if refused."""
    response = httpx.post(
        f"{url}/api/v1/agents/keys",
        json={
            "tenantId": str(tenant_id),
            "agentId": str(kit.AGENT_ID),
            "keyId": 1,
            "publicKey": kit.AGENT.public_key.hex(),
        },
        headers={"X-API-Key": admin_key},
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(f"registering the agent key failed: {response.text}")

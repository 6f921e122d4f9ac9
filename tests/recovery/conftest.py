"""Fixtures for the recovery toolkit: a populated database on SQLite and on PostgreSQL,
reachable both through the store (for setup) and by URL (for the CLI child process)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.ves import signing
from tests.rawsql import behind_the_store

SEQUENCER_PK = signing.Signer(kit.SEQUENCER_SEED).public_key.hex()
STREAM_2 = StreamKey(kit.TENANT, uuid.UUID("00000000-0000-0000-0000-0000000000b2"))


@dataclass
class Db:
    store: Store
    url: str
    dialect: str

    async def sql(self, statement: str, *args: Any) -> list[Any]:
        """Raw SQL behind the store's back (corruption drills). ``$n`` placeholders."""
        return await behind_the_store(self.url, self.dialect, statement, *args)


async def open_db(dialect: str, tmp_path: Path, name: str = "r") -> AsyncIterator[Db]:
    if dialect == "sqlite":
        path = tmp_path / f"{name}.db"
        store: Store = await open_store(parse_database_url(f"sqlite:///{path}", tmp_path))
        await store.migrate()
        try:
            yield Db(store, f"sqlite:///{path}", "sqlite")
        finally:
            await store.close()
    else:
        async with pg.scratch_database() as dsn:
            store = await open_store(parse_database_url(dsn, tmp_path), max_connections=4)
            await store.migrate()
            try:
                yield Db(store, dsn, "postgres")
            finally:
                await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    async for opened in open_db(request.param, tmp_path):
        yield opened


async def populate(
    store: Store,
    count: int,
    *,
    stream: StreamKey = kit.STREAM,
    encrypted: Sequence[int] = (),
    batch: int = 50,
) -> None:
    """``count`` events (indexes in ``encrypted`` are VES-ENC-1 encrypted), sequenced by
    the real ingest pipeline, in batches."""
    if await store.get_agent_key(stream.tenant_id, kit.AGENT_ID, 1) is None:
        await kit.register(store, tenant_id=stream.tenant_id)
    seq = kit.sequencer(store)
    try:
        events = [
            kit.event(
                i,
                stream=stream,
                recipients=[(1, kit.X25519_PUBLIC)] if i in encrypted else None,
            )
            for i in range(count)
        ]
        for start in range(0, count, batch):
            result = await seq.ingest(kit.AGENT_ID, events[start : start + batch])
            assert result.events_rejected == 0, result.rejections
    finally:
        seq.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stateset_sequencer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stream_args(stream: StreamKey = kit.STREAM) -> list[str]:
    return ["--tenant-id", str(stream.tenant_id), "--store-id", str(stream.store_id)]


def verify_cli(db: Db, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        "verify-events",
        *stream_args(),
        "--database-url",
        db.url,
        "--sequencer-public-key",
        SEQUENCER_PK,
        *extra,
    )

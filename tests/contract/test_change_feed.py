"""The :class:`ChangeFeed` contract: a committed change to a cached row, made through one
store, reaches a listener on another store of the same database (another node), and a
refused change reaches nobody. On PostgreSQL a listener whose connection is killed
comes back by itself and says that it may have missed changes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from stateset_sequencer.store.errors import IntegrityError
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import ChangeListener, Store
from stateset_sequencer.store.postgres.changes import APPLICATION_NAME
from stateset_sequencer.store.records import AgentKey, ApiKeyRecord, Change, ChangeKind
from stateset_sequencer.testing.kit import until

from .conftest import Opened

ALL = Change(ChangeKind.ALL)


class Heard:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def __call__(self, change: Change) -> None:
        self.changes.append(change)

    def after_flush(self) -> list[Change]:
        """What arrived after the last ``ALL``."""
        tail = self.changes
        while ALL in tail:
            tail = tail[tail.index(ALL) + 1 :]
        return tail


@pytest.fixture
async def other_node(opened: Opened, tmp_path: Path) -> AsyncIterator[Store]:
    """A second store on the same database, as a second node would open it."""
    store = await open_store(parse_database_url(opened.url, tmp_path), max_connections=2)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def heard(other_node: Store) -> AsyncIterator[Heard]:
    heard = Heard()
    listener: ChangeListener = await other_node.listen(heard)
    try:
        await until(lambda: ALL in heard.changes, "the first connection's flush")
        assert listener.connected
        yield heard
    finally:
        await listener.close()
        assert not listener.connected


async def test_every_cached_row_change_reaches_another_node(store: Store, heard: Heard) -> None:
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    key_change = Change(ChangeKind.AGENT_KEY, tenant_id=tenant, agent_id=agent, key_id=3)
    await store.put_agent_key(AgentKey(tenant, agent, 3, bytes(32)))
    assert await store.revoke_agent_key(tenant, agent, 3, datetime.now(UTC)) is not None
    digest = "ab" * 32
    await store.put_api_key(ApiKeyRecord(digest, tenant))
    assert await store.deactivate_api_keys(digest[:16]) == 1
    schema = await store.put_schema(tenant, "order.created", '{"type": "object"}')
    await store.set_schema_status(schema.id, "deprecated")
    assert await store.delete_schema(schema.id)
    schema_change = Change(ChangeKind.SCHEMA, tenant_id=tenant, event_type="order.created")
    expected = [
        key_change,
        key_change,
        Change(ChangeKind.API_KEY, tenant_id=tenant, key_hash_prefix=digest),
        Change(ChangeKind.API_KEY, key_hash_prefix=digest[:16]),
        schema_change,
        schema_change,
        schema_change,
    ]
    await until(lambda: len(heard.after_flush()) >= len(expected), "seven changes")
    assert heard.after_flush() == expected


async def test_a_refused_or_empty_change_tells_nobody(store: Store, heard: Heard) -> None:
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    await store.put_agent_key(AgentKey(tenant, agent, 1, bytes(32)))
    with pytest.raises(IntegrityError):  # the same key again: rolled back, so not told
        await store.put_agent_key(AgentKey(tenant, agent, 1, bytes(32)))
    assert await store.revoke_agent_key(tenant, agent, 99, datetime.now(UTC)) is None
    assert await store.deactivate_api_keys("ffff") == 0
    assert await store.set_schema_status(uuid.uuid4(), "deprecated") is None
    assert not await store.delete_schema(uuid.uuid4())
    # A change after them all: once it has arrived, nothing else is still on its way.
    barrier = await store.put_schema(tenant, "barrier", "{}")
    barrier_change = Change(ChangeKind.SCHEMA, tenant_id=tenant, event_type=barrier.event_type)
    await until(lambda: barrier_change in heard.changes, "the barrier")
    assert heard.after_flush() == [
        Change(ChangeKind.AGENT_KEY, tenant_id=tenant, agent_id=agent, key_id=1),
        barrier_change,
    ]


async def test_a_listener_whose_connection_is_killed_reconnects_and_flushes(
    opened: Opened, store: Store, other_node: Store
) -> None:
    if opened.backend != "postgres":
        pytest.skip("only PostgreSQL has a connection to lose")
    heard = Heard()
    listener = await other_node.listen(heard)
    try:
        await until(lambda: heard.changes == [ALL], "the first flush")
        admin = await asyncpg.connect(opened.url)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                APPLICATION_NAME,
            )
        finally:
            await admin.close()
        assert killed == 1
        await until(lambda: heard.changes.count(ALL) == 2, "the reconnect's flush")
        assert listener.connected
        tenant = uuid.uuid4()
        await store.put_schema(tenant, "after.reconnect", "{}")
        told = Change(ChangeKind.SCHEMA, tenant_id=tenant, event_type="after.reconnect")
        await until(lambda: told in heard.changes, "a change after the reconnect")
        assert heard.after_flush() == [told]
    finally:
        await listener.close()


async def test_a_payload_it_cannot_read_flushes_everything() -> None:
    from stateset_sequencer.store.postgres.changes import decode, encode

    change = Change(ChangeKind.API_KEY, tenant_id=uuid.uuid4(), key_hash_prefix="ab12")
    assert decode(encode(change)) == change
    for junk in ("", "not json", '{"k": "spaceship"}', '{"k": "agent_key", "i": "1"}', "[]"):
        assert decode(junk) == ALL
    huge = Change(ChangeKind.SCHEMA, tenant_id=change.tenant_id, event_type="e" * 9000)
    assert decode(encode(huge)) == Change(ChangeKind.SCHEMA, tenant_id=change.tenant_id)

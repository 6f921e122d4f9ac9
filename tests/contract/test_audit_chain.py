"""The audit log's hash chain (``AuditChain``, ``ves.audit``): every append is chained,
concurrent appends keep one chain, the database refuses UPDATE and DELETE, rows written
before migration 010 are chained by it, and each privileged change commits (or rolls
back) together with its audit entry."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from stateset_sequencer.sequencer.audit import entry_hash_of, verify_chain
from stateset_sequencer.store.errors import IntegrityError, StoreError
from stateset_sequencer.store.ports import AuditChain, Store
from stateset_sequencer.store.records import AgentKey, ApiKeyRecord, AuditEntry, StreamKey
from stateset_sequencer.ves.audit import GENESIS_HASH
from stateset_sequencer.ves.errors import NonCanonical
from tests.contract.builders import make_event, make_new_event
from tests.contract.conftest import Opened

T0 = datetime(2025, 6, 1, 9, 30, tzinfo=UTC)
TENANT = uuid.UUID("00000000-0000-0000-0000-00000000a0d1")
# JCS refuses an integer beyond a double's range: the entry cannot be hashed, so the
# append fails inside the change's transaction, after the change itself was written.
UNHASHABLE = {"n": 10**400}


def entry(action: str = "test.append", **fields: Any) -> AuditEntry:
    return AuditEntry(action=action, actor="pytest", actor_type="test", **fields)


async def raw(opened: Opened, statement: str, *args: Any) -> list[Any]:
    """SQL behind the store's back, as an operator (or an attacker) would run it."""
    if opened.backend == "sqlite":
        text = statement
        for n in range(len(args), 0, -1):
            text = text.replace(f"${n}", f"?{n}")
        conn = sqlite3.connect(opened.url.removeprefix("sqlite:///"))
        try:
            rows = conn.execute(text, args).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    pg = await asyncpg.connect(opened.url)
    try:
        return list(await pg.fetch(statement, *args))
    finally:
        await pg.close()


async def actions(chain: AuditChain) -> list[str]:
    return [e.action for e in await chain.audit_chain()]


async def test_appends_are_chained_from_the_zero_hash(
    audit_chain: AuditChain, store: Store
) -> None:
    assert await audit_chain.audit_head() is None
    stored = [
        await store.append_audit(entry(f"a{n}", timestamp=T0 + timedelta(microseconds=n)))
        for n in range(3)
    ]
    assert [e.chain_seq for e in stored] == [1, 2, 3]
    assert stored[0].previous_hash == GENESIS_HASH
    assert stored[1].previous_hash == stored[0].entry_hash
    assert stored[2].previous_hash == stored[1].entry_hash
    assert all(entry_hash_of(e) == e.entry_hash for e in stored)
    assert await audit_chain.audit_chain() == stored
    assert await audit_chain.audit_chain(after_seq=1, limit=1) == stored[1:2]
    assert await audit_chain.audit_head() == stored[2]
    assert await audit_chain.audit_entry(2) == stored[1]
    assert await audit_chain.audit_entry(4) is None
    report = await verify_chain(audit_chain)
    assert report.ok and report.entries == 3 and report.head is not None
    assert report.head.chain_seq == 3 and report.head.entry_hash == stored[2].entry_hash


async def test_hash_survives_the_round_trip(store: Store) -> None:
    # Whatever the backend does to JSON (jsonb reorders keys, rewrites numbers) and to
    # times, the hash is over our own canonical document of the values read back.
    stored = await store.append_audit(
        entry(
            tenant_id=TENANT,
            resource_type="thing",
            resource_id="r/1",
            request_id="req",
            ip_address="::1",
            user_agent="ua ✓",
            details={"z": 1, "a": [1.5, None, True, "ü"], "big": 2**60, "f": 1e-7},
            error_message="no",
            success=False,
            timestamp=datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        )
    )
    [read] = await store.audit_chain()
    assert read.entry_hash == stored.entry_hash == entry_hash_of(read)


async def test_concurrent_appends_keep_one_chain(opened: Opened, store: Store) -> None:
    await asyncio.gather(*(store.append_audit(entry(f"c{n}")) for n in range(24)))
    chain = await store.audit_chain()
    assert [e.chain_seq for e in chain] == list(range(1, 25))
    assert sorted(e.action for e in chain) == sorted(f"c{n}" for n in range(24))
    assert (await verify_chain(store)).ok


async def test_update_and_delete_are_refused_by_the_database(opened: Opened, store: Store) -> None:
    await store.append_audit(entry())
    refused: tuple[type[BaseException], ...] = (sqlite3.DatabaseError, asyncpg.PostgresError)
    for statement in (
        "UPDATE audit_log SET actor = 'mallory'",
        "UPDATE audit_log SET entry_hash = previous_hash",
        "DELETE FROM audit_log",
        *(["TRUNCATE audit_log"] if opened.backend == "postgres" else []),
    ):
        with pytest.raises(refused, match="audit log is append-only"):
            await raw(opened, statement)
    [kept] = await store.audit_chain()
    assert kept.actor == "pytest" and (await verify_chain(store)).ok


async def test_an_unchained_insert_is_refused(opened: Opened, store: Store) -> None:
    refused: tuple[type[BaseException], ...] = (sqlite3.DatabaseError, asyncpg.PostgresError)
    with pytest.raises(refused):
        await raw(
            opened,
            "INSERT INTO audit_log (id, timestamp, action, actor, actor_type, details, success) "
            "VALUES ($1, $2, 'x', 'x', 'x', '{}', $3)",
            *(
                (str(uuid.uuid4()), "2025-01-01T00:00:00.000000Z", 1)
                if opened.backend == "sqlite"
                else (uuid.uuid4(), T0, True)
            ),
        )
    assert await store.audit_chain() == []


async def test_migration_chains_rows_written_before_it(opened: Opened, store: Store) -> None:
    await store.rollback(9)
    ids = [uuid.UUID(int=n) for n in (3, 1, 2)]
    # Two rows share a timestamp: the id breaks the tie.
    times = [T0, T0 + timedelta(seconds=1), T0]
    for n, (entry_id, moment) in enumerate(zip(ids, times, strict=True)):
        if opened.backend == "sqlite":
            args: tuple[Any, ...] = (
                str(entry_id),
                moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                f"old{n}",
                f'{{"n": {n}}}',
                1,
            )
        else:
            args = (entry_id, moment, f"old{n}", f'{{"n": {n}}}', True)
        await raw(
            opened,
            "INSERT INTO audit_log (id, timestamp, action, actor, actor_type, details, success) "
            "VALUES ($1, $2, $3, 'old', 'system', $4, $5)",
            *args,
        )
    await store.migrate()
    chain = await store.audit_chain()
    assert [e.action for e in chain] == ["old2", "old0", "old1"]  # (timestamp, id) order
    assert [e.chain_seq for e in chain] == [1, 2, 3]
    assert (await verify_chain(store)).ok
    await store.append_audit(entry("new"))
    assert (await verify_chain(store)).entries == 4


# --- every privileged change commits with its audit entry, or neither does ---------------


def api_key(n: int = 1) -> ApiKeyRecord:
    return ApiKeyRecord(key_hash=f"{n:064x}", tenant_id=TENANT)


def agent_key(key_id: int = 1) -> AgentKey:
    return AgentKey(
        tenant_id=TENANT, agent_id=TENANT, key_id=key_id, public_key=bytes(32), status="active"
    )


async def test_api_key_mint_and_revoke_commit_with_their_entry(store: Store) -> None:
    await store.put_api_key(api_key(1), entry("api_key.create"))
    assert await store.get_api_key(api_key(1).key_hash) is not None
    with pytest.raises(NonCanonical):
        await store.put_api_key(api_key(2), entry("api_key.create", details=UNHASHABLE))
    assert await store.get_api_key(api_key(2).key_hash) is None

    with pytest.raises(NonCanonical):
        await store.deactivate_api_keys(api_key(1).key_hash, entry(details=UNHASHABLE))
    key = await store.get_api_key(api_key(1).key_hash)
    assert key is not None and key.active
    assert await store.deactivate_api_keys(api_key(1).key_hash, entry("api_key.revoke")) == 1
    # Nothing changed, nothing audited.
    assert await store.deactivate_api_keys(api_key(1).key_hash, entry("api_key.revoke")) == 0
    assert await actions(store) == ["api_key.create", "api_key.revoke"]


async def test_agent_key_register_and_revoke_commit_with_their_entry(store: Store) -> None:
    await store.put_agent_key(agent_key(1), entry("agent_key.register"))
    with pytest.raises(IntegrityError):  # the change fails: its entry is not written
        await store.put_agent_key(agent_key(1), entry("agent_key.register"))
    with pytest.raises(NonCanonical):  # the entry fails: the change is not written
        await store.put_agent_key(agent_key(2), entry(details=UNHASHABLE))
    assert await store.get_agent_key(TENANT, TENANT, 2) is None

    with pytest.raises(NonCanonical):
        await store.revoke_agent_key(TENANT, TENANT, 1, T0, entry(details=UNHASHABLE))
    held = await store.get_agent_key(TENANT, TENANT, 1)
    assert held is not None and held.status == "active"
    assert await store.revoke_agent_key(TENANT, TENANT, 1, T0, entry("agent_key.revoke"))
    assert await store.revoke_agent_key(TENANT, TENANT, 9, T0, entry("agent_key.revoke")) is None
    assert await actions(store) == ["agent_key.register", "agent_key.revoke"]


async def test_schema_changes_commit_with_their_entry(store: Store) -> None:
    record = await store.put_schema(TENANT, "order.created", "{}", audit=entry("schema.register"))
    with pytest.raises(NonCanonical):
        await store.put_schema(TENANT, "order.created", "{}", audit=entry(details=UNHASHABLE))
    assert len(await store.list_schemas(TENANT)) == 1

    with pytest.raises(NonCanonical):
        await store.set_schema_status(record.id, "deprecated", entry(details=UNHASHABLE))
    still = await store.get_schema(record.id)
    assert still is not None and still.status == "active"
    await store.set_schema_status(record.id, "deprecated", entry("schema.status"))

    with pytest.raises(NonCanonical):
        await store.delete_schema(record.id, entry(details=UNHASHABLE))
    assert await store.get_schema(record.id) is not None
    assert await store.delete_schema(record.id, entry("schema.delete"))
    assert not await store.delete_schema(record.id, entry("schema.delete"))

    chain = await store.audit_chain()
    assert [e.action for e in chain] == ["schema.register", "schema.status", "schema.delete"]
    # The store completes each entry with what only it knows.
    assert {e.resource_id for e in chain} == {str(record.id)}
    assert [e.details["status"] for e in chain] == ["active", "deprecated", "deprecated"]
    assert all(e.details["version"] == 1 and e.tenant_id == TENANT for e in chain)


async def test_counter_repair_rolls_back_with_an_unhashable_entry(store: Store) -> None:
    stream = StreamKey(TENANT, TENANT)
    news = [make_new_event(make_event(stream, n), n) for n in (1, 2, 3)]
    async with store.stream_transaction(stream) as tx:
        await tx.write(news, {}, 1)  # a counter behind the events: a repair to make
    [before] = await store.counter_states(stream)
    with pytest.raises((NonCanonical, StoreError)):
        await store.set_counter_to_max(stream, before, entry(details=UNHASHABLE))
    assert await store.audit_chain() == []
    assert await store.head(stream) == 1
    await store.set_counter_to_max(stream, before, entry("counter.repair"))
    assert await store.head(stream) == 3 and await actions(store) == ["counter.repair"]

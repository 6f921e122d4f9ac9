"""The :class:`AccessStore` contract (API keys and the audit log), once, against every
backend."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from stateset_sequencer.store.ports import AccessStore
from stateset_sequencer.store.records import ApiKeyRecord, AuditEntry

T0 = datetime(2025, 6, 1, 9, 30, 0, 250001, tzinfo=UTC)


async def test_api_keys_put_replace_get_list(access: AccessStore) -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    reader = await access.put_api_key(ApiKeyRecord("ab" + "0" * 62, tenant))
    assert reader.created_at is not None
    assert await access.get_api_key(reader.key_hash) == reader
    writer = await access.put_api_key(
        ApiKeyRecord(
            "ab" + "1" * 62,
            tenant,
            store_ids=(uuid.UUID(int=5), uuid.UUID(int=6)),
            can_write=True,
            agent_id=uuid.UUID(int=9),
            rate_limit=50,
            created_at=T0,
            parent_key_hash=reader.key_hash,  # minted by the reader: revoked with it
        )
    )
    admin = await access.put_api_key(
        ApiKeyRecord("cd" + "2" * 62, other, can_read=False, can_admin=True, created_at=T0)
    )
    assert await access.get_api_key(writer.key_hash) == writer
    assert await access.get_api_key(admin.key_hash) == admin
    assert await access.get_api_key("ff" * 32) is None

    of_tenant = await access.list_api_keys(tenant)
    assert sorted(of_tenant, key=lambda r: r.key_hash) == [reader, writer]
    assert await access.list_api_keys(other) == [admin]
    assert len(await access.list_api_keys()) == 3
    assert await access.list_api_keys(uuid.uuid4()) == []

    promoted = await access.put_api_key(replace(reader, can_write=True, created_at=T0))
    assert await access.get_api_key(reader.key_hash) == promoted
    assert len(await access.list_api_keys()) == 3


async def test_api_keys_deactivate_by_literal_prefix(access: AccessStore) -> None:
    tenant = uuid.uuid4()
    keys = [
        await access.put_api_key(ApiKeyRecord(h, tenant, created_at=T0))
        for h in ("ab" + "0" * 62, "ab" + "1" * 62, "ac" + "0" * 62)
    ]
    assert await access.deactivate_api_keys("a_") == 0
    assert await access.deactivate_api_keys("a%") == 0
    assert await access.deactivate_api_keys("ab") == 2
    got = [await access.get_api_key(k.key_hash) for k in keys]
    assert [g.active if g else None for g in got] == [False, False, True]
    assert await access.deactivate_api_keys("ffff") == 0


async def test_audit_newest_first_with_action_filter(access: AccessStore) -> None:
    tenant = uuid.uuid4()
    entries = [
        AuditEntry(
            action=action,
            actor=f"key:{n}",
            actor_type="api_key",
            success=n != 1,
            tenant_id=tenant if n else None,
            resource_type="agent_key",
            resource_id=str(n),
            request_id=f"req-{n}",
            ip_address="10.0.0.1",
            user_agent="pytest",
            details={"n": n, "nested": {"list": [1, "two", None]}, "ü": "✓"},
            error_message="denied" if n == 1 else None,
            timestamp=T0 + timedelta(seconds=n, microseconds=n),
        )
        for n, action in enumerate(["key.register", "key.revoke", "key.register"])
    ]
    # As stored: the store fills in the chain fields.
    entries = [await access.append_audit(entry) for entry in entries]
    assert [e.chain_seq for e in entries] == [1, 2, 3]

    assert await access.list_audit() == entries[::-1]
    assert await access.list_audit(limit=2) == entries[:0:-1]
    assert await access.list_audit(action="key.register") == [entries[2], entries[0]]
    assert await access.list_audit(action="nothing") == []

    await access.append_audit(AuditEntry(action="ping", actor="cli", actor_type="admin"))
    newest = (await access.list_audit(limit=1))[0]
    assert newest.action == "ping" and newest.timestamp is not None
    assert newest.timestamp > T0 + timedelta(seconds=2)
    assert newest.details == {} and newest.success is True


async def test_empty_api_key_prefix_is_refused(access: AccessStore) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        await access.deactivate_api_keys("")

"""The :class:`KeyRegistry` contract (agent signing keys), once, against every backend."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stateset_sequencer.store.errors import IntegrityError
from stateset_sequencer.store.ports import KeyRegistry
from stateset_sequencer.store.records import AgentKey
from tests.contract.builders import SIGNER

T0 = datetime(2025, 6, 1, 9, 30, 0, 250001, tzinfo=UTC)


def agent_key(tenant: uuid.UUID, agent: uuid.UUID, key_id: int, **fields: Any) -> AgentKey:
    fields.setdefault("public_key", SIGNER.public_key)
    return AgentKey(tenant, agent, key_id, **fields)


async def test_agent_keys_put_get_list(keys: KeyRegistry) -> None:
    tenant, other_tenant = uuid.uuid4(), uuid.uuid4()
    alice, bob = uuid.UUID(int=1), uuid.UUID(int=2)
    put = await keys.put_agent_key(agent_key(tenant, alice, 1))
    assert put.created_at is not None and put.status == "active"
    assert await keys.get_agent_key(tenant, alice, 1) == put
    windowed = await keys.put_agent_key(
        agent_key(
            tenant,
            alice,
            2,
            valid_from=T0,
            valid_to=T0 + timedelta(days=30, microseconds=1),
            created_at=T0 - timedelta(hours=1),
            key_algorithm=1,
        )
    )
    assert await keys.get_agent_key(tenant, alice, 2) == windowed
    same_instant = await keys.put_agent_key(agent_key(tenant, bob, 1, valid_from=T0, valid_to=T0))
    await keys.put_agent_key(agent_key(other_tenant, alice, 1))

    assert await keys.get_agent_key(tenant, alice, 3) is None
    assert await keys.get_agent_key(tenant, bob, 2) is None
    assert await keys.list_agent_keys(tenant, alice) == [put, windowed]
    everyone = await keys.list_agent_keys(tenant)
    assert sorted(everyone, key=lambda k: (k.agent_id, k.key_id)) == [put, windowed, same_instant]
    assert await keys.list_agent_keys(uuid.uuid4()) == []


async def test_duplicate_agent_key_is_refused(keys: KeyRegistry) -> None:
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    first = await keys.put_agent_key(agent_key(tenant, agent, 7))
    with pytest.raises(IntegrityError):
        await keys.put_agent_key(agent_key(tenant, agent, 7, public_key=bytes(32)))
    assert await keys.get_agent_key(tenant, agent, 7) == first
    assert await keys.list_agent_keys(tenant) == [first]


async def test_agent_key_window_must_not_be_inverted(keys: KeyRegistry) -> None:
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(IntegrityError):
        await keys.put_agent_key(
            agent_key(tenant, agent, 1, valid_from=T0, valid_to=T0 - timedelta(microseconds=1))
        )
    assert await keys.get_agent_key(tenant, agent, 1) is None
    assert await keys.list_agent_keys(tenant) == []


async def test_revoking_an_agent_key_keeps_the_first_time(keys: KeyRegistry) -> None:
    tenant, agent = uuid.uuid4(), uuid.uuid4()
    put = await keys.put_agent_key(agent_key(tenant, agent, 1))
    untouched = await keys.put_agent_key(agent_key(tenant, agent, 2))

    revoked = await keys.revoke_agent_key(tenant, agent, 1, T0)
    assert revoked == replace(put, status="revoked", revoked_at=T0)
    again = await keys.revoke_agent_key(tenant, agent, 1, T0 + timedelta(days=1))
    assert again == revoked
    assert await keys.get_agent_key(tenant, agent, 1) == revoked
    assert await keys.get_agent_key(tenant, agent, 2) == untouched
    assert await keys.revoke_agent_key(tenant, agent, 3, T0) is None
    assert await keys.revoke_agent_key(uuid.uuid4(), agent, 1, T0) is None

"""The :class:`AgentPolicies` contract (``agent_event_policies``), once, against every
backend: upsert and read back, tenant isolation, the audit entry written in the same
transaction as the policy (neither without the other), and the change told to the feed."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stateset_sequencer.store.errors import IntegrityError
from stateset_sequencer.store.ports import AgentPolicies, Store
from stateset_sequencer.store.records import AgentPolicy, AuditEntry, Change, ChangeKind
from stateset_sequencer.testing.kit import until

TENANT_A = uuid.UUID("00000000-0000-0000-0000-00000000aaaa")
TENANT_B = uuid.UUID("00000000-0000-0000-0000-00000000bbbb")
AGENT = uuid.UUID("00000000-0000-0000-0000-0000000000a9")
ACTION = "agent_policy.update"


def policy(
    tenant_id: uuid.UUID = TENANT_A, agent_id: uuid.UUID = AGENT, **fields: Any
) -> AgentPolicy:
    values: dict[str, Any] = {
        "allowed_event_types": ("order.*", "payment.created"),
        "allowed_entity_types": ("order", "payment"),
        "max_payload_bytes": 4096,
    }
    values.update(fields)
    return AgentPolicy(tenant_id, agent_id, **values)


def audit(tenant_id: uuid.UUID = TENANT_A, agent_id: uuid.UUID = AGENT) -> AuditEntry:
    return AuditEntry(
        action=ACTION,
        actor="admin-key",
        actor_type="api_key",
        tenant_id=tenant_id,
        resource_type="agent_policy",
        resource_id=str(agent_id),
        details={"enabled": True},
    )


def recent(moment: datetime | None) -> bool:
    return moment is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


def without_times(value: AgentPolicy) -> AgentPolicy:
    return replace(value, created_at=None, updated_at=None)


async def policy_audits(store: Store) -> list[AuditEntry]:
    return await store.list_audit(1000, ACTION)


# --- upsert and read ------------------------------------------------------------------------


async def test_put_returns_the_stored_policy(policies: AgentPolicies) -> None:
    stored = await policies.put_policy(policy(), audit=audit())
    assert without_times(stored) == policy()
    assert recent(stored.created_at) and stored.created_at == stored.updated_at
    assert stored.created_at is not None and stored.created_at.tzinfo is not None
    assert await policies.get_policy(TENANT_A, AGENT) == stored


async def test_an_agent_without_a_policy_has_none(policies: AgentPolicies) -> None:
    assert await policies.get_policy(TENANT_A, AGENT) is None


async def test_defaults_round_trip(policies: AgentPolicies) -> None:
    bare = AgentPolicy(TENANT_A, AGENT)
    stored = await policies.put_policy(bare, audit=audit())
    assert without_times(stored) == bare
    assert (stored.allowed_event_types, stored.allowed_entity_types) == ((), ())
    assert stored.require_base_version and stored.enabled and stored.max_payload_bytes is None


async def test_a_second_put_replaces_every_field_and_keeps_created_at(
    policies: AgentPolicies,
) -> None:
    first = await policies.put_policy(policy(), audit=audit())
    second_value = policy(
        allowed_event_types=("*",),
        allowed_entity_types=(),
        require_base_version=False,
        max_payload_bytes=None,
        enabled=False,
    )
    second = await policies.put_policy(second_value, audit=audit())
    assert without_times(second) == second_value
    assert second.created_at == first.created_at
    assert second.updated_at is not None and first.updated_at is not None
    assert second.updated_at >= first.updated_at
    assert await policies.get_policy(TENANT_A, AGENT) == second


async def test_rules_are_kept_exactly_as_given(policies: AgentPolicies) -> None:
    # The service sorts; the store keeps the order, the text and the case it was given.
    rules = ("zeta", "Ärger.*", "a b", "日本.*", "x" * 256, '"quoted"\\')
    stored = await policies.put_policy(
        policy(allowed_event_types=rules, allowed_entity_types=("E" * 128,)), audit=audit()
    )
    assert stored.allowed_event_types == rules
    fetched = await policies.get_policy(TENANT_A, AGENT)
    assert fetched is not None and fetched.allowed_event_types == rules
    assert fetched.allowed_entity_types == ("E" * 128,)


async def test_full_lists_are_stored(policies: AgentPolicies) -> None:
    many = tuple(f"type.{i:03d}" for i in range(128))
    stored = await policies.put_policy(
        policy(allowed_event_types=many, allowed_entity_types=many), audit=audit()
    )
    assert stored.allowed_event_types == many and stored.allowed_entity_types == many


async def test_policies_are_per_tenant_and_per_agent(policies: AgentPolicies) -> None:
    other_agent = uuid.uuid4()
    a = await policies.put_policy(policy(), audit=audit())
    b = await policies.put_policy(
        policy(TENANT_B, allowed_event_types=("b.*",)), audit=audit(TENANT_B)
    )
    assert await policies.get_policy(TENANT_A, AGENT) == a
    assert await policies.get_policy(TENANT_B, AGENT) == b
    assert await policies.get_policy(TENANT_A, other_agent) is None
    assert await policies.get_policy(uuid.uuid4(), AGENT) is None
    # Replacing one tenant's policy leaves the other's alone.
    await policies.put_policy(policy(enabled=False), audit=audit())
    assert await policies.get_policy(TENANT_B, AGENT) == b


async def test_concurrent_puts_of_one_agent_all_succeed(policies: AgentPolicies) -> None:
    values = [policy(max_payload_bytes=n) for n in range(1, 9)]
    done = await asyncio.gather(*(policies.put_policy(v, audit=audit()) for v in values))
    assert len(done) == len(values)
    final = await policies.get_policy(TENANT_A, AGENT)
    assert final is not None and final.max_payload_bytes in range(1, 9)


# --- refusals and the audit entry -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"allowed_event_types": tuple(f"t{i}" for i in range(129))},
        {"allowed_entity_types": tuple(f"t{i}" for i in range(129))},
        {"max_payload_bytes": 0},
        {"max_payload_bytes": -1},
        {"max_payload_bytes": 2**31},
        {"allowed_event_types": ("nul\x00byte",)},
        {"allowed_entity_types": ("lone\ud800surrogate",)},
    ],
    ids=["events-129", "entities-129", "size-0", "size-negative", "size-2^31", "nul", "surrogate"],
)
async def test_a_policy_no_store_can_hold_is_refused_with_nothing_written(
    store: Store, bad: dict[str, Any]
) -> None:
    before = await store.put_policy(policy(), audit=audit())
    audits = await policy_audits(store)
    with pytest.raises(IntegrityError):
        await store.put_policy(policy(**bad), audit=audit())
    assert await store.get_policy(TENANT_A, AGENT) == before
    assert await policy_audits(store) == audits


async def test_the_audit_entry_is_written_with_the_policy(store: Store) -> None:
    entry = audit()
    stored = await store.put_policy(policy(), audit=entry)
    found = [e for e in await policy_audits(store) if e.id == entry.id]
    assert len(found) == 1
    written = found[0]
    assert (written.action, written.actor, written.actor_type) == (ACTION, "admin-key", "api_key")
    assert (written.tenant_id, written.resource_type, written.resource_id) == (
        TENANT_A,
        "agent_policy",
        str(AGENT),
    )
    assert written.details == {"enabled": True}
    assert stored is not None


async def test_an_audit_entry_that_cannot_be_written_leaves_no_policy(store: Store) -> None:
    """The audit entry is in the policy's transaction: when it fails (here an id already
    taken), the policy is not written either."""
    first = audit()
    before = await store.put_policy(policy(), audit=first)
    with pytest.raises(IntegrityError):
        await store.put_policy(policy(enabled=False, max_payload_bytes=7), audit=first)
    assert await store.get_policy(TENANT_A, AGENT) == before
    with pytest.raises(IntegrityError):
        await store.put_policy(policy(TENANT_B), audit=replace(first, tenant_id=TENANT_B))
    assert await store.get_policy(TENANT_B, AGENT) is None
    assert [e.id for e in await policy_audits(store)] == [first.id]


# --- the change feed ------------------------------------------------------------------------


async def test_a_put_is_told_to_the_feed_and_a_refused_one_is_not(store: Store) -> None:
    heard: list[Change] = []
    listener = await store.listen(heard.append)
    try:
        await until(lambda: Change(ChangeKind.ALL) in heard, "the first flush")
        await store.put_policy(policy(), audit=audit())
        with pytest.raises(IntegrityError):
            await store.put_policy(policy(max_payload_bytes=0), audit=audit())
        taken = audit()
        await store.put_policy(policy(TENANT_B), audit=taken)
        with pytest.raises(IntegrityError):  # the audit id is taken: rolled back, not told
            await store.put_policy(policy(TENANT_B), audit=taken)
        barrier_agent = uuid.uuid4()
        await store.put_policy(policy(agent_id=barrier_agent), audit=audit())
        barrier = Change(ChangeKind.POLICY, tenant_id=TENANT_A, agent_id=barrier_agent)
        await until(lambda: barrier in heard, "the barrier")
    finally:
        await listener.close()
    tail = heard[len(heard) - 1 - heard[::-1].index(Change(ChangeKind.ALL)) + 1 :]
    assert tail == [
        Change(ChangeKind.POLICY, tenant_id=TENANT_A, agent_id=AGENT),
        Change(ChangeKind.POLICY, tenant_id=TENANT_B, agent_id=AGENT),
        barrier,
    ]

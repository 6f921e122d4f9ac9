"""The agent-policy rule (``sequencer.policies``): rule matching (examples and hypothesis
properties), what a PUT may store and the reference's message for each fault, the order
of the checks at ingest, and the policy cache's TTL and invalidation."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.runtime.changes import CacheInvalidation
from stateset_sequencer.sequencer import policies
from stateset_sequencer.sequencer.auth import Authenticator
from stateset_sequencer.sequencer.keys import KeyCache
from stateset_sequencer.sequencer.outcomes import Verified
from stateset_sequencer.sequencer.policies import (
    POLICY_DENIED,
    PolicyCache,
    PolicyInputError,
    PolicyReason,
    denial,
    matches_any,
    rule_matches,
    validated_policy,
)
from stateset_sequencer.sequencer.schemas import SchemaRegistry
from stateset_sequencer.store.records import AgentPolicy, Change, ChangeKind
from stateset_sequencer.testing import kit
from stateset_sequencer.ves.jsontext import StoredTexts, encrypted_text, payload_text

TENANT, OTHER = uuid.UUID(int=1), uuid.UUID(int=2)
AGENT = uuid.UUID(int=3)
HOUR = 3600.0

names = st.text(max_size=20)
plain_rules = st.text(min_size=1, max_size=20).filter(lambda r: "*" not in r)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # what the policy rules never read
NO_TEXTS = StoredTexts(None, None, None)


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("*", "anything.at.all", True),
        ("*", "", True),
        ("order.created", "order.created", True),
        ("order.created", "order.created.v2", False),
        ("order.created", "Order.created", False),
        ("order.*", "order.confirmed", True),
        ("order.*", "order.", True),
        ("order.*", "orders.confirmed", False),
        ("order.*", "order", False),
        ("order*", "orders.confirmed", True),
        ("日本.*", "日本.注文", True),
    ],
)
def test_rule_examples(rule: str, value: str, expected: bool) -> None:
    assert rule_matches(rule, value) is expected


def test_an_empty_list_matches_nothing() -> None:
    assert not matches_any([], "order.created")
    assert not matches_any((), "")


@given(names)
def test_the_wildcard_matches_every_name(value: str) -> None:
    assert rule_matches("*", value)


@given(plain_rules, names)
def test_a_rule_without_a_wildcard_matches_only_itself(rule: str, value: str) -> None:
    assert rule_matches(rule, value) is (rule == value)
    assert rule_matches(rule, rule)


@given(st.text(max_size=10).filter(lambda p: "*" not in p), names)
def test_a_trailing_wildcard_matches_by_prefix(prefix: str, value: str) -> None:
    assert rule_matches(prefix + "*", value) is value.startswith(prefix)
    assert rule_matches(prefix + "*", prefix + value)


@given(st.lists(st.text(max_size=10)), st.lists(st.text(max_size=10)), names)
def test_matching_a_list_is_matching_any_rule_and_adding_rules_never_narrows(
    rules: list[str], more: list[str], value: str
) -> None:
    assert matches_any(rules, value) is any(rule_matches(r, value) for r in rules)
    if matches_any(rules, value):
        assert matches_any(rules + more, value)


# --- what a PUT may store ---------------------------------------------------------------------


def refused(**fields: Any) -> PolicyInputError:
    with pytest.raises(PolicyInputError) as caught:
        validated_policy(TENANT, AGENT, **fields)
    return caught.value


@pytest.mark.parametrize(
    ("fields", "reason", "message"),
    [
        (
            {"allowed_event_types": [f"t{i}" for i in range(129)]},
            PolicyReason.TOO_MANY_RULES,
            "allowedEventTypes may contain at most 128 rules",
        ),
        (
            {"allowed_entity_types": ["e"] * 129},  # counted before duplicates are dropped
            PolicyReason.TOO_MANY_RULES,
            "allowedEntityTypes may contain at most 128 rules",
        ),
        (
            {"allowed_event_types": ["*bad"] * 129},  # the count comes before the rules
            PolicyReason.TOO_MANY_RULES,
            "allowedEventTypes may contain at most 128 rules",
        ),
        (
            {"allowed_event_types": [""]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEventTypes rule: ",
        ),
        (
            {"allowed_event_types": ["ok", "*.created"]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEventTypes rule: *.created",
        ),
        (
            {"allowed_event_types": ["order.*.created"]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEventTypes rule: order.*.created",
        ),
        (
            {"allowed_event_types": ["order**"]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEventTypes rule: order**",
        ),
        (
            {"allowed_event_types": ["**"]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEventTypes rule: **",
        ),
        (
            {"allowed_event_types": ["x" * 257]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEventTypes rule: " + "x" * 257,
        ),
        (
            # 129 characters, 258 bytes: the limit counts UTF-8 bytes, as the reference.
            {"allowed_event_types": ["é" * 129]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEventTypes rule: " + "é" * 129,
        ),
        (
            {"allowed_entity_types": ["y" * 129]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEntityTypes rule: " + "y" * 129,
        ),
        (
            {"allowed_entity_types": ["a*b"]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEntityTypes rule: a*b",
        ),
        (
            {"allowed_event_types": ["nul\x00"]},
            PolicyReason.INVALID_RULE,
            "invalid allowedEventTypes rule: nul\ufffd",
        ),
        (
            {"max_payload_bytes": 0},
            PolicyReason.INVALID_MAX_PAYLOAD,
            "maxPayloadBytes must be between 1 and 10485760",
        ),
        (
            {"max_payload_bytes": 10 * 1024 * 1024 + 1},
            PolicyReason.INVALID_MAX_PAYLOAD,
            "maxPayloadBytes must be between 1 and 10485760",
        ),
        (
            {"max_payload_bytes": -5},
            PolicyReason.INVALID_MAX_PAYLOAD,
            "maxPayloadBytes must be between 1 and 10485760",
        ),
    ],
)
def test_each_fault_gets_the_reference_message(
    fields: dict[str, Any], reason: PolicyReason, message: str
) -> None:
    fault = refused(**fields)
    assert (fault.reason, fault.message) == (reason, message)


def test_faults_are_reported_in_the_reference_order() -> None:
    # Event rules, then entity rules, then the size limit.
    fault = refused(allowed_event_types=["*x"], allowed_entity_types=["*y"], max_payload_bytes=0)
    assert fault.message == "invalid allowedEventTypes rule: *x"
    fault = refused(allowed_entity_types=["*y"], max_payload_bytes=0)
    assert fault.message == "invalid allowedEntityTypes rule: *y"


def test_a_hostile_rule_is_shown_cut_short() -> None:
    fault = refused(allowed_event_types=["z" * 100_000])
    assert len(fault.message.encode()) < 600


@pytest.mark.parametrize("rule", ["*", "a*", "order.*", "x" * 255 + "*", "é" * 128])
def test_good_event_rules(rule: str) -> None:
    assert validated_policy(TENANT, AGENT, allowed_event_types=[rule]).allowed_event_types == (
        rule,
    )


@pytest.mark.parametrize("size", [None, 1, 1024, 10 * 1024 * 1024])
def test_good_sizes(size: int | None) -> None:
    assert validated_policy(TENANT, AGENT, max_payload_bytes=size).max_payload_bytes == size


def test_defaults_are_the_reference_defaults() -> None:
    assert validated_policy(TENANT, AGENT) == AgentPolicy(
        TENANT, AGENT, (), (), require_base_version=True, max_payload_bytes=None, enabled=True
    )


valid_rules = st.lists(
    st.text(
        st.characters(blacklist_characters="*\x00", blacklist_categories=["Cs"]),
        min_size=1,
        max_size=8,
    )
    | st.just("*"),
    max_size=128,
)


@given(valid_rules, valid_rules)
def test_lists_are_stored_sorted_and_without_duplicates(
    events: list[str], entities: list[str]
) -> None:
    stored = validated_policy(
        TENANT, AGENT, allowed_event_types=events, allowed_entity_types=entities
    )
    for given_rules, kept in (
        (events, stored.allowed_event_types),
        (entities, stored.allowed_entity_types),
    ):
        assert list(kept) == sorted(set(given_rules))
        # Code-point order is UTF-8 byte order, the reference's sort.
        assert [r.encode() for r in kept] == sorted(r.encode() for r in kept)


# --- the check at ingest ---------------------------------------------------------------------


def event(**fields: Any) -> Any:
    return kit.event(1, **fields)


STRICT = AgentPolicy(
    TENANT,
    AGENT,
    allowed_event_types=("order.*",),
    allowed_entity_types=("order",),
    require_base_version=True,
    max_payload_bytes=64,
)


def test_an_event_within_the_policy_passes() -> None:
    assert denial(STRICT, event(event_type="order.created")) is None
    assert denial(STRICT, event(event_type="order.paid", base_version=3)) is None


def test_no_policy_or_a_disabled_one_restricts_nothing() -> None:
    wild = event(event_type="other.thing", entity_type="other", payload={"x": "y" * 500})
    assert denial(None, wild) is None
    assert denial(replace(STRICT, enabled=False), wild) is None
    assert denial(replace(STRICT, allowed_event_types=(), enabled=False), wild) is None


def test_the_checks_run_in_the_reference_order() -> None:
    # Faulty in every way: the event type is named first.
    worst = event(event_type="user.updated", entity_type="user", payload={"x": "y" * 500})
    assert denial(STRICT, worst) == "event type is not allowed for this agent: user.updated"
    # Event type allowed: the entity type next.
    second = event(event_type="order.updated", entity_type="user", payload={"x": "y" * 500})
    assert denial(STRICT, second) == "entity type is not allowed for this agent: user"
    # Both allowed: base_version next.
    third = event(event_type="order.updated", payload={"x": "y" * 500})
    assert denial(STRICT, third) == "base_version is required when modifying an existing entity"
    # Then the size.
    fourth = event(event_type="order.updated", base_version=1, payload={"x": "y" * 500})
    assert denial(STRICT, fourth) == "payload exceeds this agent's 64 byte policy limit"


def test_an_empty_list_refuses_every_event() -> None:
    closed = replace(STRICT, allowed_event_types=())
    message = denial(closed, event(event_type="order.created"))
    assert message == "event type is not allowed for this agent: order.created"
    closed = replace(STRICT, allowed_entity_types=())
    assert denial(closed, event(event_type="order.created")) == (
        "entity type is not allowed for this agent: order"
    )


def test_base_version_is_not_asked_of_a_creating_event_or_when_not_required() -> None:
    assert denial(STRICT, event(event_type="order.created")) is None
    # Only the suffix counts: ".created" in the middle is a modification.
    assert denial(STRICT, event(event_type="order.created.fixed")) is not None
    loose = replace(STRICT, require_base_version=False)
    assert denial(loose, event(event_type="order.updated")) is None
    assert denial(STRICT, event(event_type="order.updated", base_version=0)) is None


def test_the_size_limit_counts_the_stored_json_text() -> None:
    payload = {"note": "café ☕", "n": 12345678901234567890123}
    env = event(event_type="order.created", payload=payload)
    text = payload_text(env)
    assert text is not None
    size = len(text.encode("utf-8"))
    assert policies.payload_bytes(env) == size
    assert denial(replace(STRICT, max_payload_bytes=size), env) is None
    assert denial(replace(STRICT, max_payload_bytes=size - 1), env) == (
        f"payload exceeds this agent's {size - 1} byte policy limit"
    )


def test_an_encrypted_payload_is_counted_by_its_encrypted_form() -> None:
    env = event(event_type="order.created", recipients=[(1, kit.X25519_PUBLIC)])
    assert env.payload is None and env.payload_encrypted is not None
    text = encrypted_text(env)
    assert text is not None
    size = len(text.encode("utf-8"))
    assert policies.payload_bytes(env) == size
    assert denial(replace(STRICT, max_payload_bytes=size), env) is None
    assert denial(replace(STRICT, max_payload_bytes=size - 1), env) is not None


def test_a_refusal_is_a_rejection_with_our_stable_reason() -> None:
    env = event(event_type="user.created")
    rejection = policies.check_event(STRICT, env)
    assert rejection is not None
    assert (rejection.event_id, rejection.reason) == (env.event_id, POLICY_DENIED)
    assert POLICY_DENIED == "agent_policy_denied"


def test_apply_policy_keeps_the_order_of_what_passes() -> None:
    items = [
        Verified(event(event_type=t, entity_id=f"E{i}"), b"", EPOCH, NO_TEXTS)
        for i, t in enumerate(["order.created", "user.created", "order.shipped", "order.created"])
    ]
    kept, rejected = policies.apply_policy(STRICT, items)
    assert kept == [items[0], items[3]]
    assert [r.event_id for r in rejected] == [
        items[1].envelope.event_id,
        items[2].envelope.event_id,
    ]


# --- the cache ------------------------------------------------------------------------------


class Policies:
    """A policy store counting its reads, whose reads can be held until released."""

    def __init__(self, policy: AgentPolicy | None = STRICT) -> None:
        self.policy = policy
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def get_policy(self, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> AgentPolicy | None:
        self.calls += 1
        seen = self.policy
        await self.gate.wait()
        return None if seen is None else replace(seen, tenant_id=tenant_id, agent_id=agent_id)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_policy_is_read_once_per_ttl_and_a_missing_one_is_cached_too() -> None:
    store, clock = Policies(None), Clock()
    cache = PolicyCache(store, ttl_seconds=30, monotonic=clock)  # type: ignore[arg-type]
    assert await cache.get(TENANT, AGENT) is None
    assert await cache.get(TENANT, AGENT) is None
    assert store.calls == 1
    clock.now = 31
    store.policy = STRICT
    assert await cache.get(TENANT, AGENT) is not None
    assert store.calls == 2


async def test_a_batch_costs_one_lookup_and_nothing_to_judge_costs_none() -> None:
    store = Policies()
    cache = PolicyCache(store, ttl_seconds=0)  # type: ignore[arg-type]
    items = [
        Verified(event(event_type="order.created", entity_id=f"E{i}"), b"", EPOCH, NO_TEXTS)
        for i in range(50)
    ]
    kept, rejected = await cache.enforce(TENANT, AGENT, items)
    assert (len(kept), rejected, store.calls) == (50, [], 1)
    assert await cache.enforce(TENANT, AGENT, []) == ([], [])
    assert store.calls == 1


async def test_invalidate_and_forget_drop_what_they_name() -> None:
    store = Policies()
    cache = PolicyCache(store, ttl_seconds=HOUR)  # type: ignore[arg-type]
    other_agent = uuid.uuid4()
    for tenant, agent in ((TENANT, AGENT), (TENANT, other_agent), (OTHER, AGENT)):
        await cache.get(tenant, agent)
    assert store.calls == 3
    cache.invalidate(TENANT, AGENT)
    await cache.get(TENANT, AGENT)
    await cache.get(TENANT, other_agent)
    assert store.calls == 4
    cache.forget(TENANT)
    await cache.get(TENANT, other_agent)
    await cache.get(OTHER, AGENT)
    assert store.calls == 5
    cache.forget()
    await cache.get(OTHER, AGENT)
    assert store.calls == 6


async def test_a_read_in_flight_during_an_invalidation_is_not_cached() -> None:
    store = Policies(None)
    cache = PolicyCache(store, ttl_seconds=HOUR)  # type: ignore[arg-type]
    store.gate.clear()
    reading = asyncio.create_task(cache.get(TENANT, AGENT))
    await asyncio.sleep(0)  # the read has fetched "no policy" as it was
    store.policy = STRICT
    cache.invalidate(TENANT, AGENT)
    store.gate.set()
    assert await reading is None  # the caller gets what it read ...
    assert await cache.get(TENANT, AGENT) is not None  # ... but it was not kept
    assert store.calls == 2


async def test_the_change_feed_drops_policies() -> None:
    store = Policies()
    cache = PolicyCache(store, ttl_seconds=HOUR)  # type: ignore[arg-type]
    invalidation = CacheInvalidation(
        KeyCache(store, HOUR),  # type: ignore[arg-type]
        Authenticator(store),  # type: ignore[arg-type]
        SchemaRegistry(store),  # type: ignore[arg-type]
        policies=cache,
    )
    await cache.get(TENANT, AGENT)
    await cache.get(OTHER, AGENT)
    invalidation(Change(ChangeKind.POLICY, tenant_id=TENANT, agent_id=AGENT))
    await cache.get(TENANT, AGENT)
    await cache.get(OTHER, AGENT)
    assert store.calls == 3
    invalidation(Change(ChangeKind.POLICY, tenant_id=OTHER))  # no agent: the whole tenant
    await cache.get(OTHER, AGENT)
    assert store.calls == 4
    invalidation(Change(ChangeKind.ALL))
    await cache.get(TENANT, AGENT)
    await cache.get(OTHER, AGENT)
    assert store.calls == 6
    # Other kinds leave policies alone.
    invalidation(Change(ChangeKind.SCHEMA, tenant_id=TENANT, event_type="order.created"))
    await cache.get(TENANT, AGENT)
    assert store.calls == 6

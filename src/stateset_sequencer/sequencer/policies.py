"""Agent event policies: what one agent of a tenant may write, checked at ingest.

A policy lists the event types and entity types an agent may write, whether an event that
modifies an existing entity must carry ``base_version``, and a payload size limit of its
own. No policy, or a disabled one, means no restriction. This module holds the whole rule:

* :func:`validated_policy`, what an admin may store (REFERENCE_DELTA §3.4): at most
  :data:`MAX_RULES` rules per list, each non-empty, at most :data:`MAX_EVENT_RULE_BYTES` /
  :data:`MAX_ENTITY_RULE_BYTES` bytes of UTF-8, with at most one ``*`` and only as its last
  character; ``maxPayloadBytes`` in 1..:data:`MAX_POLICY_PAYLOAD_BYTES`. Lists are stored
  sorted (by code point, which is UTF-8 byte order) without duplicates;
* :func:`rule_matches`, how a rule matches a name: ``*`` matches anything, a rule ending in
  ``*`` matches by prefix (``order.*`` matches ``order.paid``, not ``orders.paid``), any
  other rule only the exact name. An empty list matches nothing;
* :func:`denial`, the check of one event, in the reference's order (REFERENCE_DELTA §2.4):
  event type, entity type, ``base_version`` (unless the event type ends in ``.created``),
  payload size (the compact JSON bytes of ``payload``, else of ``payload_encrypted``, as
  stored);
* :class:`PolicyCache`, through which ingest reads policies: one lookup per batch (a batch
  has one tenant and one agent), with the agent-key cache's TTL and invalidation.

A refused event is a per-event rejection with the reason :data:`POLICY_DENIED` and the
reference's message; it consumes no sequence number, and the batch's other events go on.
Ingest runs the check after the signature check and before the command-id and sequencing
steps, so only an event the agent provably signed is judged, and a refused one reserves
nothing. An exact replay of a stored event still gets its receipt (replays are answered
before any per-event check): a policy governs what is sequenced from now on, not what
already was.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from ..store.ports import AgentPolicies, KeyRegistry
from ..store.records import AgentPolicy, AuditEntry
from ..ves.envelope import VesEventEnvelope
from ..ves.jsontext import encrypted_text, payload_text
from ..ves.storable import is_storable, make_storable, utf8_size
from .agent_cache import AgentCache
from .outcomes import Rejection, Verified

MAX_RULES = 128
MAX_EVENT_RULE_BYTES = 256
MAX_ENTITY_RULE_BYTES = 128
MAX_POLICY_PAYLOAD_BYTES = 10 * 1024 * 1024
WILDCARD = "*"
# A PUT body holding the largest policy these limits allow, every character of every rule
# sent as a six-byte \u escape: 128 x (6 x 256 + 3) + 128 x (6 x 128 + 3) bytes, ~289 KiB.
MAX_POLICY_BODY_BYTES = 320 * 1024

EVENT_TYPES_FIELD = "allowedEventTypes"
ENTITY_TYPES_FIELD = "allowedEntityTypes"
MAX_PAYLOAD_FIELD = "maxPayloadBytes"

# The reference does not say which reason code its policy rejections carry; this is ours,
# stable, and in the reference's snake_case style for per-event reasons.
POLICY_DENIED = "agent_policy_denied"
# An event type with this suffix creates its entity, so it has no version to name.
CREATING_SUFFIX = ".created"

AUDIT_ACTION = "agent_policy.update"
AUDIT_RESOURCE = "agent_policy"

POLICY_NOT_FOUND = "Agent policy not found"
AGENT_NOT_FOUND = "Agent not found"

# How much of a refused rule a message repeats: a valid rule in full, a hostile one cut.
_SHOWN_RULE_BYTES = 512


class PolicyReason(enum.StrEnum):
    """Why a policy request is refused. Every reason this module raises is here;
    ``api/http/errors.py`` maps each to its status and code."""

    TOO_MANY_RULES = "POLICY_TOO_MANY_RULES"
    INVALID_RULE = "POLICY_INVALID_RULE"
    INVALID_MAX_PAYLOAD = "POLICY_INVALID_MAX_PAYLOAD_BYTES"
    POLICY_NOT_FOUND = "AGENT_POLICY_NOT_FOUND"
    AGENT_NOT_FOUND = "POLICY_AGENT_NOT_FOUND"


class PolicyInputError(ValueError):
    """A policy request refused, with its reason and the reference's message."""

    def __init__(self, reason: PolicyReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# --- what may be stored -------------------------------------------------------------------


def rule_fault(rule: str, max_bytes: int) -> bool:
    """Whether ``rule`` breaks the rule syntax: empty, over ``max_bytes`` of UTF-8, not
    storable text (a lone surrogate, NUL), or a ``*`` anywhere but once at the end."""
    size = utf8_size(rule)
    if size is None or size == 0 or size > max_bytes or not is_storable(rule):
        return True
    stars = rule.count(WILDCARD)
    return stars > 1 or (stars == 1 and not rule.endswith(WILDCARD))


def normalized_rules(name: str, rules: Sequence[str], max_bytes: int) -> tuple[str, ...]:
    """``rules`` checked as the reference does (the count first, before duplicates are
    dropped), then sorted without duplicates."""
    if len(rules) > MAX_RULES:
        raise PolicyInputError(
            PolicyReason.TOO_MANY_RULES, f"{name} may contain at most {MAX_RULES} rules"
        )
    for rule in rules:
        if rule_fault(rule, max_bytes):
            shown = make_storable(rule, max_bytes=_SHOWN_RULE_BYTES)
            raise PolicyInputError(PolicyReason.INVALID_RULE, f"invalid {name} rule: {shown}")
    return tuple(sorted(set(rules)))


def validated_policy(
    tenant_id: uuid.UUID,
    agent_id: uuid.UUID,
    *,
    allowed_event_types: Sequence[str] = (),
    allowed_entity_types: Sequence[str] = (),
    require_base_version: bool = True,
    max_payload_bytes: int | None = None,
    enabled: bool = True,
) -> AgentPolicy:
    """The policy to store for a PUT, or :class:`PolicyInputError` at the first fault in
    the reference's order (event rules, entity rules, the size limit)."""
    events = normalized_rules(EVENT_TYPES_FIELD, allowed_event_types, MAX_EVENT_RULE_BYTES)
    entities = normalized_rules(ENTITY_TYPES_FIELD, allowed_entity_types, MAX_ENTITY_RULE_BYTES)
    if max_payload_bytes is not None and not 1 <= max_payload_bytes <= MAX_POLICY_PAYLOAD_BYTES:
        raise PolicyInputError(
            PolicyReason.INVALID_MAX_PAYLOAD,
            f"{MAX_PAYLOAD_FIELD} must be between 1 and {MAX_POLICY_PAYLOAD_BYTES}",
        )
    return AgentPolicy(
        tenant_id=tenant_id,
        agent_id=agent_id,
        allowed_event_types=events,
        allowed_entity_types=entities,
        require_base_version=require_base_version,
        max_payload_bytes=max_payload_bytes,
        enabled=enabled,
    )


def audit_details(policy: AgentPolicy) -> dict[str, object]:
    """What the audit entry of a policy change records: the policy as stored, in the
    reference's names."""
    return {
        "enabled": policy.enabled,
        "allowedEventTypes": list(policy.allowed_event_types),
        "allowedEntityTypes": list(policy.allowed_entity_types),
        "requireBaseVersion": policy.require_base_version,
        "maxPayloadBytes": policy.max_payload_bytes,
    }


async def put_policy(
    keys: KeyRegistry,
    policies: AgentPolicies,
    policy: AgentPolicy,
    *,
    actor: str,
    actor_type: str,
    request_id: str | None = None,
) -> AgentPolicy:
    """Store a validated policy with its audit entry (one transaction). An agent with no
    signing key in the tenant (active or not) is refused as unknown: its policy could
    govern nothing, and a typo in the agent id would otherwise pass unnoticed."""
    if not await keys.list_agent_keys(policy.tenant_id, policy.agent_id):
        raise PolicyInputError(PolicyReason.AGENT_NOT_FOUND, AGENT_NOT_FOUND)
    audit = AuditEntry(
        action=AUDIT_ACTION,
        actor=actor,
        actor_type=actor_type,
        tenant_id=policy.tenant_id,
        resource_type=AUDIT_RESOURCE,
        resource_id=str(policy.agent_id),
        request_id=request_id,
        details=audit_details(policy),
    )
    return await policies.put_policy(policy, audit=audit)


# --- matching and the check at ingest -------------------------------------------------------


def rule_matches(rule: str, value: str) -> bool:
    if rule in (WILDCARD, value):
        return True
    return rule.endswith(WILDCARD) and value.startswith(rule[:-1])


def matches_any(rules: Iterable[str], value: str) -> bool:
    """Whether any rule matches ``value``; an empty list matches nothing."""
    return any(rule_matches(rule, value) for rule in rules)


def payload_bytes(env: VesEventEnvelope) -> int:
    """The compact JSON bytes of ``payload``, else of ``payload_encrypted`` (the reference's
    order), counted over the text the stores keep; 0 when the event has neither."""
    text = payload_text(env) if env.payload is not None else encrypted_text(env)
    return 0 if text is None else len(text.encode("utf-8"))


def denial(policy: AgentPolicy | None, env: VesEventEnvelope) -> str | None:
    """Why ``policy`` refuses ``env`` (the reference's message), or None when it does not;
    checked in the reference's order. No policy or a disabled one refuses nothing."""
    if policy is None or not policy.enabled:
        return None
    if not matches_any(policy.allowed_event_types, env.event_type):
        return f"event type is not allowed for this agent: {env.event_type}"
    if not matches_any(policy.allowed_entity_types, env.entity_type):
        return f"entity type is not allowed for this agent: {env.entity_type}"
    if (
        policy.require_base_version
        and not env.event_type.endswith(CREATING_SUFFIX)
        and env.base_version is None
    ):
        return "base_version is required when modifying an existing entity"
    limit = policy.max_payload_bytes
    if limit is not None and payload_bytes(env) > limit:
        return f"payload exceeds this agent's {limit} byte policy limit"
    return None


def check_event(policy: AgentPolicy | None, env: VesEventEnvelope) -> Rejection | None:
    message = denial(policy, env)
    return None if message is None else Rejection(env.event_id, POLICY_DENIED, message)


def apply_policy(
    policy: AgentPolicy | None, verified: Sequence[Verified]
) -> tuple[list[Verified], list[Rejection]]:
    """The events ``policy`` lets through, in order, and a rejection for each other."""
    if policy is None or not policy.enabled:
        return list(verified), []
    kept: list[Verified] = []
    rejections: list[Rejection] = []
    for item in verified:
        rejection = check_event(policy, item.envelope)
        if rejection is None:
            kept.append(item)
        else:
            rejections.append(rejection)
    return kept, rejections


# --- the cache ingest reads through -------------------------------------------------------

PolicyId = tuple[uuid.UUID, uuid.UUID]


class PolicyCache:
    """The policy store behind an :class:`~.agent_cache.AgentCache`, with the agent-key
    cache's invalidation rule (its module docstring)."""

    def __init__(
        self,
        policies: AgentPolicies,
        ttl_seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policies = policies
        self._cache: AgentCache[PolicyId, AgentPolicy] = AgentCache(ttl_seconds, monotonic)

    async def get(self, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> AgentPolicy | None:
        return await self._cache.get(
            (tenant_id, agent_id), lambda: self._policies.get_policy(tenant_id, agent_id)
        )

    async def enforce(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, verified: Sequence[Verified]
    ) -> tuple[list[Verified], list[Rejection]]:
        """Ingest's step: the batch's verified events judged by the agent's policy, read
        once for the whole batch (and not at all when nothing is left to judge)."""
        if not verified:
            return [], []
        return apply_policy(await self.get(tenant_id, agent_id), verified)

    def invalidate(self, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> None:
        self._cache.invalidate((tenant_id, agent_id))

    def forget(self, tenant_id: uuid.UUID | None = None, agent_id: uuid.UUID | None = None) -> None:
        """Drop the agent's entry, every entry of the tenant, or (both None) all of them."""
        self._cache.forget(tenant_id, agent_id)

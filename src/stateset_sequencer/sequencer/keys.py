"""Agent signing keys: the one key-validity rule, and the cache ingest reads keys through.

:func:`judge_key` is the only place that decides whether a registered key could sign at
some instant. Its callers pass different instants, on purpose:

* ingest judges at the server's clock when the batch arrives (``Sequencer.clock()``), as
  the reference does (REFERENCE_MAP §4.3 step 7): the signer's own ``created_at`` is not
  trusted to date its signature;
* ``verify-events`` judges each event at its ``sequenced_at``, the instant ingest judged
  it at: a key revoked after an event was sequenced does not make that event invalid, but
  one revoked at or before it does;
* ``doctor`` judges at its own clock: which agents could send an event now.

The boundaries, as the reference draws them: ``valid_from`` and ``valid_to`` are both
inclusive (a key is valid at exactly either instant); a key is revoked from its
``revoked_at`` on, that instant included. A stored status ``expired`` is not enforced (the
dates are), as in the reference.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from ..store.ports import KeyRegistry
from ..store.records import AgentKey
from .agent_cache import AgentCache

KEY_NOT_FOUND = "Agent key not found"
KEY_REVOKED = "Agent key has been revoked"
KEY_EXPIRED = "Agent key has expired"
KEY_NOT_YET_VALID = "Agent key is not yet valid"

# The prefix of ingest's rejection reason for every key verdict but VALID.
KEY_INVALID_REASON = "agent_key_invalid"


class KeyVerdict(StrEnum):
    """What :func:`judge_key` found, checked in this order (the reference's)."""

    VALID = "valid"
    NOT_FOUND = "not_found"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"

    @property
    def ok(self) -> bool:
        return self is KeyVerdict.VALID

    @property
    def problem(self) -> str | None:
        """The reference's message for an unusable key; None for a valid one."""
        return _PROBLEMS.get(self)

    @property
    def reason(self) -> str | None:
        """Ingest's rejection reason code (``agent_key_invalid: <problem>``)."""
        problem = self.problem
        return None if problem is None else f"{KEY_INVALID_REASON}: {problem}"


_PROBLEMS = {
    KeyVerdict.NOT_FOUND: KEY_NOT_FOUND,
    KeyVerdict.REVOKED: KEY_REVOKED,
    KeyVerdict.EXPIRED: KEY_EXPIRED,
    KeyVerdict.NOT_YET_VALID: KEY_NOT_YET_VALID,
}


def judge_key(key: AgentKey | None, at: datetime, *, seen_at: datetime | None = None) -> KeyVerdict:
    """Whether ``key`` could sign at the instant ``at`` (the module docstring says which
    instant each caller passes).

    ``seen_at`` is when ``key`` was read from the registry, when that is later than
    ``at`` (judging the past); it defaults to ``at`` (judging the present). It matters for
    a key whose status is ``revoked``: that status proves the revocation happened no later
    than ``seen_at``, so it counts at every instant from ``seen_at`` on even if
    ``revoked_at`` (written by another node's clock) is later; before ``seen_at`` only
    ``revoked_at`` dates it. A revoked status without a ``revoked_at`` (the schema forbids
    it, but a hand-edited row can have it) cannot be dated and counts at every instant.
    """
    if key is None:
        return KeyVerdict.NOT_FOUND
    seen = at if seen_at is None else seen_at
    if key.revoked_at is not None and key.revoked_at <= at:
        return KeyVerdict.REVOKED
    if key.status == "revoked" and (key.revoked_at is None or at >= seen):
        return KeyVerdict.REVOKED
    if key.valid_to is not None and key.valid_to < at:
        return KeyVerdict.EXPIRED
    if key.valid_from is not None and key.valid_from > at:
        return KeyVerdict.NOT_YET_VALID
    return KeyVerdict.VALID


def key_problem(key: AgentKey | None, now: datetime) -> str | None:
    """Ingest's form of :func:`judge_key` at the server's clock: the rejection message,
    or None when the key can sign."""
    return judge_key(key, now).problem


KeyId = tuple[uuid.UUID, uuid.UUID, int]


class KeyCache:
    """The agent-key registry behind an :class:`~.agent_cache.AgentCache` (its module
    docstring gives the invalidation rule)."""

    def __init__(
        self,
        registry: KeyRegistry,
        ttl_seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._cache: AgentCache[KeyId, AgentKey] = AgentCache(ttl_seconds, monotonic)

    async def get(self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int) -> AgentKey | None:
        return await self._cache.get(
            (tenant_id, agent_id, key_id),
            lambda: self._registry.get_agent_key(tenant_id, agent_id, key_id),
        )

    def invalidate(self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int) -> None:
        self._cache.invalidate((tenant_id, agent_id, key_id))

    def forget(self, tenant_id: uuid.UUID | None = None, agent_id: uuid.UUID | None = None) -> None:
        """Drop every entry of the agent, of the tenant, or (both None) all of them."""
        self._cache.forget(tenant_id, agent_id)

"""What a change told by the store's :class:`ChangeFeed` drops from this process's caches.

A revocation through one node reaches every other node's agent-key, API-key, schema and
policy caches as soon as the database tells them, instead of when each entry's TTL runs out;
the TTLs stay as the fallback for what the feed cannot tell (a hand-written UPDATE, or
changes made while its connection was down, which the reconnect's ``ALL`` covers).
"""

from __future__ import annotations

from collections import Counter

import structlog

from ..sequencer.auth import Authenticator
from ..sequencer.keys import KeyCache
from ..sequencer.policies import PolicyCache
from ..sequencer.schemas import SchemaRegistry
from ..store.ports import ChangeFeed, ChangeListener
from ..store.records import Change, ChangeKind

log = structlog.get_logger("stateset_sequencer.changes")


class CacheInvalidation:
    """The feed's listener: one change, the cache entries it makes suspect dropped."""

    def __init__(
        self,
        keys: KeyCache,
        authenticator: Authenticator,
        schemas: SchemaRegistry,
        policies: PolicyCache | None = None,
    ):
        self._keys = keys
        self._authenticator = authenticator
        self._schemas = schemas
        self._policies = policies
        self._listener: ChangeListener | None = None
        # Changes applied, for health reporting and for tests that wait for one.
        self.received: Counter[Change] = Counter()

    @property
    def connected(self) -> bool:
        return self._listener is not None and self._listener.connected

    async def start(self, feed: ChangeFeed) -> None:
        self._listener = await feed.listen(self)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()

    def __call__(self, change: Change) -> None:
        kind = change.kind
        if kind is ChangeKind.AGENT_KEY:
            if (
                change.tenant_id is not None
                and change.agent_id is not None
                and change.key_id is not None
            ):
                self._keys.invalidate(change.tenant_id, change.agent_id, change.key_id)
            else:
                self._keys.forget(change.tenant_id, change.agent_id)
        elif kind is ChangeKind.API_KEY:
            self._authenticator.forget(change.key_hash_prefix or "")
        elif kind is ChangeKind.SCHEMA:
            self._schemas.forget(change.tenant_id, change.event_type)
        elif kind is ChangeKind.POLICY:
            if self._policies is not None:
                if change.tenant_id is not None and change.agent_id is not None:
                    self._policies.invalidate(change.tenant_id, change.agent_id)
                else:
                    self._policies.forget(change.tenant_id, change.agent_id)
        elif kind is ChangeKind.ALL:
            self._keys.forget()
            self._authenticator.forget()
            self._schemas.forget()
            if self._policies is not None:
                self._policies.forget()
            log.info("caches flushed: the change feed (re)connected")
        if len(self.received) > 10_000:  # bound memory: the counts are only diagnostics
            self.received.clear()
        self.received[change] += 1

"""What the sequencer keeps per agent: cursors and event policies."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from datetime import datetime

from ..records import (
    AgentCursor,
    AgentPolicy,
    AuditEntry,
    CursorPosition,
    StreamKey,
)


class AgentCursors(ABC):
    """Each agent's acknowledged position in a stream (``ves_agent_cursors``): how far it
    says it has processed, so that it (or an operator) can resume and see its lag. Reads
    and writes go to the primary: an acknowledgement must be read back at once, and the
    head it is checked against must be the one the writers move."""

    @abstractmethod
    async def get_cursor(self, stream: StreamKey, agent_id: uuid.UUID) -> AgentCursor | None:
        """The agent's cursor in the stream; None when it never acknowledged there."""

    @abstractmethod
    async def cursor_position(self, stream: StreamKey, agent_id: uuid.UUID) -> CursorPosition:
        """The cursor (or None) and the stream's head (0 for an unknown stream), read from
        one consistent state."""

    @abstractmethod
    async def advance_cursor(
        self, stream: StreamKey, agent_id: uuid.UUID, sequence: int, *, now: datetime
    ) -> CursorPosition:
        """Raise the cursor to ``sequence`` if that is higher than what is stored (a lower
        or equal one leaves the value as it is: acknowledgements may arrive out of order
        and retried), creating it when absent, and set ``updated_at`` to ``now`` unless a
        later time is already stored (whether or not the value moved: it records the
        agent's last acknowledgement). In the same transaction the stream's head is read
        and a ``sequence`` above it refused with :class:`AheadOfHeadError`, nothing
        written. Returns the cursor as stored afterwards with that head. ``sequence`` must
        be 0..2^63-1 (``ValueError`` otherwise)."""

    @abstractmethod
    async def list_cursors(
        self,
        tenant_id: uuid.UUID | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AgentCursor]:
        """Cursors of one tenant (every tenant when None) acknowledged at or after
        ``since`` (any time when None), most recent first, at most ``limit``."""


class AgentPolicies(ABC):
    """What each agent of a tenant may write (``agent_event_policies``), checked at ingest
    by ``sequencer.policies``. Reads go to the primary: a policy set a moment ago must
    already govern the next ingest."""

    @abstractmethod
    async def get_policy(self, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> AgentPolicy | None:
        """The agent's policy, enabled or not; None when it has none."""

    @abstractmethod
    async def put_policy(self, policy: AgentPolicy, *, audit: AuditEntry) -> AgentPolicy:
        """Create or replace the (tenant, agent)'s policy and append ``audit``, in one
        transaction (neither without the other), and tell the :class:`ChangeFeed`.
        ``updated_at`` is set by the store; ``created_at`` is kept from the policy
        replaced, else set alike. The rules are stored as given (the service sorts and
        validates them); :class:`IntegrityError` for a policy no store can hold (over 128
        rules in a list, text that is not storable, ``max_payload_bytes`` outside
        1..2^31-1), nothing written. Returns the policy as stored."""

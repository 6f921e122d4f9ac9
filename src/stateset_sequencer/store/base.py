"""The storage contract: everything the sequencer keeps, behind one async interface.

Two adapters implement it (``store.sqlite`` on one writer thread, ``store.postgres`` on
asyncpg) and one contract test suite runs against both; a behaviour that exists on one
backend only is a bug.

The append path is split so that the order of checks stays visible in
``sequencer/ingest.py``: the store opens a :class:`StreamTransaction` that has already
locked the stream's counter row, offers the few bulk reads the checks need, and writes the
accepted events, their receipts, command reservations, entity versions and the new head
in one commit. Nothing slow happens inside it; signatures are checked before it opens.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..ves.envelope import VesEventEnvelope
from ..ves.signing import Receipt


class StoreError(Exception):
    """Base of storage faults (names follow PEP 249's spirit)."""


class IntegrityError(StoreError):
    """A uniqueness or consistency rule would be broken (e.g. a duplicate agent key)."""


class ConcurrentWriteError(StoreError):
    """Another writer inserted a conflicting row first; the transaction can be retried."""


class MigrationError(StoreError):
    """A migration is missing, was edited after it was applied, or failed."""


class OperationalError(StoreError):
    """The database is unreachable or refused the operation."""


@dataclass(frozen=True, slots=True)
class StreamKey:
    """One sequence stream: a ``(tenant_id, store_id)`` pair."""

    tenant_id: uuid.UUID
    store_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as sequenced: the envelope exactly as signed plus what the sequencer added."""

    envelope: VesEventEnvelope
    sequence_number: int
    sequenced_at: datetime
    event_signing_hash: bytes


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An accepted event ready to be written with its receipt."""

    envelope: VesEventEnvelope
    event_signing_hash: bytes
    sequence_number: int
    sequenced_at: datetime
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class Existing:
    """A stored event found by id, with its receipt when one was stored."""

    event: StoredEvent
    receipt: Receipt | None


@dataclass(frozen=True, slots=True)
class AgentKey:
    """A registered agent signing key (``agent_signing_keys``)."""

    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    key_id: int
    public_key: bytes
    status: str = "active"  # active | revoked
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    revoked_at: datetime | None = None
    key_algorithm: int = 1
    created_at: datetime | None = None  # set by the store when None


@dataclass(frozen=True, slots=True)
class CommitmentRow:
    """One row of ``ves_commitments`` (the engine that fills it comes later)."""

    batch_id: uuid.UUID
    tenant_id: uuid.UUID
    store_id: uuid.UUID
    ves_version: int
    tree_depth: int
    leaf_count: int
    padded_leaf_count: int
    merkle_root: bytes
    prev_state_root: bytes
    new_state_root: bytes
    sequence_start: int
    sequence_end: int
    committed_at: datetime
    chain_id: int | None = None
    chain_tx_hash: bytes | None = None
    chain_block_number: int | None = None
    anchored_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored: only the SHA-256 hex of the plaintext, never the plaintext."""

    key_hash: str
    tenant_id: uuid.UUID
    store_ids: tuple[uuid.UUID, ...] = ()  # empty: every store of the tenant
    can_read: bool = True
    can_write: bool = False
    can_admin: bool = False
    agent_id: uuid.UUID | None = None
    active: bool = True
    rate_limit: int | None = None
    created_at: datetime | None = None  # set by the store when None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One ``audit_log`` row."""

    action: str
    actor: str
    actor_type: str
    success: bool = True
    tenant_id: uuid.UUID | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    request_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    error_message: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    timestamp: datetime | None = None  # set by the store when None


SCHEMA_STATUSES = ("active", "deprecated", "archived")
SCHEMA_COMPATIBILITIES = ("forward", "backward", "full", "none")


@dataclass(frozen=True, slots=True)
class SchemaRecord:
    """One registered JSON Schema (``event_schemas``). ``schema_json`` is the document's
    JSON text exactly as it was registered; it never changes for a given ``id``."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    event_type: str
    version: int
    schema_json: str
    status: str  # one of SCHEMA_STATUSES
    compatibility: str  # one of SCHEMA_COMPATIBILITIES
    description: str | None
    created_at: datetime
    updated_at: datetime
    created_by: str | None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a caller may need to know about a backend, answered by its adapter so that no
    code outside ``store/`` compares backend names."""

    name: str  # "sqlite" or "postgresql", as /health/detailed reports it
    text_holds_nul: bool  # PostgreSQL text cannot hold U+0000; SQLite's can
    embedded: bool  # lives in the local data directory, beside the receipt key


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Connections of the store's pool (SQLite: its writer and reader threads)."""

    active: int
    idle: int
    total: int
    maximum: int


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied: bool
    checksum_ok: bool


@dataclass(frozen=True, slots=True)
class CounterState:
    """A stream's counter beside what ``ves_events`` actually holds (recovery checks)."""

    stream: StreamKey
    counter: int | None  # None: events exist but the stream has no counter row
    max_sequence: int  # 0 when the stream has no events
    event_count: int


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """Sequence numbers ``first_missing..last_missing`` absent below a stored event."""

    stream: StreamKey
    first_missing: int
    last_missing: int


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """Per-stream facts a backup manifest records and a restore compares."""

    stream: StreamKey
    counter: int | None
    max_sequence: int
    event_count: int
    commitment_count: int
    last_committed_sequence: int | None
    last_state_root: bytes | None
    commitments_sha256: bytes  # SHA-256 over (start, end, merkle root, state root) in order


class StreamTransaction(ABC):
    """One stream's append transaction. The counter row is locked for its whole life, so
    every writer of the stream, in this process or another, waits its turn."""

    head: int
    """The stream's current sequence (0 for a new stream), read under the lock."""

    @abstractmethod
    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        """Stored events (any stream) among ``event_ids``, with their receipts."""

    @abstractmethod
    async def taken_commands(self, command_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """Command ids of this stream already reserved, mapped to the event that holds them."""

    @abstractmethod
    async def entity_versions(
        self, entities: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """Versions of those ``(entity_type, entity_id)`` of this stream that have one
        (an entity with no row is left out; its version is 0)."""

    @abstractmethod
    async def write(
        self,
        events: Sequence[NewEvent],
        entity_versions: Mapping[tuple[str, str], int],
        new_head: int,
    ) -> None:
        """Insert events, receipts and command reservations, set entity versions and the
        counter. Raises :class:`ConcurrentWriteError` if an event id was taken meanwhile."""


class Store(ABC):
    """The storage contract. Every method is safe to call concurrently."""

    dialect: str
    capabilities: Capabilities

    # --- lifecycle and migrations ---------------------------------------------------------

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied."""

    @abstractmethod
    async def rollback(self, to_version: int) -> list[int]:
        """Revert applied migrations above ``to_version``; returns the versions reverted."""

    @abstractmethod
    async def migration_status(self) -> list[MigrationStatus]:
        """Every known migration and whether (and unaltered) it is applied."""

    @abstractmethod
    async def ping(self) -> float:
        """Round-trip a trivial query; returns seconds taken. Raises OperationalError."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""

    def pool_stats(self) -> PoolStats:
        """A cheap snapshot for health checks and metrics (no query)."""
        return PoolStats(active=0, idle=2, total=2, maximum=2)

    # --- the event log --------------------------------------------------------------------

    @abstractmethod
    def stream_transaction(
        self, stream: StreamKey
    ) -> AbstractAsyncContextManager[StreamTransaction]:
        """Open a transaction with the stream's counter row locked. It commits when the
        block exits normally and rolls back on any exception."""

    @abstractmethod
    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        """Like :meth:`StreamTransaction.existing`, outside a transaction (for the cheap
        replay pre-check before any signature work)."""

    @abstractmethod
    async def head(self, stream: StreamKey) -> int:
        """The stream's counter (0 when the stream is unknown)."""

    @abstractmethod
    async def read_range(self, stream: StreamKey, start: int, end: int) -> list[StoredEvent]:
        """Events with ``start <= sequence_number <= end``, in sequence order."""

    @abstractmethod
    def iter_range(
        self, stream: StreamKey, start: int, end: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[StoredEvent]:
        """Stream events in sequence order with bounded memory (``end`` None: to the head)."""

    @abstractmethod
    async def get_event(self, event_id: uuid.UUID) -> StoredEvent | None: ...

    @abstractmethod
    async def get_receipt(self, event_id: uuid.UUID) -> Receipt | None: ...

    @abstractmethod
    async def read_entity(
        self, stream: StreamKey, entity_type: str, entity_id: str, offset: int, limit: int
    ) -> tuple[list[StoredEvent], int]:
        """An entity's events in sequence order, paged; also returns the total count."""

    @abstractmethod
    async def entity_version(self, stream: StreamKey, entity_type: str, entity_id: str) -> int: ...

    @abstractmethod
    async def list_streams(self) -> list[tuple[StreamKey, int]]:
        """Every stream with its counter value."""

    # --- recovery and maintenance ---------------------------------------------------------

    @abstractmethod
    def iter_events_with_receipts(
        self, stream: StreamKey, start: int, end: int, batch_size: int = 1000
    ) -> AsyncIterator[tuple[StoredEvent, Receipt | None]]:
        """Events ``start..=end`` in sequence order, each with its stored receipt (None when
        there is none), with bounded memory. ``end`` is explicit because a verifier must
        also reach events stored above a counter that is too low."""

    @abstractmethod
    async def counter_states(self, stream: StreamKey | None = None) -> list[CounterState]:
        """Counter, highest stored sequence and event count of every stream that has a
        counter row or events (or of one stream), ordered by tenant then store."""

    @abstractmethod
    async def sequence_gaps(self, stream: StreamKey | None = None) -> list[SequenceGap]:
        """Missing sequence numbers below each stream's highest stored event (from 1), as
        ranges ordered by stream then number. Numbers above the highest event are not
        gaps here; compare :meth:`counter_states` for those."""

    @abstractmethod
    async def set_counter_to_max(
        self, stream: StreamKey, expected: CounterState, audit: AuditEntry
    ) -> CounterState:
        """Set the stream's counter to its highest stored sequence and append ``audit``,
        in one transaction holding the counter lock. Refused with
        :class:`ConcurrentWriteError` (nothing written) when the counter or the events
        no longer match ``expected``. Returns the state after the change."""

    @abstractmethod
    async def stream_summaries(self) -> list[StreamSummary]:
        """:class:`StreamSummary` of every stream, ordered by tenant then store."""

    @abstractmethod
    async def row_counts(self, tables: Sequence[str]) -> dict[str, int]:
        """Row count of each named table that exists (absent tables are left out).
        Names must be plain lowercase identifiers; anything else is ``ValueError``."""

    @abstractmethod
    async def is_empty(self) -> bool:
        """True when no events, API keys or agent keys are stored (or no schema yet)."""

    # --- agent signing keys ---------------------------------------------------------------

    @abstractmethod
    async def put_agent_key(self, key: AgentKey) -> AgentKey:
        """Register a key; :class:`IntegrityError` if (tenant, agent, key_id) exists or
        valid_from > valid_to."""

    @abstractmethod
    async def get_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> AgentKey | None: ...

    @abstractmethod
    async def list_agent_keys(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID | None = None
    ) -> list[AgentKey]: ...

    @abstractmethod
    async def revoke_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int, at: datetime
    ) -> AgentKey | None:
        """Mark a key revoked at ``at`` (idempotent: a revoked key keeps its first time);
        None when no such key."""

    # --- commitments (rows only) ----------------------------------------------------------

    @abstractmethod
    async def put_commitment(self, row: CommitmentRow) -> None:
        """:class:`IntegrityError` on a duplicate batch id or stream start."""

    @abstractmethod
    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None: ...

    @abstractmethod
    async def list_commitments(self, stream: StreamKey) -> list[CommitmentRow]:
        """A stream's commitments ordered by sequence_start."""

    # --- API keys and audit ---------------------------------------------------------------

    @abstractmethod
    async def put_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        """Insert, or replace a row with the same hash (used for the bootstrap key)."""

    @abstractmethod
    async def get_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    @abstractmethod
    async def list_api_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKeyRecord]: ...

    @abstractmethod
    async def deactivate_api_keys(self, key_hash_prefix: str) -> int:
        """Deactivate active keys whose hash starts with the literal prefix; returns how
        many changed. An empty prefix is refused with ``ValueError``."""

    @abstractmethod
    async def append_audit(self, entry: AuditEntry) -> None: ...

    @abstractmethod
    async def list_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """Newest first."""

    # --- schema registry ------------------------------------------------------------------

    @abstractmethod
    async def put_schema(
        self,
        tenant_id: uuid.UUID,
        event_type: str,
        schema_json: str,
        *,
        compatibility: str = "backward",
        description: str | None = None,
        created_by: str | None = None,
    ) -> SchemaRecord:
        """Register an ``active`` schema under the next version of (tenant, event_type),
        1 for the first; concurrent registrations get distinct versions. The new id and
        both timestamps are set by the store. :class:`IntegrityError` if ``event_type`` is
        not 1–256 UTF-8 bytes, ``schema_json`` is not JSON text or ``compatibility`` is
        not one of SCHEMA_COMPATIBILITIES."""

    @abstractmethod
    async def get_schema(self, schema_id: uuid.UUID) -> SchemaRecord | None: ...

    @abstractmethod
    async def list_schemas(
        self, tenant_id: uuid.UUID, event_type: str | None = None
    ) -> list[SchemaRecord]:
        """A tenant's schemas (of one event type when given), any status, ordered by
        event_type (UTF-8 byte order) then version."""

    @abstractmethod
    async def get_schema_version(
        self, tenant_id: uuid.UUID, event_type: str, version: int
    ) -> SchemaRecord | None: ...

    @abstractmethod
    async def latest_active_schema(
        self, tenant_id: uuid.UUID, event_type: str
    ) -> SchemaRecord | None:
        """The highest version whose status is ``active`` (deprecated and archived
        versions are skipped, even when newer)."""

    @abstractmethod
    async def set_schema_status(self, schema_id: uuid.UUID, status: str) -> SchemaRecord | None:
        """Set the status and bump updated_at; returns the updated record, None when no
        such schema. :class:`IntegrityError` if ``status`` is not one of SCHEMA_STATUSES."""

    @abstractmethod
    async def delete_schema(self, schema_id: uuid.UUID) -> bool:
        """True when a schema was deleted, False when there was none."""

    # --- small persistent settings --------------------------------------------------------

    @abstractmethod
    async def get_or_set_meta(self, key: str, value: str) -> str:
        """Return the stored value for ``key``, storing ``value`` first if there is none."""

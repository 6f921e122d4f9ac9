"""The storage ports: small role contracts, one per thing the sequencer keeps.

In the style of the ``eventsourcing`` library's recorders, each port is an abstract class
that says what it promises and nothing about how; a consumer asks only for the port it
uses (the key cache needs a :class:`KeyRegistry`, not the whole store). Two adapters,
``store.sqlite`` (one writer thread) and ``store.postgres`` (asyncpg), implement every
port, laid out alike (one module per port), and one contract test suite per port runs
against both: a behaviour that exists on one backend only is a bug.

:class:`Store` is the composite the factory opens. A new port (cursors, an agent outbox,
the commitment engine's queue) is one more ABC here, one more module of the same name in
each adapter, one more base of :class:`Store`, and one more contract suite.

The append path is split so that the order of checks stays visible in
``sequencer/ingest.py``: the event log opens a :class:`StreamTransaction` that has already
locked the stream's counter row, offers the few bulk reads the checks need, and writes the
accepted events, their receipts, command reservations, entity versions and the new head
in one commit. Nothing slow happens inside it; signatures are checked before it opens.

Every method is safe to call concurrently. Faults are the classes of ``store.errors``.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path

from ..ves.signing import Receipt
from .records import (
    AgentKey,
    ApiKeyRecord,
    AuditEntry,
    Capabilities,
    Change,
    CommitmentRow,
    CounterState,
    Distribution,
    EventPage,
    Existing,
    MigrationStatus,
    NewEvent,
    PoolStats,
    SchemaRecord,
    SequenceGap,
    SnapshotContents,
    StoredEvent,
    StreamKey,
    StreamSummary,
    TakenSnapshot,
)

Progress = Callable[[int, int], None]
"""``progress(done, total)`` of a long copy, in units the adapter chooses (SQLite: pages)."""


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
        counter. Raises :class:`ConcurrentWriteError` if an event id was taken meanwhile;
        the transaction is then as it was before the call."""


class EventLog(ABC):
    """The sequenced events of every stream, their receipts, and entity versions."""

    @abstractmethod
    def stream_transaction(
        self, stream: StreamKey
    ) -> AbstractAsyncContextManager[StreamTransaction]:
        """Open a transaction with the stream's counter row locked. It commits when the
        block exits normally and rolls back on any exception. Opening a second one for
        the same stream from the task that holds the first is refused with
        :class:`StoreError` rather than left to deadlock."""

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
    async def read_page(self, stream: StreamKey, start: int, end: int, max_bytes: int) -> EventPage:
        """Events ``start..=end`` in sequence order, ending before the first event that
        would take the page past ``max_bytes`` (``store.paging``), but never empty while
        the range holds an event; ``truncated`` when it ended so."""

    @abstractmethod
    def iter_range(
        self, stream: StreamKey, start: int, end: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[StoredEvent]:
        """Stream events in sequence order with bounded memory (``end`` None: to the head
        as it was when iteration began)."""

    @abstractmethod
    async def get_event(self, event_id: uuid.UUID) -> StoredEvent | None: ...

    @abstractmethod
    async def get_receipt(self, event_id: uuid.UUID) -> Receipt | None: ...

    @abstractmethod
    async def read_entity(
        self,
        stream: StreamKey,
        entity_type: str,
        entity_id: str,
        offset: int,
        limit: int,
        max_bytes: int | None = None,
    ) -> tuple[list[StoredEvent], int]:
        """An entity's events in sequence order, paged; also returns the total count,
        read from the same state as the page. With ``max_bytes`` the page also ends as
        :meth:`read_page` does (the next page starts at ``offset + len(events)``)."""

    @abstractmethod
    async def entity_version(self, stream: StreamKey, entity_type: str, entity_id: str) -> int: ...

    @abstractmethod
    async def list_streams(self) -> list[tuple[StreamKey, int]]:
        """Every stream with its counter value, ordered by tenant then store."""

    @abstractmethod
    def iter_events_with_receipts(
        self, stream: StreamKey, start: int, end: int, batch_size: int = 1000
    ) -> AsyncIterator[tuple[StoredEvent, Receipt | None]]:
        """Events ``start..=end`` in sequence order, each with its stored receipt (None when
        there is none), with bounded memory. ``end`` is explicit because a verifier must
        also reach events stored above a counter that is too low."""


class KeyRegistry(ABC):
    """Agents' registered signing keys (``agent_signing_keys``). Reads go to the primary:
    a lagging replica would still accept a key revoked a moment ago."""

    @abstractmethod
    async def put_agent_key(self, key: AgentKey) -> AgentKey:
        """Register a key and return it as stored (``created_at`` set when None);
        :class:`IntegrityError` if (tenant, agent, key_id) exists or valid_from >
        valid_to."""

    @abstractmethod
    async def get_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int
    ) -> AgentKey | None: ...

    @abstractmethod
    async def list_agent_keys(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID | None = None
    ) -> list[AgentKey]:
        """A tenant's keys (of one agent when given), ordered by agent then key id."""

    @abstractmethod
    async def revoke_agent_key(
        self, tenant_id: uuid.UUID, agent_id: uuid.UUID, key_id: int, at: datetime
    ) -> AgentKey | None:
        """Mark a key revoked at ``at`` (idempotent: a revoked key keeps its first time);
        None when no such key."""


class AccessStore(ABC):
    """API keys (only their SHA-256 is stored) and the audit log."""

    @abstractmethod
    async def put_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        """Insert, or replace a row with the same hash (used for the bootstrap key);
        returns the record as stored (``created_at`` set when None)."""

    @abstractmethod
    async def get_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    @abstractmethod
    async def list_api_keys(self, tenant_id: uuid.UUID | None = None) -> list[ApiKeyRecord]:
        """Every key (of one tenant when given), oldest first."""

    @abstractmethod
    async def deactivate_api_keys(self, key_hash_prefix: str) -> int:
        """Deactivate active keys whose hash starts with the literal prefix; returns how
        many changed. An empty prefix is refused with ``ValueError``."""

    @abstractmethod
    async def append_audit(self, entry: AuditEntry) -> None:
        """Append one entry (``timestamp`` set by the store when None)."""

    @abstractmethod
    async def list_audit(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """Newest first (a later insert first among equal timestamps)."""


class SchemaStore(ABC):
    """The JSON Schema registry (``event_schemas``). Reads go to the primary: a schema
    registered or deprecated a moment ago must already govern the next ingest."""

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
        such schema. :class:`IntegrityError` if ``status`` is not one of SCHEMA_STATUSES,
        whether or not the schema exists."""

    @abstractmethod
    async def delete_schema(self, schema_id: uuid.UUID) -> bool:
        """True when a schema was deleted, False when there was none."""


class Commitments(ABC):
    """Rows of ``ves_commitments``: Merkle roots over ranges of a stream and the state
    roots they chain into. The engine that computes them (a later issue) grows this port."""

    @abstractmethod
    async def put_commitment(self, row: CommitmentRow) -> None:
        """:class:`IntegrityError` on a duplicate batch id or stream start."""

    @abstractmethod
    async def get_commitment(self, batch_id: uuid.UUID) -> CommitmentRow | None: ...

    @abstractmethod
    async def list_commitments(self, stream: StreamKey) -> list[CommitmentRow]:
        """A stream's commitments ordered by sequence_start."""


class Maintenance(ABC):
    """What recovery tools inspect and repair: counters beside the events, gaps, and the
    per-stream digests and row counts a backup manifest records."""

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
        """:class:`StreamSummary` of every stream, ordered by tenant then store, counters
        and commitments read from one consistent state."""

    @abstractmethod
    async def row_counts(self, tables: Sequence[str]) -> dict[str, int]:
        """Row count of each named table that exists (absent tables are left out), from
        one consistent state. Names must be plain lowercase identifiers; anything else is
        ``ValueError``."""

    @abstractmethod
    async def is_empty(self) -> bool:
        """True when no events, API keys or agent keys are stored (or no schema yet)."""


class Snapshots(ABC):
    """Whole-database copies, the mechanics under ``sequencer-cli backup`` and ``restore``.

    A snapshot is one file in the backend's own format (``snapshot_format``: SQLite's
    online backup copy, or ``pg_dump -Fc``). What each operation reports is read from
    exactly the state it copied or restored, so a manifest written at backup time can be
    compared with a restore exactly, even while the source kept taking writes. These
    operations open connections of their own; they work whether or not the database has
    been migrated, and on a restore target that does not exist yet."""

    snapshot_format: str
    """The kind of copy this backend writes and reads: "sqlite" or "postgres" (backup
    manifests record it under their ``dialect`` key)."""

    snapshot_file: str
    """The copy's file name inside a backup directory."""

    @abstractmethod
    async def take_snapshot(
        self, file: Path, tables: Sequence[str], progress: Progress | None = None
    ) -> TakenSnapshot:
        """Copy the whole database into ``file`` (which must not exist), consistently
        while writers go on, and describe the copy: stream summaries and the row counts
        of ``tables``. :class:`SnapshotError` when the database or the tool is missing."""

    @abstractmethod
    async def restore_snapshot(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        """Replace this database's whole contents with the snapshot in ``file`` and
        describe the result. Whether the database may be overwritten is the caller's
        decision (:meth:`holds_data`); the service must be stopped."""

    @abstractmethod
    async def test_restore(self, file: Path, tables: Sequence[str]) -> SnapshotContents:
        """Restore ``file`` into a scratch database (SQLite: a temporary file; PostgreSQL:
        a temporary database on this store's server, dropped afterwards), describe it, and
        leave this database untouched. :class:`SnapshotError` when the copy is unreadable."""

    @abstractmethod
    async def holds_data(self) -> bool:
        """The negation of :meth:`Maintenance.is_empty`, for a restore target: False also
        when the database does not exist yet."""


class ChangeListener(ABC):
    """A running subscription of :meth:`ChangeFeed.listen`."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """False while changes made elsewhere cannot reach this listener (the caches'
        TTLs are then what bounds staleness)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering; idempotent."""


class ChangeFeed(ABC):
    """Committed changes to the rows processes cache (agent keys, API keys, schemas), told
    to every process on the database, so that a revocation through one node is refused
    by all at once rather than when each cache's TTL runs out.

    The adapters publish from their own mutations of those rows, in the transaction that
    makes the change, so every writer (the CLI included) is heard. A change made by hand
    in SQL is not: the TTLs stay as the fallback."""

    @abstractmethod
    async def listen(self, callback: Callable[[Change], None]) -> ChangeListener:
        """Call ``callback`` on the caller's event loop for each change committed from
        now on by any store on this database (this one included). Whenever the feed
        (re)connects it first delivers ``Change(ChangeKind.ALL)``, since changes may have
        gone unheard. The callback must be quick and must not raise."""


class Database(ABC):
    """The database as a whole: its schema version, its health, its lifecycle, what a
    caller may need to know about the backend, and small persistent settings."""

    capabilities: Capabilities
    """Answered by the adapter, so that no code outside ``store/`` compares backends."""

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied. Several processes
        migrating one database at once apply each migration exactly once. Where the
        database can spread tables over several machines (Citus), every table not yet
        placed as ``store.placement`` declares is placed so, after the migrations."""

    @abstractmethod
    async def distribution(self) -> Distribution:
        """Each table's placement, and the engine that places them (if any)."""

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

    @abstractmethod
    def pool_stats(self) -> PoolStats:
        """A cheap snapshot of the connections for health checks and metrics (no query)."""

    @abstractmethod
    async def get_or_set_meta(self, key: str, value: str) -> str:
        """Return the stored value for ``key``, storing ``value`` first if there is none."""


class Store(
    EventLog,
    KeyRegistry,
    AccessStore,
    SchemaStore,
    Commitments,
    Maintenance,
    Snapshots,
    ChangeFeed,
    Database,
):
    """Every port at once: what ``store.factory.open_store`` returns. Pass a consumer the
    narrowest port it needs rather than this."""

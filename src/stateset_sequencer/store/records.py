"""The values every port speaks in: streams, stored and new events, keys, commitment rows,
API keys, audit entries, schemas, and the facts maintenance and snapshots report.

Plain frozen dataclasses with no behaviour and no backend in them, so that a consumer can
build and compare them without a database, and both adapters convert to and from them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..ves.envelope import VesEventEnvelope
from ..ves.jsontext import StoredTexts
from ..ves.signing import Receipt


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
class EventPage:
    """A page of events in sequence order; ``truncated`` when the byte cap
    (``store.paging``) ended it before the range or count asked for."""

    events: list[StoredEvent]
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An accepted event ready to be written with its receipt, which is sequenced at
    ``sequenced_at`` too. ``created_at`` is the instant the envelope's ``created_at`` text
    names and ``texts`` its JSON texts as stored (both made once, by ingest's checks)."""

    envelope: VesEventEnvelope
    event_signing_hash: bytes
    sequence_number: int
    sequenced_at: datetime
    receipt: Receipt
    created_at: datetime
    texts: StoredTexts


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
class LeafInput:
    """What the Merkle leaf of one stored event is made of besides its stream
    (VES_PROTOCOL §6.1): read without decoding the whole event."""

    sequence_number: int
    event_signing_hash: bytes
    agent_signature: bytes


@dataclass(frozen=True, slots=True)
class CommitBacklog:
    """A stream with events past its last commitment: its head, how far its commitments
    reach, and when the first uncommitted event was sequenced (None if it is missing)."""

    stream: StreamKey
    head: int
    committed_through: int
    oldest_uncommitted_at: datetime | None


class AnchorOutcome(enum.Enum):
    """What recording an anchor did (the anchor service's report, or our worker's)."""

    RECORDED = "recorded"
    ALREADY_RECORDED = "already_anchored"  # the same transaction hash again
    CONFLICT = "conflict"  # anchored already, by another transaction
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class CommitmentRow:
    """One row of ``ves_commitments``: a Merkle root over a contiguous range of a stream,
    the state roots it chains, and where it was anchored (None until it is)."""

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
class AgentCursor:
    """One row of ``ves_agent_cursors``: the highest sequence an agent acknowledged in a
    stream, and when it last acknowledged (raised or not)."""

    tenant_id: uuid.UUID
    store_id: uuid.UUID
    agent_id: uuid.UUID
    acknowledged_sequence: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CursorPosition:
    """An agent's cursor (None: it never acknowledged) beside the stream's head, both read
    from one state of the primary, so ``head_sequence`` is the head the cursor was checked
    against."""

    cursor: AgentCursor | None
    head_sequence: int


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
    parent_key_hash: str | None = None  # the key that minted it; revoked with it
    expires_at: datetime | None = None  # None: never expires; refused from this instant on


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
    # The hash chain (ves/audit.py), filled by the store when the entry is appended.
    chain_seq: int | None = None
    previous_hash: bytes | None = None
    entry_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class BudgetTake:
    """The answer of :meth:`RateBudgets.take_rate_budget`: whether one unit was taken, and
    in how many seconds the budget's window ends (when a refused caller may retry)."""

    admitted: bool
    reset_in_seconds: float


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
class AgentPolicy:
    """What one agent of a tenant may write (``agent_event_policies``), checked at ingest
    by ``sequencer.policies``. Rule lists are kept sorted and without duplicates."""

    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    allowed_event_types: tuple[str, ...] = ()
    allowed_entity_types: tuple[str, ...] = ()
    require_base_version: bool = True
    max_payload_bytes: int | None = None
    enabled: bool = True
    created_at: datetime | None = None  # set by the store; kept when a policy is replaced
    updated_at: datetime | None = None  # set by the store on every write


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a caller may need to know about a backend, answered by its adapter so that no
    code outside ``store/`` compares backend names."""

    name: str  # "sqlite" or "postgresql", as /health/detailed reports it
    embedded: bool  # lives in the local data directory, beside the receipt key
    # One append transaction over every stream that is waiting beats one per stream (one
    # writer whose commit is the cost); else each stream commits on its own connection.
    merge_streams: bool = False


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
class TableDistribution:
    """Where one table lives: ``local`` (one database holds it), ``reference`` (a copy on
    every Citus node) or ``distributed by <column>``."""

    table: str
    placement: str
    expected: str  # what ``store.placement`` declares for it, in the same words


@dataclass(frozen=True, slots=True)
class Distribution:
    """The database's scale-out engine (None: plain PostgreSQL or SQLite) and each table's
    placement."""

    engine: str | None
    tables: tuple[TableDistribution, ...]


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


@dataclass(frozen=True, slots=True)
class SnapshotContents:
    """What a snapshot holds, read from exactly the copied state: per-stream summaries
    and the row counts of the tables asked for (absent tables left out)."""

    streams: tuple[StreamSummary, ...]
    tables: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class TakenSnapshot:
    """A snapshot just written: the tool that wrote it (with its version, for the
    manifest) and its contents."""

    tool: str
    contents: SnapshotContents


class ChangeKind(enum.StrEnum):
    """What a :class:`Change` is about: the rows that processes cache."""

    AGENT_KEY = "agent_key"
    API_KEY = "api_key"
    SCHEMA = "schema"
    # An agent's event policy (``agent_event_policies``), cached by ingest per agent.
    POLICY = "policy"
    # Not a row: the feed may have missed changes (its connection was down), so every
    # cached entry is suspect.
    ALL = "all"


@dataclass(frozen=True, slots=True)
class Change:
    """A committed change to a cached row, as the :class:`ChangeFeed` delivers it. Fields
    left None are unknown to the writer and widen what a listener must drop: an API-key
    change without ``key_hash_prefix`` drops every cached API key."""

    kind: ChangeKind
    tenant_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    key_id: int | None = None
    key_hash_prefix: str | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class HeadNotice:
    """A stream's head moved to at least ``head``, as the :class:`HeadFeed` tells it.
    ``stream`` None: any stream may have moved unheard (the feed (re)connected), so every
    listener reads its streams' heads back."""

    stream: StreamKey | None
    head: int = 0


@dataclass(frozen=True, slots=True)
class ProjectionDocument:
    """One entity's folded document (``ves_projection_documents``): ``version`` events of
    the entity folded so far, ``updated_at`` the ``sequenced_at`` of the last of them."""

    tenant_id: uuid.UUID
    store_id: uuid.UUID
    entity_type: str
    entity_id: str
    version: int
    document: Any  # a JSON value
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ProjectionLag:
    """A stream whose counter is ahead of its projection checkpoint."""

    stream: StreamKey
    checkpoint: int  # last_projected_sequence (0 when never projected)
    head: int  # the stream's counter

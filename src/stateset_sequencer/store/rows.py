"""What both adapters share about rows: column lists, the few queries that are the same
text on both and the records their rows make, the envelope rebuilt from its columns, the
checks made before a write, and the time text format.

Payload columns hold exact JSON text (``ves.jsontext``), never canonical JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Generic, TypeVar

from ..ves.audit import AUDIT_HASHED_FIELDS, audit_entry_hash
from ..ves.envelope import VesEventEnvelope, parse_envelope
from ..ves.jsontext import load_json
from ..ves.storable import is_storable
from .errors import ConcurrentWriteError, IntegrityError
from .records import (
    SCHEMA_STATUSES,
    AgentCursor,
    AgentKey,
    AgentPolicy,
    AnchorOutcome,
    ApiKeyRecord,
    AuditEntry,
    CommitmentRow,
    CounterState,
    ProjectionDocument,
    SchemaRecord,
    SequenceGap,
    StreamKey,
)

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

R = TypeVar("R")


# The ves_events columns that rebuild an envelope, named as envelope_from_columns takes them,
# and the ves_sequencer_receipts columns: one list for both adapters.
ENVELOPE_COLUMNS = (
    "event_id",
    "command_id",
    "ves_version",
    "tenant_id",
    "store_id",
    "source_agent_id",
    "agent_key_id",
    "entity_type",
    "entity_id",
    "event_type",
    "created_at_str",
    "payload_kind",
    "payload",
    "payload_encrypted",
    "payload_plain_hash",
    "payload_cipher_hash",
    "agent_signature",
    "agent_signature_scheme",
    "agent_signature_bundle",
    "base_version",
)
RECEIPT_COLUMNS = (
    "event_id",
    "tenant_id",
    "store_id",
    "sequencer_id",
    "sequence_number",
    "sequenced_at",
    "receipt_hash",
    "signature_alg",
    "sequencer_signature",
    "sequencer_key_version",
)
# Receipt columns in a join with ves_events carry this prefix.
RECEIPT_PREFIX = "r_"
# What a StoredEvent is rebuilt from, and the ves_events row as written (plus created_at,
# the signed created_at as a time, for range queries; never read back).
EVENT_COLUMNS = (*ENVELOPE_COLUMNS, "sequence_number", "sequenced_at", "event_signing_hash")
EVENT_INSERT_COLUMNS = (*EVENT_COLUMNS, "created_at")
# Select lists for ``ves_events e`` and ``ves_sequencer_receipts r`` in one joined row.
EVENT_SELECT = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
RECEIPT_SELECT = ", ".join(f"r.{c} AS {RECEIPT_PREFIX}{c}" for c in RECEIPT_COLUMNS)


class Kind(Enum):
    """How a record field is held in a column; each adapter's ``convert`` has one codec per
    kind, both ways."""

    PLAIN = "plain"  # the same value in both worlds (text, integers)
    UUID = "uuid"
    OPTIONAL_UUID = "optional uuid"
    UUID_TUPLE = "uuid tuple"
    TEXT_TUPLE = "text tuple"
    TIME = "time"
    OPTIONAL_TIME = "optional time"
    BYTES = "bytes"
    OPTIONAL_BYTES = "optional bytes"
    BOOL = "bool"
    JSON_OBJECT = "json object"


@dataclass(frozen=True, slots=True)
class Table(Generic[R]):
    """A record type and its columns, in the order both adapters bind and read them; the
    column names are the record's field names. Adding a field to a record means one entry
    here (and a migration), on both backends at once."""

    record: type[R]
    columns: tuple[tuple[str, Kind], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


Codec = Mapping[Kind, Callable[[Any], Any]]


def encode(table: Table[Any], record: object, codec: Codec) -> tuple[Any, ...]:
    """``record``'s column values in the table's order."""
    return tuple(codec[kind](getattr(record, name)) for name, kind in table.columns)


def decode(table: Table[R], row: Any, codec: Codec) -> R:
    """The record in ``row`` (anything indexable by column name)."""
    return table.record(**{name: codec[kind](row[name]) for name, kind in table.columns})


AGENT_KEYS = Table(
    AgentKey,
    (
        ("tenant_id", Kind.UUID),
        ("agent_id", Kind.UUID),
        ("key_id", Kind.PLAIN),
        ("public_key", Kind.BYTES),
        ("status", Kind.PLAIN),
        ("valid_from", Kind.OPTIONAL_TIME),
        ("valid_to", Kind.OPTIONAL_TIME),
        ("revoked_at", Kind.OPTIONAL_TIME),
        ("key_algorithm", Kind.PLAIN),
        ("created_at", Kind.OPTIONAL_TIME),
    ),
)
COMMITMENTS = Table(
    CommitmentRow,
    (
        ("batch_id", Kind.UUID),
        ("tenant_id", Kind.UUID),
        ("store_id", Kind.UUID),
        ("ves_version", Kind.PLAIN),
        ("tree_depth", Kind.PLAIN),
        ("leaf_count", Kind.PLAIN),
        ("padded_leaf_count", Kind.PLAIN),
        ("merkle_root", Kind.BYTES),
        ("prev_state_root", Kind.BYTES),
        ("new_state_root", Kind.BYTES),
        ("sequence_start", Kind.PLAIN),
        ("sequence_end", Kind.PLAIN),
        ("committed_at", Kind.TIME),
        ("chain_id", Kind.PLAIN),
        ("chain_tx_hash", Kind.OPTIONAL_BYTES),
        ("chain_block_number", Kind.PLAIN),
        ("anchored_at", Kind.OPTIONAL_TIME),
    ),
)
API_KEYS = Table(
    ApiKeyRecord,
    (
        ("key_hash", Kind.PLAIN),
        ("tenant_id", Kind.UUID),
        ("store_ids", Kind.UUID_TUPLE),
        ("can_read", Kind.BOOL),
        ("can_write", Kind.BOOL),
        ("can_admin", Kind.BOOL),
        ("agent_id", Kind.OPTIONAL_UUID),
        ("active", Kind.BOOL),
        ("rate_limit", Kind.PLAIN),
        ("created_at", Kind.OPTIONAL_TIME),
        ("parent_key_hash", Kind.PLAIN),
        ("expires_at", Kind.OPTIONAL_TIME),
    ),
)
AUDIT_LOG = Table(
    AuditEntry,
    (
        ("id", Kind.UUID),
        ("timestamp", Kind.OPTIONAL_TIME),
        ("action", Kind.PLAIN),
        ("actor", Kind.PLAIN),
        ("actor_type", Kind.PLAIN),
        ("tenant_id", Kind.OPTIONAL_UUID),
        ("resource_type", Kind.PLAIN),
        ("resource_id", Kind.PLAIN),
        ("request_id", Kind.PLAIN),
        ("ip_address", Kind.PLAIN),
        ("user_agent", Kind.PLAIN),
        ("details", Kind.JSON_OBJECT),
        ("success", Kind.BOOL),
        ("error_message", Kind.PLAIN),
        ("chain_seq", Kind.PLAIN),
        ("previous_hash", Kind.OPTIONAL_BYTES),
        ("entry_hash", Kind.OPTIONAL_BYTES),
    ),
)
EVENT_SCHEMAS = Table(
    SchemaRecord,
    (
        ("id", Kind.UUID),
        ("tenant_id", Kind.UUID),
        ("event_type", Kind.PLAIN),
        ("version", Kind.PLAIN),
        ("schema_json", Kind.PLAIN),
        ("status", Kind.PLAIN),
        ("compatibility", Kind.PLAIN),
        ("description", Kind.PLAIN),
        ("created_at", Kind.TIME),
        ("updated_at", Kind.TIME),
        ("created_by", Kind.PLAIN),
    ),
)
AGENT_CURSORS = Table(
    AgentCursor,
    (
        ("tenant_id", Kind.UUID),
        ("store_id", Kind.UUID),
        ("agent_id", Kind.UUID),
        ("acknowledged_sequence", Kind.PLAIN),
        ("updated_at", Kind.TIME),
    ),
)
AGENT_POLICIES = Table(
    AgentPolicy,
    (
        ("tenant_id", Kind.UUID),
        ("agent_id", Kind.UUID),
        ("allowed_event_types", Kind.TEXT_TUPLE),
        ("allowed_entity_types", Kind.TEXT_TUPLE),
        ("require_base_version", Kind.BOOL),
        ("max_payload_bytes", Kind.PLAIN),
        ("enabled", Kind.BOOL),
        ("created_at", Kind.OPTIONAL_TIME),
        ("updated_at", Kind.OPTIONAL_TIME),
    ),
)
AGENT_KEY_COLUMNS = AGENT_KEYS.names
AGENT_POLICY_COLUMNS = AGENT_POLICIES.names
COMMITMENT_COLUMNS = COMMITMENTS.names
API_KEY_COLUMNS = API_KEYS.names
AUDIT_COLUMNS = AUDIT_LOG.names
SCHEMA_COLUMNS = EVENT_SCHEMAS.names
# Counter states and gaps of every stream, or of the one stream whose key the adapter's
# filter names; the LAG pairs every event with the one before it in its stream, so a step
# of more than one is a gap (the first event is paired with 0: missing numbers from 1
# count as well). ``{filter}`` is the adapter's own "all streams or this one" clause.
COUNTER_STATES_SQL = """
WITH agg AS (
    SELECT tenant_id, store_id, MAX(sequence_number) AS max_seq, COUNT(*) AS n
    FROM ves_events WHERE {filter} GROUP BY tenant_id, store_id
), keys AS (
    SELECT tenant_id, store_id FROM sequence_counters WHERE {filter}
    UNION SELECT tenant_id, store_id FROM agg
)
SELECT k.tenant_id, k.store_id, c.current_sequence, COALESCE(a.max_seq, 0) AS max_seq,
       COALESCE(a.n, 0) AS n
FROM keys k
LEFT JOIN sequence_counters c ON c.tenant_id = k.tenant_id AND c.store_id = k.store_id
LEFT JOIN agg a ON a.tenant_id = k.tenant_id AND a.store_id = k.store_id
ORDER BY k.tenant_id, k.store_id
"""
GAPS_SQL = """
SELECT tenant_id, store_id, prev + 1 AS first_missing, sequence_number - 1 AS last_missing
FROM (
    SELECT tenant_id, store_id, sequence_number,
           COALESCE(LAG(sequence_number) OVER (
               PARTITION BY tenant_id, store_id ORDER BY sequence_number), 0) AS prev
    FROM ves_events WHERE {filter}
) s WHERE sequence_number > prev + 1
ORDER BY tenant_id, store_id, sequence_number
"""
COMMITMENT_DIGEST_SQL = (
    "SELECT tenant_id, store_id, sequence_start, sequence_end, merkle_root, new_state_root "
    "FROM ves_commitments ORDER BY tenant_id, store_id, sequence_start"
)


# Each adapter decodes a row's (tenant_id, store_id) into its StreamKey, as its driver
# returns UUIDs; the other columns read the same on both.
def counter_state(stream: StreamKey, row: Any) -> CounterState:
    """One row of :data:`COUNTER_STATES_SQL`."""
    return CounterState(
        stream=stream,
        counter=None if row["current_sequence"] is None else int(row["current_sequence"]),
        max_sequence=int(row["max_seq"]),
        event_count=int(row["n"]),
    )


def sequence_gap(stream: StreamKey, row: Any) -> SequenceGap:
    """One row of :data:`GAPS_SQL`."""
    return SequenceGap(stream, int(row["first_missing"]), int(row["last_missing"]))


def unchanged_state(
    stream: StreamKey, found: list[CounterState], expected: CounterState
) -> CounterState:
    """The stream's state read under the counter lock (``found``: what ``counter_states``
    returned for it), refused unless it is still the one a repair was planned on."""
    current = found[0] if found else CounterState(stream, None, 0, 0)
    if current != expected:
        raise ConcurrentWriteError(
            f"stream {stream.tenant_id}/{stream.store_id} changed since it was inspected "
            f"(now counter {current.counter}, max {current.max_sequence}); run again"
        )
    return current


MAX_CURSOR_SEQUENCE = 2**63 - 1


def check_cursor_sequence(sequence: int) -> None:
    """Checked before any query: past a BIGINT the drivers fail in their own ways."""
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise ValueError("a cursor sequence is an integer")
    if not 0 <= sequence <= MAX_CURSOR_SEQUENCE:
        raise ValueError(f"a cursor sequence is 0..{MAX_CURSOR_SEQUENCE}, not {sequence}")


def check_schema_status(status: str) -> None:
    """Checked before the UPDATE as well as by the table's CHECK, which only fires when a
    row matches: a bad status is refused whether or not the schema exists."""
    if status not in SCHEMA_STATUSES:
        raise IntegrityError(f"schema status must be one of {', '.join(SCHEMA_STATUSES)}")


# What agent_event_policies holds (the tables' CHECKs, and the 32-bit INTEGER column the
# PostgreSQL table has for max_payload_bytes): checked before a write on both backends, so
# that SQLite, whose integers are wider, refuses what PostgreSQL would.
MAX_POLICY_RULES = 128
POLICY_MAX_PAYLOAD_LIMIT = 2**31 - 1


def check_policy(policy: AgentPolicy) -> None:
    """Refuse (``IntegrityError``) a policy neither store could hold as it is."""
    size = policy.max_payload_bytes
    if size is not None and not 1 <= size <= POLICY_MAX_PAYLOAD_LIMIT:
        raise IntegrityError(f"max_payload_bytes must be 1..{POLICY_MAX_PAYLOAD_LIMIT}")
    for name in ("allowed_event_types", "allowed_entity_types"):
        rules = getattr(policy, name)
        if len(rules) > MAX_POLICY_RULES:
            raise IntegrityError(f"{name} holds more than {MAX_POLICY_RULES} rules")
        if not all(isinstance(rule, str) and is_storable(rule) for rule in rules):
            raise IntegrityError(f"{name} holds a rule that is not storable text")


def column_list(columns: tuple[str, ...]) -> str:
    return ", ".join(columns)


def envelope_from_columns(
    *,
    event_id: uuid.UUID | str,
    command_id: uuid.UUID | str | None,
    ves_version: int,
    tenant_id: uuid.UUID | str,
    store_id: uuid.UUID | str,
    source_agent_id: uuid.UUID | str,
    agent_key_id: int,
    entity_type: str,
    entity_id: str,
    event_type: str,
    created_at_str: str,
    payload_kind: int,
    payload: str | None,
    payload_encrypted: str | None,
    payload_plain_hash: bytes,
    payload_cipher_hash: bytes,
    agent_signature: bytes,
    agent_signature_scheme: int | None,
    agent_signature_bundle: str | None,
    base_version: int | str | None,
) -> VesEventEnvelope:
    """Rebuild the envelope exactly as it was signed from one ``ves_events`` row."""
    obj: dict[str, Any] = {
        "ves_version": ves_version,
        "event_id": _uuid(event_id),
        "tenant_id": _uuid(tenant_id),
        "store_id": _uuid(store_id),
        "source_agent_id": _uuid(source_agent_id),
        "agent_key_id": agent_key_id,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "event_type": event_type,
        "created_at": created_at_str,
        "payload_kind": payload_kind,
        "payload": load_json(payload),
        "payload_encrypted": load_json(payload_encrypted),
        "payload_plain_hash": bytes(payload_plain_hash),
        "payload_cipher_hash": bytes(payload_cipher_hash),
        "agent_signature": bytes(agent_signature),
        "agent_signature_scheme": agent_signature_scheme,
        "agent_signature_bundle": load_json(agent_signature_bundle),
        "command_id": _uuid(command_id) if command_id is not None else None,
        "base_version": int(base_version) if base_version is not None else None,
    }
    return parse_envelope(obj)


def chained(entry: AuditEntry, tail_seq: int, tail_hash: bytes) -> AuditEntry:
    """``entry`` as the successor of the audit chain's tail (``tail_seq`` 0: the first
    entry), its timestamp fixed as it is stored and hashed, its chain fields filled."""
    moment = entry.timestamp if entry.timestamp is not None else datetime.now(UTC)
    base = replace(entry, timestamp=moment.astimezone(UTC), chain_seq=tail_seq + 1)
    fields = {name: getattr(base, name) for name in AUDIT_HASHED_FIELDS}
    return replace(base, previous_hash=tail_hash, entry_hash=audit_entry_hash(tail_hash, fields))


def schema_audit(entry: AuditEntry, record: SchemaRecord) -> AuditEntry:
    """A schema change's audit entry completed with what only the store knows: the
    schema's id and version."""
    return replace(
        entry,
        tenant_id=record.tenant_id,
        resource_type="event_schema",
        resource_id=str(record.id),
        details={
            **entry.details,
            "event_type": record.event_type,
            "version": record.version,
            "status": record.status,
        },
    )


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def time_to_text(moment: datetime) -> str:
    """Fixed-width UTC text with microseconds: text order is time order (SQLite)."""
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def time_from_text(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def check_budget_take(key_hash: str, limit: int, window_seconds: int, capacity: int) -> None:
    """What both adapters refuse before a rate-budget take (``RateBudgets``)."""
    if len(key_hash) != 64 or any(c not in "0123456789abcdef" for c in key_hash):
        raise ValueError("a rate budget key is 64 lowercase hex digits")
    if min(limit, window_seconds, capacity) < 1:
        raise ValueError("rate budget limit, window and capacity must be positive")


def check_projection_apply(
    stream: StreamKey, expected: int, checkpoint: int, documents: Sequence[ProjectionDocument]
) -> None:
    """The arguments ``Projections.apply_projection`` refuses before touching the store."""
    if checkpoint < expected:
        raise ValueError(f"a projection checkpoint cannot move back ({expected} -> {checkpoint})")
    for document in documents:
        if (document.tenant_id, document.store_id) != (stream.tenant_id, stream.store_id):
            raise ValueError("a projection document belongs to another stream")


# The chain columns of ves_commitments, which recording an anchor sets.
ANCHOR_COLUMNS = ("chain_id", "chain_tx_hash", "chain_block_number", "anchored_at")


def anchored(
    row: CommitmentRow,
    chain_id: int,
    chain_tx_hash: bytes,
    chain_block_number: int | None,
    anchored_at: datetime | None,
) -> tuple[AnchorOutcome, CommitmentRow]:
    """What recording an anchor on ``row`` (read under a lock) does, and the row after:
    the same transaction again changes nothing, another one is a conflict."""
    if len(chain_tx_hash) != 32:
        raise ValueError("a chain transaction hash is 32 bytes")
    if row.chain_tx_hash is not None:
        same = bytes(row.chain_tx_hash) == chain_tx_hash
        return (AnchorOutcome.ALREADY_RECORDED if same else AnchorOutcome.CONFLICT), row
    return AnchorOutcome.RECORDED, replace(
        row,
        chain_id=chain_id,
        chain_tx_hash=chain_tx_hash,
        chain_block_number=chain_block_number,
        anchored_at=anchored_at,
    )


# The first unanchored commitment of each stream (what the anchor worker can send next:
# the registry takes a stream's batches in order only), oldest first. The subquery names
# the tenant, so on Citus it runs on each stream's own shard. {P1} is the limit.
PENDING_HEADS_SQL = """SELECT {columns} FROM ves_commitments c
WHERE c.chain_tx_hash IS NULL AND NOT EXISTS (
    SELECT 1 FROM ves_commitments p
    WHERE p.tenant_id = c.tenant_id AND p.store_id = c.store_id
      AND p.chain_tx_hash IS NULL AND p.sequence_start < c.sequence_start)
ORDER BY c.committed_at, c.tenant_id, c.store_id
LIMIT {P1}"""


# Streams with events past their last commitment (the commit worker's walk); joins name the
# tenant as well, so on Citus each stream's rows are read on its own shard. The adapters
# fill in their placeholders: {P1} the tenant (NULL: from the first stream), {P2} the
# store, {P3} the limit.
COMMIT_BACKLOG_SQL = """WITH s AS (
    SELECT c.tenant_id, c.store_id, c.current_sequence AS head,
           COALESCE((SELECT MAX(m.sequence_end) FROM ves_commitments m
                     WHERE m.tenant_id = c.tenant_id AND m.store_id = c.store_id), 0)
               AS committed
    FROM sequence_counters c
)
SELECT s.tenant_id, s.store_id, s.head, s.committed,
       (SELECT e.sequenced_at FROM ves_events e
        WHERE e.tenant_id = s.tenant_id AND e.store_id = s.store_id
          AND e.sequence_number = s.committed + 1) AS oldest
FROM s
WHERE s.head > s.committed AND ({P1} IS NULL OR (s.tenant_id, s.store_id) > ({P1}, {P2}))
ORDER BY s.tenant_id, s.store_id
LIMIT {P3}"""

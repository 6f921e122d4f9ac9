"""Column lists and row decoders shared by the store and its stream transaction."""

from __future__ import annotations

from asyncpg import Record

from ...ves.codec import format_rfc3339
from ...ves.jsontext import load_json
from ...ves.signing import Receipt
from ..base import AgentKey, ApiKeyRecord, AuditEntry, CommitmentRow, Existing, StoredEvent
from ..rows import (
    ENVELOPE_COLUMNS,
    RECEIPT_COLUMNS,
    RECEIPT_PREFIX,
    envelope_from_columns,
)

Row = Record

EVENT_COLUMNS = (*ENVELOPE_COLUMNS, "sequenced_at", "event_signing_hash", "sequence_number")

EVENT_SELECT = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
# Receipt columns under an ``r_`` prefix so that one joined row carries both records.
RECEIPT_SELECT = ", ".join(f"r.{c} AS {RECEIPT_PREFIX}{c}" for c in RECEIPT_COLUMNS)
# Lookups by a list of keys go through LATERAL subqueries with LIMIT 1, which PostgreSQL
# never flattens: the plan is one index probe per key whatever the statistics said when
# the statement was first prepared. (A plain join against the array was cached as a hash
# join over the whole table while the table was small, and stayed so as it grew: 185 ms a
# batch at 100k rows.)
EXISTING_SQL = (
    f"SELECT {EVENT_SELECT}, {RECEIPT_SELECT} "  # noqa: S608 - fixed names
    "FROM unnest($1::uuid[]) AS q(id) "
    "CROSS JOIN LATERAL (SELECT * FROM ves_events WHERE event_id = q.id LIMIT 1) AS e "
    "LEFT JOIN LATERAL "
    "(SELECT * FROM ves_sequencer_receipts WHERE event_id = q.id LIMIT 1) AS r ON TRUE"
)


def stored_event(row: Row) -> StoredEvent:
    base_version = row["base_version"]
    envelope = envelope_from_columns(
        event_id=row["event_id"],
        command_id=row["command_id"],
        ves_version=row["ves_version"],
        tenant_id=row["tenant_id"],
        store_id=row["store_id"],
        source_agent_id=row["source_agent_id"],
        agent_key_id=row["agent_key_id"],
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        event_type=row["event_type"],
        created_at_str=row["created_at_str"],
        payload_kind=row["payload_kind"],
        payload=row["payload"],
        payload_encrypted=row["payload_encrypted"],
        payload_plain_hash=row["payload_plain_hash"],
        payload_cipher_hash=row["payload_cipher_hash"],
        agent_signature=row["agent_signature"],
        agent_signature_scheme=row["agent_signature_scheme"],
        agent_signature_bundle=row["agent_signature_bundle"],
        # NUMERIC arrives as Decimal; it always holds a whole number (scale 0).
        base_version=int(base_version) if base_version is not None else None,
    )
    return StoredEvent(
        envelope=envelope,
        sequence_number=row["sequence_number"],
        sequenced_at=row["sequenced_at"],
        event_signing_hash=bytes(row["event_signing_hash"]),
    )


def receipt(row: Row, prefix: str = "") -> Receipt:
    signature = row[f"{prefix}sequencer_signature"]
    return Receipt(
        sequencer_id=row[f"{prefix}sequencer_id"],
        event_id=row[f"{prefix}event_id"],
        sequence_number=row[f"{prefix}sequence_number"],
        sequenced_at=format_rfc3339(row[f"{prefix}sequenced_at"]),
        receipt_hash=bytes(row[f"{prefix}receipt_hash"]),
        signature_alg=row[f"{prefix}signature_alg"],
        # An unsigned receipt is stored as NULL (the column only admits 64-byte values).
        sequencer_signature=bytes(signature) if signature is not None else b"",
        sequencer_key_version=row[f"{prefix}sequencer_key_version"],
    )


def existing(row: Row) -> Existing:
    stored = receipt(row, "r_") if row["r_event_id"] is not None else None
    return Existing(event=stored_event(row), receipt=stored)


def agent_key(row: Row) -> AgentKey:
    return AgentKey(
        tenant_id=row["tenant_id"],
        agent_id=row["agent_id"],
        key_id=row["key_id"],
        public_key=bytes(row["public_key"]),
        status=row["status"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        revoked_at=row["revoked_at"],
        key_algorithm=row["key_algorithm"],
        created_at=row["created_at"],
    )


def commitment(row: Row) -> CommitmentRow:
    tx_hash = row["chain_tx_hash"]
    return CommitmentRow(
        batch_id=row["batch_id"],
        tenant_id=row["tenant_id"],
        store_id=row["store_id"],
        ves_version=row["ves_version"],
        tree_depth=row["tree_depth"],
        leaf_count=row["leaf_count"],
        padded_leaf_count=row["padded_leaf_count"],
        merkle_root=bytes(row["merkle_root"]),
        prev_state_root=bytes(row["prev_state_root"]),
        new_state_root=bytes(row["new_state_root"]),
        sequence_start=row["sequence_start"],
        sequence_end=row["sequence_end"],
        committed_at=row["committed_at"],
        chain_id=row["chain_id"],
        chain_tx_hash=bytes(tx_hash) if tx_hash is not None else None,
        chain_block_number=row["chain_block_number"],
        anchored_at=row["anchored_at"],
    )


def api_key(row: Row) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_hash=row["key_hash"],
        tenant_id=row["tenant_id"],
        store_ids=tuple(row["store_ids"]),
        can_read=row["can_read"],
        can_write=row["can_write"],
        can_admin=row["can_admin"],
        agent_id=row["agent_id"],
        active=row["active"],
        rate_limit=row["rate_limit"],
        created_at=row["created_at"],
    )


def audit_entry(row: Row) -> AuditEntry:
    details = load_json(row["details"])
    return AuditEntry(
        id=row["id"],
        timestamp=row["timestamp"],
        action=row["action"],
        actor=row["actor"],
        actor_type=row["actor_type"],
        tenant_id=row["tenant_id"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        request_id=row["request_id"],
        ip_address=row["ip_address"],
        user_agent=row["user_agent"],
        details=details if isinstance(details, dict) else {},
        success=row["success"],
        error_message=row["error_message"],
    )

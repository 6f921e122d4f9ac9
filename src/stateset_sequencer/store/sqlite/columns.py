"""SQLite column values to and from the contract's types.

UUIDs are canonical lowercase text, times fixed-width UTC text (``rows.time_to_text``),
booleans 0/1. The envelope columns themselves go through the shared ``rows`` module.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime
from typing import Any

from ...ves.codec import format_rfc3339, parse_rfc3339
from ...ves.jsontext import bundle_text, dump_json, encrypted_text, load_json, payload_text
from ...ves.signing import Receipt
from ..base import AgentKey, ApiKeyRecord, AuditEntry, CommitmentRow, NewEvent, StoredEvent
from ..rows import (
    ENVELOPE_COLUMNS,
    RECEIPT_COLUMNS,
    RECEIPT_PREFIX,
    envelope_from_columns,
    time_from_text,
    time_to_text,
)

EVENT_COLUMNS = (
    *ENVELOPE_COLUMNS,
    "created_at",
    "sequence_number",
    "sequenced_at",
    "event_signing_hash",
)
EVENT_SELECT = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
EVENT_WITH_RECEIPT_SELECT = EVENT_SELECT + "".join(
    f", r.{c} AS {RECEIPT_PREFIX}{c}" for c in RECEIPT_COLUMNS
)


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


def optional_uuid_text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def optional_uuid(text: str | None) -> uuid.UUID | None:
    return None if text is None else uuid.UUID(text)


def optional_time_text(moment: datetime | None) -> str | None:
    return None if moment is None else time_to_text(moment)


def optional_time(text: str | None) -> datetime | None:
    return None if text is None else time_from_text(text)


# --- events and receipts ----------------------------------------------------------------


def event_params(event: NewEvent) -> tuple[Any, ...]:
    """One ves_events row in EVENT_COLUMNS order."""
    env = event.envelope
    return (
        str(env.event_id),
        optional_uuid_text(env.command_id),
        env.ves_version,
        str(env.tenant_id),
        str(env.store_id),
        str(env.source_agent_id),
        env.agent_key_id,
        env.entity_type,
        env.entity_id,
        env.event_type,
        env.created_at,
        env.payload_kind,
        payload_text(env),
        encrypted_text(env),
        env.payload_plain_hash,
        env.payload_cipher_hash,
        env.agent_signature,
        env.agent_signature_scheme,
        bundle_text(env),
        # Text, because a u64 does not fit SQLite's signed 64-bit INTEGER.
        None if env.base_version is None else str(env.base_version),
        time_to_text(parse_rfc3339(env.created_at)),
        event.sequence_number,
        time_to_text(event.sequenced_at),
        event.event_signing_hash,
    )


def receipt_params(event: NewEvent) -> tuple[Any, ...]:
    """One ves_sequencer_receipts row in RECEIPT_COLUMNS order."""
    receipt, env = event.receipt, event.envelope
    return (
        str(receipt.event_id),
        str(env.tenant_id),
        str(env.store_id),
        str(receipt.sequencer_id),
        receipt.sequence_number,
        time_to_text(parse_rfc3339(receipt.sequenced_at)),
        receipt.receipt_hash,
        receipt.signature_alg,
        receipt.sequencer_signature or None,
        receipt.sequencer_key_version,
    )


def stored_event(row: sqlite3.Row) -> StoredEvent:
    envelope = envelope_from_columns(**{c: row[c] for c in ENVELOPE_COLUMNS})
    return StoredEvent(
        envelope=envelope,
        sequence_number=row["sequence_number"],
        sequenced_at=time_from_text(row["sequenced_at"]),
        event_signing_hash=bytes(row["event_signing_hash"]),
    )


def receipt(row: sqlite3.Row, prefix: str = "") -> Receipt | None:
    """The receipt in ``row`` (None when a LEFT JOIN found none)."""
    if row[f"{prefix}event_id"] is None:
        return None
    signature = row[f"{prefix}sequencer_signature"]
    return Receipt(
        sequencer_id=uuid.UUID(row[f"{prefix}sequencer_id"]),
        event_id=uuid.UUID(row[f"{prefix}event_id"]),
        sequence_number=row[f"{prefix}sequence_number"],
        sequenced_at=format_rfc3339(time_from_text(row[f"{prefix}sequenced_at"])),
        receipt_hash=bytes(row[f"{prefix}receipt_hash"]),
        signature_alg=row[f"{prefix}signature_alg"],
        sequencer_signature=b"" if signature is None else bytes(signature),
        sequencer_key_version=row[f"{prefix}sequencer_key_version"],
    )


# --- agent keys, commitments, API keys, audit -------------------------------------------

AGENT_KEY_COLUMNS = (
    "tenant_id",
    "agent_id",
    "key_id",
    "public_key",
    "status",
    "valid_from",
    "valid_to",
    "revoked_at",
    "key_algorithm",
    "created_at",
)


def agent_key_params(key: AgentKey) -> tuple[Any, ...]:
    return (
        str(key.tenant_id),
        str(key.agent_id),
        key.key_id,
        key.public_key,
        key.status,
        optional_time_text(key.valid_from),
        optional_time_text(key.valid_to),
        optional_time_text(key.revoked_at),
        key.key_algorithm,
        optional_time_text(key.created_at),
    )


def agent_key(row: sqlite3.Row) -> AgentKey:
    return AgentKey(
        tenant_id=uuid.UUID(row["tenant_id"]),
        agent_id=uuid.UUID(row["agent_id"]),
        key_id=row["key_id"],
        public_key=bytes(row["public_key"]),
        status=row["status"],
        valid_from=optional_time(row["valid_from"]),
        valid_to=optional_time(row["valid_to"]),
        revoked_at=optional_time(row["revoked_at"]),
        key_algorithm=row["key_algorithm"],
        created_at=time_from_text(row["created_at"]),
    )


COMMITMENT_COLUMNS = (
    "batch_id",
    "tenant_id",
    "store_id",
    "ves_version",
    "tree_depth",
    "leaf_count",
    "padded_leaf_count",
    "merkle_root",
    "prev_state_root",
    "new_state_root",
    "sequence_start",
    "sequence_end",
    "committed_at",
    "chain_id",
    "chain_tx_hash",
    "chain_block_number",
    "anchored_at",
)


def commitment_params(row: CommitmentRow) -> tuple[Any, ...]:
    return (
        str(row.batch_id),
        str(row.tenant_id),
        str(row.store_id),
        row.ves_version,
        row.tree_depth,
        row.leaf_count,
        row.padded_leaf_count,
        row.merkle_root,
        row.prev_state_root,
        row.new_state_root,
        row.sequence_start,
        row.sequence_end,
        time_to_text(row.committed_at),
        row.chain_id,
        row.chain_tx_hash,
        row.chain_block_number,
        optional_time_text(row.anchored_at),
    )


def commitment(row: sqlite3.Row) -> CommitmentRow:
    tx_hash = row["chain_tx_hash"]
    return CommitmentRow(
        batch_id=uuid.UUID(row["batch_id"]),
        tenant_id=uuid.UUID(row["tenant_id"]),
        store_id=uuid.UUID(row["store_id"]),
        ves_version=row["ves_version"],
        tree_depth=row["tree_depth"],
        leaf_count=row["leaf_count"],
        padded_leaf_count=row["padded_leaf_count"],
        merkle_root=bytes(row["merkle_root"]),
        prev_state_root=bytes(row["prev_state_root"]),
        new_state_root=bytes(row["new_state_root"]),
        sequence_start=row["sequence_start"],
        sequence_end=row["sequence_end"],
        committed_at=time_from_text(row["committed_at"]),
        chain_id=row["chain_id"],
        chain_tx_hash=None if tx_hash is None else bytes(tx_hash),
        chain_block_number=row["chain_block_number"],
        anchored_at=optional_time(row["anchored_at"]),
    )


API_KEY_COLUMNS = (
    "key_hash",
    "tenant_id",
    "store_ids",
    "can_read",
    "can_write",
    "can_admin",
    "agent_id",
    "active",
    "rate_limit",
    "created_at",
    "updated_at",
)


def api_key_params(record: ApiKeyRecord, updated_at: datetime) -> tuple[Any, ...]:
    return (
        record.key_hash,
        str(record.tenant_id),
        dump_json([str(s) for s in record.store_ids]),
        int(record.can_read),
        int(record.can_write),
        int(record.can_admin),
        optional_uuid_text(record.agent_id),
        int(record.active),
        record.rate_limit,
        optional_time_text(record.created_at),
        time_to_text(updated_at),
    )


def api_key(row: sqlite3.Row) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_hash=row["key_hash"],
        tenant_id=uuid.UUID(row["tenant_id"]),
        store_ids=tuple(uuid.UUID(s) for s in load_json(row["store_ids"])),
        can_read=bool(row["can_read"]),
        can_write=bool(row["can_write"]),
        can_admin=bool(row["can_admin"]),
        agent_id=optional_uuid(row["agent_id"]),
        active=bool(row["active"]),
        rate_limit=row["rate_limit"],
        created_at=time_from_text(row["created_at"]),
    )


AUDIT_COLUMNS = (
    "id",
    "timestamp",
    "action",
    "actor",
    "actor_type",
    "tenant_id",
    "resource_type",
    "resource_id",
    "request_id",
    "ip_address",
    "user_agent",
    "details",
    "success",
    "error_message",
)


def audit_params(entry: AuditEntry) -> tuple[Any, ...]:
    return (
        str(entry.id),
        optional_time_text(entry.timestamp),
        entry.action,
        entry.actor,
        entry.actor_type,
        optional_uuid_text(entry.tenant_id),
        entry.resource_type,
        entry.resource_id,
        entry.request_id,
        entry.ip_address,
        entry.user_agent,
        dump_json(dict(entry.details)),
        int(entry.success),
        entry.error_message,
    )


def audit_entry(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        id=uuid.UUID(row["id"]),
        timestamp=time_from_text(row["timestamp"]),
        action=row["action"],
        actor=row["actor"],
        actor_type=row["actor_type"],
        tenant_id=optional_uuid(row["tenant_id"]),
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        request_id=row["request_id"],
        ip_address=row["ip_address"],
        user_agent=row["user_agent"],
        details=load_json(row["details"]),
        success=bool(row["success"]),
        error_message=row["error_message"],
    )

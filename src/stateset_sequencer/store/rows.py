"""Conversions between the domain types and database column values, shared by adapters.

Payload columns hold exact JSON text (``ves.jsontext``), never canonical JSON.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from ..ves.envelope import VesEventEnvelope, parse_envelope
from ..ves.jsontext import load_json

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


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


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def time_to_text(moment: datetime) -> str:
    """Fixed-width UTC text with microseconds: text order is time order (SQLite)."""
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def time_from_text(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)

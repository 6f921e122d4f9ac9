"""The audit log's hash chain: the canonical encoding of one entry and its hash.

Defined in docs/PROTOCOL.md ("Audit log hash chain"); a change here is a change to the
protocol. Pure: no I/O, no store. The hash covers a JCS (RFC 8785) document of the entry
that we define, never a database's own JSON rendering, so the same chain verifies on
SQLite and PostgreSQL, offline, from the column values alone.

    entry_hash = SHA-256( "SEQ_AUDIT_V1" ‖ previous_hash ‖ JCS(document) )

``previous_hash`` is the entry_hash of the entry at ``chain_seq - 1``, or 32 zero bytes
for the first entry (``chain_seq`` 1).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .jcs import canonicalize

DOMAIN_AUDIT = b"SEQ_AUDIT_V1"
GENESIS_HASH = bytes(32)
HASH_BYTES = 32

# The document's members. Every member is always present (null when absent), so that
# a field cannot be moved between "absent" and "null" without changing the hash.
AUDIT_HASHED_FIELDS = (
    "chain_seq",
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
_TEXT_FIELDS = ("action", "actor", "actor_type")
_OPTIONAL_TEXT_FIELDS = (
    "resource_type",
    "resource_id",
    "request_id",
    "ip_address",
    "user_agent",
    "error_message",
)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def audit_time_text(moment: datetime) -> str:
    """A timestamp as the document holds it: UTC, always six fractional digits, ``Z``
    (``2026-01-02T03:04:05.000006Z``). Both stores keep microseconds, so the text read
    back is the text hashed."""
    if moment.tzinfo is None:
        raise ValueError("an audit timestamp must carry a time zone")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def audit_document(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document hashed for one entry, from its field values (a mapping holding at
    least :data:`AUDIT_HASHED_FIELDS`; the hash fields themselves are not part of it)."""
    chain_seq = fields["chain_seq"]
    if not isinstance(chain_seq, int) or isinstance(chain_seq, bool) or chain_seq < 1:
        raise ValueError("chain_seq is an integer from 1")
    entry_id = fields["id"]
    tenant_id = fields["tenant_id"]
    moment = fields["timestamp"]
    success = fields["success"]
    details = fields["details"]
    if not isinstance(entry_id, uuid.UUID):
        raise ValueError("id is a UUID")
    if tenant_id is not None and not isinstance(tenant_id, uuid.UUID):
        raise ValueError("tenant_id is a UUID or None")
    if not isinstance(moment, datetime):
        raise ValueError("timestamp is a datetime")
    if not isinstance(success, bool):
        raise ValueError("success is a bool")
    if not isinstance(details, Mapping):
        raise ValueError("details is a JSON object")
    document: dict[str, Any] = {
        "chain_seq": chain_seq,
        "id": str(entry_id),  # str() of a UUID is lowercase and hyphenated
        "timestamp": audit_time_text(moment),
        "tenant_id": None if tenant_id is None else str(tenant_id),
        "details": dict(details),
        "success": success,
    }
    for name in _TEXT_FIELDS:
        value = fields[name]
        if not isinstance(value, str):
            raise ValueError(f"{name} is a string")
        document[name] = value
    for name in _OPTIONAL_TEXT_FIELDS:
        value = fields[name]
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} is a string or None")
        document[name] = value
    return document


def canonical_audit_entry(fields: Mapping[str, Any]) -> bytes:
    """JCS (RFC 8785) bytes of :func:`audit_document`."""
    return canonicalize(audit_document(fields))


def audit_entry_hash(previous_hash: bytes, fields: Mapping[str, Any]) -> bytes:
    """``SHA-256("SEQ_AUDIT_V1" ‖ previous_hash ‖ JCS(document))``."""
    if len(previous_hash) != HASH_BYTES:
        raise ValueError(f"previous_hash must be {HASH_BYTES} bytes")
    digest = hashlib.sha256(DOMAIN_AUDIT)
    digest.update(previous_hash)
    digest.update(canonical_audit_entry(fields))
    return digest.digest()

"""Minting, listing and revoking API keys: one implementation for the admin routes, the
agent routes and ``sequencer-cli api-keys``. A key's plaintext leaves this module once,
in the return value of :func:`create_key`; only its SHA-256 is stored.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any

from ..store.ports import AccessStore
from ..store.records import ApiKeyRecord, AuditEntry
from .auth import NIL, hash_api_key, mint_api_key

MIN_PREFIX = 8  # hex digits a revocation must name, so one typo cannot revoke many keys
MAX_STORES = 50
MAX_RATE_LIMIT = 1_000_000


class KeyReason(enum.StrEnum):
    """Why a key request is refused. Every reason this module raises is here;
    ``api/http/errors.py`` maps each to its status."""

    STORE_IDS_TOO_MANY = "STORE_IDS_TOO_MANY"
    STORE_IDS_DUPLICATE = "STORE_IDS_DUPLICATE"
    RATE_LIMIT_INVALID = "RATE_LIMIT_INVALID"
    NO_PERMISSIONS = "NO_PERMISSIONS"
    INVALID_KEY_PREFIX = "INVALID_KEY_PREFIX"
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    AMBIGUOUS_PREFIX = "AMBIGUOUS_PREFIX"
    ALREADY_REVOKED = "ALREADY_REVOKED"


class KeyRequestError(Exception):
    """A key request refused, with its reason."""

    def __init__(self, reason: KeyReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class KeySpec:
    tenant_id: uuid.UUID
    store_ids: tuple[uuid.UUID, ...] = ()
    read: bool = True
    write: bool = False
    admin: bool = False
    agent_id: uuid.UUID | None = None
    rate_limit: int | None = None

    def check(self) -> None:
        if len(self.store_ids) > MAX_STORES:
            raise KeyRequestError(KeyReason.STORE_IDS_TOO_MANY, f"at most {MAX_STORES} store ids")
        if len(set(self.store_ids)) != len(self.store_ids):
            raise KeyRequestError(KeyReason.STORE_IDS_DUPLICATE, "store ids repeat")
        if self.rate_limit is not None and not 1 <= self.rate_limit <= MAX_RATE_LIMIT:
            raise KeyRequestError(
                KeyReason.RATE_LIMIT_INVALID, f"rateLimit must be 1-{MAX_RATE_LIMIT}"
            )
        if not (self.read or self.write or self.admin):
            raise KeyRequestError(KeyReason.NO_PERMISSIONS, "a key needs read, write or admin")


def within_scope(record: ApiKeyRecord, stores: tuple[uuid.UUID, ...]) -> bool:
    """Whether a key reaches no store outside ``stores`` (empty ``stores``: no limit)."""
    if not stores:
        return True
    return bool(record.store_ids) and set(record.store_ids) <= set(stores)


def permissions(record: ApiKeyRecord) -> str:
    if record.can_admin:
        return "admin"
    return "read_write" if record.can_write else "read"


def describe(record: ApiKeyRecord) -> dict[str, Any]:
    """The listing form: never the hash in full, never the plaintext."""
    return {
        "keyHashPrefix": record.key_hash[:16],
        "tenantId": str(record.tenant_id),
        "storeIds": [str(s) for s in record.store_ids],
        "agentId": str(record.agent_id) if record.agent_id else None,
        "active": record.active,
        "permissions": permissions(record),
        "read": record.can_read,
        "write": record.can_write,
        "admin": record.can_admin,
        "rateLimit": record.rate_limit,
        "createdAt": record.created_at.isoformat() if record.created_at else None,
    }


def _key_audit(
    action: str,
    record: ApiKeyRecord,
    actor: str,
    actor_type: str,
    request_id: str | None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """The audit row of a change to one key, named by its hash prefix as listings show it.
    ``record`` is the key as stored: its tenant is the one the change was made in."""
    return AuditEntry(
        action=action,
        actor=actor,
        actor_type=actor_type,
        tenant_id=record.tenant_id,
        resource_type="api_key",
        resource_id=record.key_hash[:16],
        request_id=request_id,
        details={} if details is None else details,
    )


async def create_key(
    store: AccessStore, spec: KeySpec, *, actor: str, actor_type: str, request_id: str | None = None
) -> tuple[str, ApiKeyRecord]:
    spec.check()
    plaintext = mint_api_key(spec.tenant_id)
    record = await store.put_api_key(
        ApiKeyRecord(
            key_hash=hash_api_key(plaintext),
            tenant_id=spec.tenant_id,
            store_ids=spec.store_ids,
            can_read=spec.read or spec.write or spec.admin,
            can_write=spec.write or spec.admin,
            can_admin=spec.admin,
            agent_id=spec.agent_id,
            rate_limit=spec.rate_limit,
        )
    )
    details = {
        "permissions": permissions(record),
        "store_ids": [str(s) for s in spec.store_ids],
        "agent_id": str(spec.agent_id) if spec.agent_id else None,
        "bootstrap": spec.tenant_id == NIL and spec.admin,
    }
    await store.append_audit(
        _key_audit("api_key.create", record, actor, actor_type, request_id, details)
    )
    return plaintext, record


async def find_by_prefix(
    store: AccessStore, prefix: str, tenant_id: uuid.UUID | None
) -> list[ApiKeyRecord]:
    """Keys whose hash starts with ``prefix``, within one tenant (None: every tenant)."""
    text = prefix.strip().lower()
    if len(text) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in text):
        raise KeyRequestError(
            KeyReason.INVALID_KEY_PREFIX, f"a key hash prefix is {MIN_PREFIX}-64 hex digits"
        )
    if len(text) > 64:
        raise KeyRequestError(KeyReason.INVALID_KEY_PREFIX, "a key hash has 64 hex digits")
    return [k for k in await store.list_api_keys(tenant_id) if k.key_hash.startswith(text)]


async def revoke_key(
    store: AccessStore,
    prefix: str,
    *,
    tenant_id: uuid.UUID | None,
    actor: str,
    actor_type: str,
    request_id: str | None = None,
    agent_id: uuid.UUID | None = None,
    within_stores: tuple[uuid.UUID, ...] = (),
) -> ApiKeyRecord:
    """Deactivate exactly one key. An ambiguous prefix is refused rather than revoking
    several keys at once; an already inactive key is reported, not silently 'revoked'.
    ``within_stores`` (a store-scoped admin's scope) hides keys reaching beyond it."""
    matches = await find_by_prefix(store, prefix, tenant_id)
    if agent_id is not None:
        matches = [k for k in matches if k.agent_id == agent_id]
    if within_stores:
        matches = [k for k in matches if within_scope(k, within_stores)]
    if not matches:
        raise KeyRequestError(KeyReason.KEY_NOT_FOUND, "API key not found")
    if len(matches) > 1:
        raise KeyRequestError(KeyReason.AMBIGUOUS_PREFIX, "prefix matches several keys; give more")
    record = matches[0]
    if not record.active:
        raise KeyRequestError(KeyReason.ALREADY_REVOKED, "API key is already revoked")
    await store.deactivate_api_keys(record.key_hash)
    await store.append_audit(_key_audit("api_key.revoke", record, actor, actor_type, request_id))
    return record

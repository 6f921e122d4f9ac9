"""Minting, listing and revoking API keys: one implementation for the admin routes, the
agent routes, public registration and ``sequencer-cli api-keys``. A key's plaintext
leaves this module once, in the return value of :func:`create_key`; only its SHA-256 is
stored.

The minting rule (:func:`check_minting`) is the one place that decides how wide a minted
key may be: never wider than its minter in tenant, stores, agent, permissions or rate
limit, whoever the minter is. Only the global admin (nil tenant) is unbounded. A key
minted by another key records it as its parent, and revoking a key revokes its
descendants with it.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from typing import Any

from ..store.ports import AccessStore
from ..store.records import ApiKeyRecord, AuditEntry
from .auth import NIL, AuthContext, hash_api_key, mint_api_key

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
    # the minting rule: what a minter may not grant beyond itself
    TENANT_WIDENED = "TENANT_WIDENED"
    STORE_SCOPE_WIDENED = "STORE_SCOPE_WIDENED"
    AGENT_SCOPE_WIDENED = "AGENT_SCOPE_WIDENED"
    ADMIN_WIDENED = "ADMIN_WIDENED"
    WRITE_WIDENED = "WRITE_WIDENED"
    RATE_LIMIT_WIDENED = "RATE_LIMIT_WIDENED"
    # keys that would outlive their purpose
    KEY_LIMIT_REACHED = "KEY_LIMIT_REACHED"
    LAST_ADMIN_KEY = "LAST_ADMIN_KEY"


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


def is_global_admin(record: ApiKeyRecord) -> bool:
    """The nil-tenant admin: what the bootstrap key is, and what nothing may lock out."""
    return record.tenant_id == NIL and record.can_admin


def check_minting(minter: AuthContext, spec: KeySpec) -> None:
    """Refuse a key wider than its minter. Callers fill omitted fields from the minter
    (stores, rate limit) before asking, so an omission never widens by itself."""
    if minter.is_bootstrap:
        return
    if spec.tenant_id != minter.tenant_id:
        raise KeyRequestError(KeyReason.TENANT_WIDENED, "cannot mint a key for another tenant")
    if minter.agent_id is not None and spec.agent_id != minter.agent_id:
        raise KeyRequestError(
            KeyReason.AGENT_SCOPE_WIDENED, "an agent-bound key mints keys for its own agent only"
        )
    if minter.store_ids and (
        not spec.store_ids or not set(spec.store_ids) <= set(minter.store_ids)
    ):
        raise KeyRequestError(KeyReason.STORE_SCOPE_WIDENED, "cannot grant stores beyond your own")
    if spec.admin and not minter.can_admin:
        raise KeyRequestError(KeyReason.ADMIN_WIDENED, "only an admin can mint an admin key")
    if (spec.write or spec.admin) and not minter.can_write:
        raise KeyRequestError(KeyReason.WRITE_WIDENED, "cannot grant write you do not hold")
    if minter.rate_limit is not None and (
        spec.rate_limit is None or spec.rate_limit > minter.rate_limit
    ):
        raise KeyRequestError(
            KeyReason.RATE_LIMIT_WIDENED,
            f"cannot exceed your own rate limit ({minter.rate_limit})",
        )


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
        "parentKeyHashPrefix": record.parent_key_hash[:16] if record.parent_key_hash else None,
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
    store: AccessStore,
    spec: KeySpec,
    *,
    actor: str,
    actor_type: str,
    request_id: str | None = None,
    minter: AuthContext | None = None,
    max_keys_per_agent: int | None = None,
) -> tuple[str, ApiKeyRecord]:
    """Mint a key. With ``minter`` (every HTTP route), the key is bounded by it
    (:func:`check_minting`) and records it as its parent; ``max_keys_per_agent`` caps the
    active keys one agent may hold. The CLI, on the database itself, passes neither."""
    spec.check()
    if minter is not None:
        check_minting(minter, spec)
    if spec.agent_id is not None and max_keys_per_agent is not None:
        # Counted before the insert, not in one transaction with it: two concurrent mints
        # may pass one over the cap, which bounds the growth all the same.
        held = sum(
            1
            for k in await store.list_api_keys(spec.tenant_id)
            if k.active and k.agent_id == spec.agent_id
        )
        if held >= max_keys_per_agent:
            raise KeyRequestError(
                KeyReason.KEY_LIMIT_REACHED,
                f"agent {spec.agent_id} already holds {held} active API keys "
                f"(MAX_API_KEYS_PER_AGENT={max_keys_per_agent}); revoke one first",
            )
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
            parent_key_hash=minter.key_hash if minter is not None else None,
        )
    )
    details = {
        "permissions": permissions(record),
        "store_ids": [str(s) for s in spec.store_ids],
        "agent_id": str(spec.agent_id) if spec.agent_id else None,
        "bootstrap": spec.tenant_id == NIL and spec.admin,
        "parent": record.parent_key_hash[:16] if record.parent_key_hash else None,
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


@dataclass(frozen=True, slots=True)
class Revocation:
    """The key named and the descendants revoked with it (minted by it, transitively)."""

    record: ApiKeyRecord
    children: tuple[ApiKeyRecord, ...] = ()


def descendants(record: ApiKeyRecord, keys: list[ApiKeyRecord]) -> list[ApiKeyRecord]:
    """Every key minted from ``record``, directly or through other keys, oldest first."""
    by_parent: dict[str, list[ApiKeyRecord]] = {}
    for key in keys:
        if key.parent_key_hash:
            by_parent.setdefault(key.parent_key_hash, []).append(key)
    found: list[ApiKeyRecord] = []
    seen = {record.key_hash}
    frontier = [record.key_hash]
    while frontier:
        parent = frontier.pop()
        for child in by_parent.get(parent, []):
            if child.key_hash not in seen:
                seen.add(child.key_hash)
                found.append(child)
                frontier.append(child.key_hash)
    return found


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
    """:func:`revoke_tree`, for callers that need only the key named."""
    revocation = await revoke_tree(
        store,
        prefix,
        tenant_id=tenant_id,
        actor=actor,
        actor_type=actor_type,
        request_id=request_id,
        agent_id=agent_id,
        within_stores=within_stores,
    )
    return revocation.record


async def revoke_tree(
    store: AccessStore,
    prefix: str,
    *,
    tenant_id: uuid.UUID | None,
    actor: str,
    actor_type: str,
    request_id: str | None = None,
    agent_id: uuid.UUID | None = None,
    within_stores: tuple[uuid.UUID, ...] = (),
    keep_last_admin: bool = False,
) -> Revocation:
    """Deactivate exactly one key and every key minted from it. An ambiguous prefix is
    refused rather than revoking several keys at once; an already inactive key is
    reported, not silently 'revoked'. ``within_stores`` (a store-scoped admin's scope)
    hides keys reaching beyond it. ``keep_last_admin`` (HTTP) refuses to leave no active
    global admin key: over HTTP that would lock every operator out."""
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
    # A global admin mints in every tenant; any other key only in its own.
    family = await store.list_api_keys(None if record.tenant_id == NIL else record.tenant_id)
    children = [k for k in descendants(record, family) if k.active]
    if keep_last_admin:
        doomed = {record.key_hash} | {k.key_hash for k in children}
        remaining = [
            k for k in family if k.active and is_global_admin(k) and k.key_hash not in doomed
        ]
        if not remaining and (is_global_admin(record) or any(map(is_global_admin, children))):
            raise KeyRequestError(
                KeyReason.LAST_ADMIN_KEY,
                "this would revoke the last active global admin key; mint another first "
                "(sequencer-cli api-keys revoke on the database can still do it)",
            )
    await store.deactivate_api_keys(record.key_hash)
    await store.append_audit(_key_audit("api_key.revoke", record, actor, actor_type, request_id))
    for child in children:
        await store.deactivate_api_keys(child.key_hash)
        await store.append_audit(
            _key_audit(
                "api_key.revoke",
                child,
                actor,
                actor_type,
                request_id,
                {"with_parent": record.key_hash[:16]},
            )
        )
    return Revocation(
        replace(record, active=False), tuple(replace(c, active=False) for c in children)
    )

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
import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..store.ports import AccessStore
from ..store.records import ApiKeyRecord, AuditEntry
from .auth import NIL, AuthContext, hash_api_key, mint_api_key

MIN_PREFIX = 8  # hex digits a revocation must name, so one typo cannot revoke many keys
MAX_STORES = 50
MAX_RATE_LIMIT = 1_000_000
# The longest a key may be minted to live: further out is a typo (a year 9999) rather
# than a plan, and "never" is said by omitting the expiry.
MAX_KEY_LIFETIME = timedelta(days=3650)
MAX_TTL_SECONDS = int(MAX_KEY_LIFETIME.total_seconds())
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})?"
)
_EXPIRY_FORMAT = "expiresAt must be an RFC 3339 date-time, e.g. 2027-01-31T00:00:00Z"


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
    EXPIRY_WIDENED = "EXPIRY_WIDENED"  # a key minted by an expiring key outliving it
    # expiresAt / ttlSeconds
    EXPIRY_INVALID = "EXPIRY_INVALID"
    EXPIRY_IN_PAST = "EXPIRY_IN_PAST"
    EXPIRY_TOO_FAR = "EXPIRY_TOO_FAR"
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
    expires_at: datetime | None = None  # None: never (see parse_expiry)

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


def parse_expiry(expires_at: object, ttl_seconds: object, *, now: datetime) -> datetime | None:
    """A mint request's expiry: ``expiresAt`` (RFC 3339 text with a UTC offset) or
    ``ttlSeconds`` (whole seconds from ``now``), at most one of them; neither: never.
    Refused: both, a time without an offset (whose instant is unknown), text that is not
    a time, a wrong type, an instant not after ``now``, one further than
    :data:`MAX_KEY_LIFETIME`. The result is UTC, to the microsecond."""
    if expires_at is not None and ttl_seconds is not None:
        raise KeyRequestError(KeyReason.EXPIRY_INVALID, "give expiresAt or ttlSeconds, not both")
    if ttl_seconds is not None:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
            raise KeyRequestError(KeyReason.EXPIRY_INVALID, "ttlSeconds must be an integer")
        if ttl_seconds < 1:
            raise KeyRequestError(KeyReason.EXPIRY_IN_PAST, "ttlSeconds must be at least 1")
        if ttl_seconds > MAX_TTL_SECONDS:
            raise KeyRequestError(
                KeyReason.EXPIRY_TOO_FAR, f"ttlSeconds must be at most {MAX_TTL_SECONDS}"
            )
        return (now + timedelta(seconds=ttl_seconds)).astimezone(UTC)
    if expires_at is None:
        return None
    if not isinstance(expires_at, str):
        raise KeyRequestError(KeyReason.EXPIRY_INVALID, "expiresAt must be RFC 3339 text")
    match = _RFC3339.fullmatch(expires_at)
    if match is None:
        raise KeyRequestError(KeyReason.EXPIRY_INVALID, _EXPIRY_FORMAT)
    stamp, fraction, offset = match.groups()
    if offset is None:
        raise KeyRequestError(
            KeyReason.EXPIRY_INVALID,
            "expiresAt needs a UTC offset (Z or +hh:mm): a bare local time names no instant",
        )
    # Python keeps microseconds: finer digits (Go's RFC3339Nano) are cut, not refused.
    micros = f".{fraction[:6]}" if fraction else ""
    zone = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{stamp.upper()}{micros}{zone}").astimezone(UTC)
    except (ValueError, OverflowError):  # a month 13, a day 32, an offset of 25 hours
        raise KeyRequestError(KeyReason.EXPIRY_INVALID, _EXPIRY_FORMAT) from None
    if moment <= now:
        raise KeyRequestError(KeyReason.EXPIRY_IN_PAST, "expiresAt must be in the future")
    if moment - now > MAX_KEY_LIFETIME:
        raise KeyRequestError(
            KeyReason.EXPIRY_TOO_FAR,
            f"expiresAt must be within {MAX_KEY_LIFETIME.days} days; omit it for a key "
            "that never expires",
        )
    return moment


def is_expired(record: ApiKeyRecord, now: datetime) -> bool:
    return record.expires_at is not None and record.expires_at <= now


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
    if minter.expires_at is not None and (
        spec.expires_at is None or spec.expires_at > minter.expires_at
    ):
        raise KeyRequestError(
            KeyReason.EXPIRY_WIDENED,
            f"cannot outlive your own key (it expires at {minter.expires_at.isoformat()})",
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
        "expiresAt": _rfc3339(record.expires_at),
    }


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat()


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
        # An expired key no longer holds a place: it can never work again.
        now = datetime.now(UTC)
        held = sum(
            1
            for k in await store.list_api_keys(spec.tenant_id)
            if k.active and k.agent_id == spec.agent_id and not is_expired(k, now)
        )
        if held >= max_keys_per_agent:
            raise KeyRequestError(
                KeyReason.KEY_LIMIT_REACHED,
                f"agent {spec.agent_id} already holds {held} active API keys "
                f"(MAX_API_KEYS_PER_AGENT={max_keys_per_agent}); revoke one first",
            )
    plaintext = mint_api_key(spec.tenant_id)
    proposed = ApiKeyRecord(
        key_hash=hash_api_key(plaintext),
        tenant_id=spec.tenant_id,
        store_ids=spec.store_ids,
        can_read=spec.read or spec.write or spec.admin,
        can_write=spec.write or spec.admin,
        can_admin=spec.admin,
        agent_id=spec.agent_id,
        rate_limit=spec.rate_limit,
        parent_key_hash=minter.key_hash if minter is not None else None,
        expires_at=spec.expires_at,
    )
    details = {
        "permissions": permissions(proposed),
        "store_ids": [str(s) for s in spec.store_ids],
        "agent_id": str(spec.agent_id) if spec.agent_id else None,
        "bootstrap": spec.tenant_id == NIL and spec.admin,
        "parent": proposed.parent_key_hash[:16] if proposed.parent_key_hash else None,
        "expires_at": _rfc3339(proposed.expires_at),
    }
    # The audit row commits with the key, or neither does.
    record = await store.put_api_key(
        proposed, _key_audit("api_key.create", proposed, actor, actor_type, request_id, details)
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
    # Each key's deactivation and its audit row commit together.
    await store.deactivate_api_keys(
        record.key_hash, _key_audit("api_key.revoke", record, actor, actor_type, request_id)
    )
    for child in children:
        await store.deactivate_api_keys(
            child.key_hash,
            _key_audit(
                "api_key.revoke",
                child,
                actor,
                actor_type,
                request_id,
                {"with_parent": record.key_hash[:16]},
            ),
        )
    return Revocation(
        replace(record, active=False), tuple(replace(c, active=False) for c in children)
    )

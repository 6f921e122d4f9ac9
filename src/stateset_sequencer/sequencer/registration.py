"""Public agent self-registration (the reference's ``POST /v1/agents/register``,
REFERENCE_MAP §1.6): an anonymous caller names an agent and gets a new tenant, a new
agent id and an API key bound to both, never an admin key.

It is off unless ``PUBLIC_AGENT_REGISTRATION_ENABLED`` is true, and each client address
has a fixed-window budget (``PUBLIC_AGENT_REGISTRATION_RATE_LIMIT_PER_MINUTE``, 30 by
default). The checks run in the reference's order, so a request breaking several rules
gets the code the reference would give.

Unlike the reference, a refused request writes nothing to the store: the caller is
anonymous, so an audit row per refusal would let anyone fill the audit log (the refusals
are counted in ``sequencer_agent_registration_total`` and logged instead). A
registration writes the key's ``api_key.create`` row and an ``agent.register`` row.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Any

from ..store.ports import AccessStore
from ..store.records import AuditEntry
from ..ves.storable import make_storable, utf8_size
from .api_keys import KeySpec, create_key, permissions
from .auth import AuthContext, FixedWindowLimiter

MAX_NAME_BYTES = 128
MAX_DESCRIPTION_BYTES = 1024
MAX_STORE_IDS = 50
MAX_RATE_LIMIT = 10_000
DEFAULT_PER_MINUTE = 30
# What the audit row keeps of the caller's user agent.
AUDIT_TEXT_BYTES = 200
ACTOR = "self_service"
ACTOR_TYPE = "public"


class RegistrationReason(enum.StrEnum):
    """Why a registration is refused. The values are unique among the services' reasons;
    the code on the wire is the reference's (``INVALID_NAME``, ...), which
    ``api/http/errors.py`` maps each to, with INVALID_DESCRIPTION added for text no store
    can hold."""

    REGISTRATION_DISABLED = "REGISTRATION_DISABLED"
    RATE_LIMIT_EXCEEDED = "REGISTRATION_RATE_LIMIT_EXCEEDED"
    INVALID_NAME = "REGISTRATION_INVALID_NAME"
    NAME_TOO_LONG = "REGISTRATION_NAME_TOO_LONG"
    DESCRIPTION_TOO_LONG = "REGISTRATION_DESCRIPTION_TOO_LONG"
    INVALID_DESCRIPTION = "REGISTRATION_INVALID_DESCRIPTION"
    STORE_IDS_TOO_MANY = "REGISTRATION_STORE_IDS_TOO_MANY"
    STORE_IDS_DUPLICATE = "REGISTRATION_STORE_IDS_DUPLICATE"
    RATE_LIMIT_INVALID = "REGISTRATION_RATE_LIMIT_INVALID"
    TENANT_ID_NOT_ALLOWED = "REGISTRATION_TENANT_ID_NOT_ALLOWED"
    ADMIN_NOT_ALLOWED = "REGISTRATION_ADMIN_NOT_ALLOWED"


class RegistrationError(Exception):
    def __init__(
        self, reason: RegistrationReason, message: str, quota: Quota | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.quota = quota


@dataclass(frozen=True, slots=True)
class Quota:
    """A client's budget after this request: the ``ratelimit-*`` headers."""

    limit: int
    remaining: int
    reset_seconds: int


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    """The body as sent (camelCase on the wire). ``tenant_id`` is whatever was sent:
    any value but null is refused."""

    name: str
    description: str | None = None
    tenant_id: Any = None
    store_ids: tuple[uuid.UUID, ...] | None = None
    read_only: bool = False
    admin: bool = False
    rate_limit: int | None = None

    def check(self) -> str:
        """The reference's checks, in its order; returns the trimmed name."""
        name = self.name.strip()
        if not name:
            raise RegistrationError(RegistrationReason.INVALID_NAME, "name is required")
        size = _storable_size(name)
        if size is None:
            # A lone surrogate or NUL: text no store can hold (the audit row keeps it).
            raise RegistrationError(
                RegistrationReason.INVALID_NAME, "name must be UTF-8 text without NUL"
            )
        if size > MAX_NAME_BYTES:
            raise RegistrationError(
                RegistrationReason.NAME_TOO_LONG, f"name exceeds {MAX_NAME_BYTES} bytes"
            )
        if self.description is not None:
            size = _storable_size(self.description)
            if size is None:
                raise RegistrationError(
                    RegistrationReason.INVALID_DESCRIPTION,
                    "description must be UTF-8 text without NUL",
                )
            if size > MAX_DESCRIPTION_BYTES:
                raise RegistrationError(
                    RegistrationReason.DESCRIPTION_TOO_LONG,
                    f"description exceeds {MAX_DESCRIPTION_BYTES} bytes",
                )
        if self.store_ids is not None:
            if len(self.store_ids) > MAX_STORE_IDS:
                raise RegistrationError(
                    RegistrationReason.STORE_IDS_TOO_MANY, f"at most {MAX_STORE_IDS} store ids"
                )
            if len(set(self.store_ids)) != len(self.store_ids):
                raise RegistrationError(RegistrationReason.STORE_IDS_DUPLICATE, "store ids repeat")
        if self.rate_limit is not None and not 1 <= self.rate_limit <= MAX_RATE_LIMIT:
            raise RegistrationError(
                RegistrationReason.RATE_LIMIT_INVALID, f"rateLimit must be 1-{MAX_RATE_LIMIT}"
            )
        if self.tenant_id is not None:
            raise RegistrationError(
                RegistrationReason.TENANT_ID_NOT_ALLOWED,
                "tenantId is not allowed: registration always creates a new tenant",
            )
        if self.admin:
            raise RegistrationError(
                RegistrationReason.ADMIN_NOT_ALLOWED, "admin registration is not permitted"
            )
        return name


def _storable_size(text: str) -> int | None:
    """UTF-8 byte length, or None for text no store can hold."""
    return None if "\x00" in text else utf8_size(text)


@dataclass(frozen=True, slots=True)
class Registered:
    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    api_key: str
    key_hash_prefix: str
    permissions: str
    quota: Quota


class _Limiter(FixedWindowLimiter):
    """The shared fixed window, with the figures the ``ratelimit-*`` headers report."""

    __slots__ = ()

    def quota(self, key: str, budget: int) -> Quota:
        now = self.monotonic()
        window = self._windows.get(key)
        if window is None or now - window.started >= self.window_seconds:
            return Quota(budget, budget, int(self.window_seconds))
        left = window.started + self.window_seconds - now
        return Quota(budget, max(0, budget - window.count), max(1, int(left + 0.999)))


class Registrar:
    """The switch, the per-client budget, and the registration itself."""

    def __init__(
        self,
        *,
        enabled: bool,
        per_minute: int = DEFAULT_PER_MINUTE,
        window_seconds: float = 60.0,
        max_entries: int = 10_000,
    ) -> None:
        self.enabled = enabled
        self.per_minute = per_minute
        self._limiter = _Limiter(window_seconds, max_entries)

    def admit(self, client: str) -> Quota:
        """Refuse at once when registration is off or the client's budget is spent, so
        neither costs reading the body."""
        if not self.enabled:
            raise RegistrationError(
                RegistrationReason.REGISTRATION_DISABLED, "public registration is disabled"
            )
        key = f"public_register:{client or 'unknown'}"
        wait = self._limiter.hit(key, self.per_minute)
        quota = self._limiter.quota(key, self.per_minute)
        if wait is not None:
            raise RegistrationError(
                RegistrationReason.RATE_LIMIT_EXCEEDED,
                "rate limit exceeded",
                Quota(quota.limit, 0, wait),
            )
        return quota

    async def register(
        self,
        store: AccessStore,
        request: RegistrationRequest,
        quota: Quota,
        *,
        client: str | None,
        user_agent: str | None,
        request_id: str | None,
    ) -> Registered:
        name = request.check()
        tenant_id, agent_id = uuid.uuid4(), uuid.uuid4()
        spec = KeySpec(
            tenant_id=tenant_id,
            store_ids=request.store_ids or (),
            read=True,
            write=not request.read_only,
            admin=False,  # check() refused admin; a public caller never gets one
            agent_id=agent_id,
            rate_limit=request.rate_limit,
        )
        # The system mints within the one minting rule, as a minter bound to the new
        # tenant and agent that holds no admin: the key can never be wider than that.
        minter = AuthContext(
            tenant_id=tenant_id,
            can_read=True,
            can_write=True,
            agent_id=agent_id,
            kind="registration",
            subject=ACTOR,
        )
        plaintext, record = await create_key(
            store,
            spec,
            actor=ACTOR,
            actor_type=ACTOR_TYPE,
            request_id=request_id,
            minter=minter,
        )
        await store.append_audit(
            AuditEntry(
                action="agent.register",
                actor=ACTOR,
                actor_type=ACTOR_TYPE,
                tenant_id=tenant_id,
                resource_type="agent",
                resource_id=str(agent_id),
                request_id=request_id,
                ip_address=client or None,
                user_agent=make_storable(user_agent, max_bytes=AUDIT_TEXT_BYTES)
                if user_agent
                else None,
                details={
                    "name": name,
                    "description": request.description,
                    "store_ids": [str(s) for s in spec.store_ids],
                    "read_only": request.read_only,
                    "rate_limit": request.rate_limit,
                    "key_hash_prefix": record.key_hash[:16],
                },
            )
        )
        return Registered(
            agent_id=agent_id,
            tenant_id=tenant_id,
            api_key=plaintext,
            key_hash_prefix=record.key_hash[:16],
            permissions=permissions(record),
            quota=quota,
        )

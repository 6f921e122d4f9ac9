"""Who is calling and what they may do: API keys, JWTs, the bootstrap admin, scoping and
rate limits (REFERENCE_MAP §6). No HTTP here: the API layer turns :class:`AuthError`
into the reference's ``{"error", "code"}`` bodies.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import math
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import jwt

from ..store.errors import StoreError
from ..store.ports import AccessStore, RateBudgets
from ..store.records import ApiKeyRecord
from ..ves.codec import b64url_encode

NIL = uuid.UUID(int=0)
API_KEY_PREFIX = "ss_"
DEFAULT_JWT_ISSUER = "stateset-sequencer"
DEFAULT_JWT_AUDIENCE = "stateset-api"
JWT_LEEWAY_SECONDS = 60
METRICS_PERMISSION = "metrics"

logger = logging.getLogger(__name__)


class AuthReason(enum.StrEnum):
    """Why a credential or a permission is refused: the reference's snake_case codes.
    Every reason this module raises is here; ``api/http/errors.py`` maps each to its
    status and to the code each error body uses."""

    MISSING_AUTH = "missing_auth"
    INVALID_API_KEY = "invalid_api_key"
    INVALID_JWT = "invalid_jwt"
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a reason code, not a secret
    API_KEY_EXPIRED = "api_key_expired"  # ours: the key's expires_at has passed
    RATE_LIMITED = "rate_limited"
    INSUFFICIENT_PERMISSIONS = "insufficient_permissions"
    TENANT_ACCESS_DENIED = "tenant_access_denied"
    STORE_ACCESS_DENIED = "store_access_denied"
    OPERATOR_REQUIRED = "operator_required"
    TENANT_WIDE_REQUIRED = "tenant_wide_required"


class RateLimiterUnavailable(Exception):
    """The shared rate limiter could not answer (a database fault, or a wait past
    :data:`SHARED_WAIT_SECONDS`): a fault, not a refusal of the caller, answered like the
    auth layer's other backend faults (503 with ``Retry-After``)."""


class AuthError(Exception):
    """A refused credential or permission; ``retry_after`` (seconds) with
    :attr:`AuthReason.RATE_LIMITED`."""

    def __init__(self, reason: AuthReason, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class AuthContext:
    """An authenticated caller and its scope."""

    tenant_id: uuid.UUID
    store_ids: tuple[uuid.UUID, ...] = ()  # empty: every store of the tenant
    can_read: bool = False
    can_write: bool = False
    can_admin: bool = False
    agent_id: uuid.UUID | None = None
    rate_limit: int | None = None
    kind: str = "api_key"  # api_key | jwt | bootstrap | disabled
    subject: str = ""  # what logs and audit rows name: a key-hash prefix or a JWT id
    limiter_key: str = ""  # SHA-256 of the credential, for the per-credential limiter
    key_hash: str | None = None  # an API key's stored hash: the parent of keys it mints
    can_metrics: bool = False  # a JWT's ``metrics`` permission: process-wide /metrics only
    expires_at: datetime | None = None  # an API key's expiry: keys it mints cannot outlive it

    @property
    def is_bootstrap(self) -> bool:
        """The nil-tenant admin passes every tenant and store check, as in the reference."""
        return self.tenant_id == NIL and self.can_admin

    @property
    def is_tenant_wide_admin(self) -> bool:
        """An admin of its whole tenant (no store scope), or the global admin."""
        return self.can_admin and (self.is_bootstrap or not self.store_ids)

    @property
    def permissions(self) -> str:
        if self.can_admin:
            return "admin"
        return "read_write" if self.can_write else "read"


def mint_api_key(tenant_id: uuid.UUID) -> str:
    """``ss_`` + the tenant's first 8 hex digits + 24 random bytes in base64url (43 chars),
    the reference's format, so keys from either implementation look alike."""
    return API_KEY_PREFIX + str(tenant_id)[:8] + b64url_encode(secrets.token_bytes(24))


def hash_api_key(key: str) -> str:
    """What ``api_keys.key_hash`` stores: the lowercase hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def context_from_record(record: ApiKeyRecord, limiter_key: str = "") -> AuthContext:
    return AuthContext(
        tenant_id=record.tenant_id,
        store_ids=record.store_ids,
        can_read=record.can_read,
        can_write=record.can_write,
        can_admin=record.can_admin,
        agent_id=record.agent_id,
        rate_limit=record.rate_limit,
        kind="bootstrap" if record.tenant_id == NIL and record.can_admin else "api_key",
        subject=record.key_hash[:16],
        limiter_key=limiter_key or record.key_hash,
        key_hash=record.key_hash,
        expires_at=record.expires_at,
    )


def bootstrap_record(key: str) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_hash=hash_api_key(key),
        tenant_id=NIL,
        can_read=True,
        can_write=True,
        can_admin=True,
    )


DISABLED_CONTEXT = AuthContext(
    NIL, can_read=True, can_write=True, can_admin=True, kind="disabled", subject="auth-disabled"
)


@dataclass(frozen=True, slots=True)
class JwtSettings:
    secret: str
    issuer: str = DEFAULT_JWT_ISSUER
    audience: str = DEFAULT_JWT_AUDIENCE


def issue_jwt(
    settings: JwtSettings,
    *,
    tenant_id: uuid.UUID,
    perms: str = "read",
    stores: tuple[uuid.UUID, ...] = (),
    agent_id: uuid.UUID | None = None,
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> str:
    """A token in the reference's claim layout (for tests, tools and operators)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": str(tenant_id),
        "perms": perms,
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": str(uuid.uuid4()),
    }
    if stores:
        claims["stores"] = ",".join(str(s) for s in stores)
    if agent_id is not None:
        claims["agent"] = str(agent_id)
    return jwt.encode(claims, settings.secret, algorithm="HS256")


# What a refused token is told, in our words, by the library's exception class (a subclass
# before its base); the library's own text goes to the log only: it can quote the token.
_JWT_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidIssuedAtError, "Invalid token: malformed iat claim"),
    (jwt.ImmatureSignatureError, "Invalid token: not yet valid (nbf)"),
    (jwt.InvalidSignatureError, "Invalid token: bad signature"),
    (jwt.InvalidAlgorithmError, "Invalid token: algorithm not allowed (HS256 only)"),
    (jwt.InvalidIssuerError, "Invalid token: wrong issuer"),
    (jwt.InvalidAudienceError, "Invalid token: wrong audience"),
    (jwt.MissingRequiredClaimError, "Invalid token: a required claim is missing"),
    (jwt.DecodeError, "Invalid token: malformed token"),
)


def _jwt_refusal(exc: jwt.PyJWTError) -> AuthError:
    logger.info("jwt refused: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthError(AuthReason.TOKEN_EXPIRED, "Token has expired")
    for kind, message in _JWT_REFUSALS:
        if isinstance(exc, kind):
            return AuthError(AuthReason.INVALID_JWT, message)
    return AuthError(AuthReason.INVALID_JWT, "Invalid token")


def _jwt_context(token: str, settings: JwtSettings) -> AuthContext:
    try:
        claims = jwt.decode(
            token,
            settings.secret,
            algorithms=["HS256"],
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=JWT_LEEWAY_SECONDS,
            # iat is checked below, to say "issued in the future" rather than "not yet valid".
            options={"require": ["exp", "sub"], "verify_nbf": True, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise _jwt_refusal(exc) from None
    issued = claims.get("iat")
    if issued is not None:
        if isinstance(issued, bool) or not isinstance(issued, int | float):
            raise AuthError(AuthReason.INVALID_JWT, "Invalid token: malformed iat claim")
        if issued > time.time() + JWT_LEEWAY_SECONDS:
            raise AuthError(AuthReason.INVALID_JWT, "Invalid token: issued in the future (iat)")
    try:
        tenant = uuid.UUID(str(claims["sub"]))
        stores_claim = str(claims.get("stores") or "")
        stores = tuple(uuid.UUID(s.strip()) for s in stores_claim.split(",") if s.strip())
        agent = uuid.UUID(str(claims["agent"])) if claims.get("agent") else None
    except ValueError:
        raise AuthError(AuthReason.INVALID_JWT, "Invalid token: malformed claims") from None
    perms = {p.strip().lower() for p in str(claims.get("perms") or "").split(",")}
    return AuthContext(
        tenant_id=tenant,
        store_ids=stores,
        can_read="read" in perms or "admin" in perms,
        can_write="write" in perms or "admin" in perms,
        can_admin="admin" in perms,
        agent_id=agent,
        can_metrics=METRICS_PERMISSION in perms,
        kind="jwt",
        subject=f"jwt:{claims.get('jti') or tenant}",
        limiter_key=hashlib.sha256(f"bearer:{token}".encode()).hexdigest(),
    )


class Authenticator:
    """Resolves the credential in a request's headers to an :class:`AuthContext`.

    API keys are looked up in the store, with a short TTL cache so that a hot agent does
    not cost a query per request; revocations through this process drop the cache at
    once, and others are seen within ``cache_ttl_seconds``.
    """

    def __init__(
        self,
        store: AccessStore,
        *,
        jwt_settings: JwtSettings | None = None,
        cache_ttl_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._jwt = jwt_settings
        self._ttl = cache_ttl_seconds
        self._monotonic = monotonic
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}
        # Bumped by every forget: a lookup that began before one may hold the row as it
        # was (still active), and must not cache it for a whole TTL.
        self._generation = 0

    async def authenticate(self, headers: Mapping[str, str]) -> AuthContext:
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, rest = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and rest:
                if self._jwt is None:
                    raise AuthError(AuthReason.INVALID_JWT, "JWT authentication is not configured")
                return _jwt_context(rest.strip(), self._jwt)
            if scheme.lower() == "apikey" and rest:
                return await self._api_key(rest.strip())
            if not rest:
                return await self._api_key(scheme)
            raise AuthError(AuthReason.INVALID_API_KEY, "Unsupported authorization scheme")
        header_key = headers.get("x-api-key")
        if header_key is not None:
            return await self._api_key(header_key.strip())
        raise AuthError(AuthReason.MISSING_AUTH, "Authentication required")

    async def _api_key(self, key: str) -> AuthContext:
        if not key.startswith(API_KEY_PREFIX) or len(key) > 256:
            raise AuthError(AuthReason.INVALID_API_KEY, "Invalid API key")
        digest = hash_api_key(key)
        record = await self._lookup(digest)
        if record is None or not record.active:
            raise AuthError(AuthReason.INVALID_API_KEY, "Invalid API key")
        # Checked on every request, cached or not: a cached row never outlives its expiry.
        if record.expires_at is not None and record.expires_at <= self._clock():
            raise AuthError(AuthReason.API_KEY_EXPIRED, "API key has expired")
        return context_from_record(record, hashlib.sha256(f"api_key:{key}".encode()).hexdigest())

    async def _lookup(self, digest: str) -> ApiKeyRecord | None:
        now = self._monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        record = await self._store.get_api_key(digest)
        if generation != self._generation:
            return record
        if len(self._cache) > 10_000:  # bound memory under a flood of unknown keys
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, record)
        return record

    def forget(self, key_hash_prefix: str = "") -> None:
        """Drop cached keys whose hash starts with the prefix (all when empty)."""
        self._generation += 1
        for digest in [d for d in self._cache if d.startswith(key_hash_prefix)]:
            del self._cache[digest]


# --- scope checks (the reference's ensure_read / ensure_write / ensure_admin) --------------


def _ensure_scope(ctx: AuthContext, tenant_id: uuid.UUID, store_id: uuid.UUID | None) -> None:
    if ctx.is_bootstrap:
        return
    if ctx.tenant_id != tenant_id:
        raise AuthError(AuthReason.TENANT_ACCESS_DENIED, "Tenant access denied")
    if store_id is not None and store_id != NIL and ctx.store_ids and store_id not in ctx.store_ids:
        raise AuthError(AuthReason.STORE_ACCESS_DENIED, "Store access denied")


def ensure_read(ctx: AuthContext, tenant_id: uuid.UUID, store_id: uuid.UUID | None = None) -> None:
    if not (ctx.can_read or ctx.can_admin):
        raise AuthError(AuthReason.INSUFFICIENT_PERMISSIONS, "Read permission required")
    _ensure_scope(ctx, tenant_id, store_id)


def ensure_write(ctx: AuthContext, tenant_id: uuid.UUID, store_id: uuid.UUID | None = None) -> None:
    if not ctx.can_write:
        raise AuthError(AuthReason.INSUFFICIENT_PERMISSIONS, "Write permission required")
    _ensure_scope(ctx, tenant_id, store_id)


def ensure_admin(
    ctx: AuthContext, tenant_id: uuid.UUID | None = None, store_id: uuid.UUID | None = None
) -> None:
    """Admin permission; with a tenant, also admin *of that tenant* (the bootstrap admin
    is admin of every tenant)."""
    if not ctx.can_admin:
        raise AuthError(AuthReason.INSUFFICIENT_PERMISSIONS, "Admin permission required")
    if tenant_id is not None:
        _ensure_scope(ctx, tenant_id, store_id)


def ensure_operator(ctx: AuthContext) -> None:
    """Process-wide views (``/metrics``, ``/health/detailed``) aggregate every tenant:
    only the global admin (nil tenant) or a JWT with the ``metrics`` permission."""
    if ctx.is_bootstrap or ctx.can_metrics:
        return
    raise AuthError(
        AuthReason.OPERATOR_REQUIRED,
        "Operator credentials required (the global admin, or a JWT with 'metrics')",
    )


def ensure_tenant_wide(
    ctx: AuthContext,
    tenant_id: uuid.UUID,
    *,
    admin: bool,
    own_agent: uuid.UUID | None = None,
) -> None:
    """Read (or admin) over the whole tenant, for what has no store binding (agent signing
    keys): a key limited to some stores is not enough, except that an agent-bound key may
    read its own agent's (``own_agent``)."""
    if admin:
        ensure_admin(ctx, tenant_id)
    else:
        ensure_read(ctx, tenant_id)
    if ctx.is_bootstrap or not ctx.store_ids:
        return
    if not admin and own_agent is not None and ctx.agent_id == own_agent:
        return
    what = "admin" if admin else "read access"
    raise AuthError(
        AuthReason.TENANT_WIDE_REQUIRED,
        f"Tenant-wide {what} required: this key is limited to some stores, and agent "
        "signing keys belong to the whole tenant",
    )


# --- rate limiting ------------------------------------------------------------------------

SHARED_WAIT_SECONDS = 1.0  # the longest a request waits on the shared limiter


class WindowBudgets(Protocol):
    """A fixed-window limiter, in this process or shared (:class:`SharedWindowLimiter`)."""

    async def take(self, identity: str, budget: int) -> int | None:
        """Count one request against ``identity``'s budget; None if allowed, else the
        seconds until its window resets (for ``Retry-After``)."""
        ...


@dataclass(slots=True)
class _Window:
    started: float
    count: int = 0


@dataclass(slots=True)
class FixedWindowLimiter:
    """Fixed-window counters keyed by caller, bounded in size (as the reference's are:
    when full, expired windows go first, then the oldest tenth)."""

    window_seconds: float = 60.0
    max_entries: int = 10_000
    monotonic: Callable[[], float] = time.monotonic
    _windows: OrderedDict[str, _Window] = field(default_factory=OrderedDict)

    def hit(self, key: str, budget: int) -> int | None:
        """Count one request; returns None if allowed, else seconds until the window
        resets (for ``Retry-After``)."""
        now = self.monotonic()
        window = self._windows.get(key)
        if window is None or now - window.started >= self.window_seconds:
            if window is None and len(self._windows) >= self.max_entries:
                self._evict(now)
            window = _Window(now)
            self._windows[key] = window
        if window.count >= budget:
            return max(1, int(window.started + self.window_seconds - now + 0.999))
        window.count += 1
        return None

    async def take(self, identity: str, budget: int) -> int | None:
        return self.hit(identity, budget)

    def _evict(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now - w.started >= self.window_seconds]:
            del self._windows[key]
        if len(self._windows) >= self.max_entries:
            for _ in range(max(1, self.max_entries // 10)):
                self._windows.popitem(last=False)


def budget_key(identity: str) -> str:
    """What a shared budget is stored under: the SHA-256 hex of its identity, so that the
    table names no tenant and no credential digest in the clear."""
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class SharedWindowLimiter:
    """Fixed windows kept in the database (``RATE_LIMIT_BACKEND=postgres``), so that every
    server process counts against one budget. It fails closed: when the database cannot
    answer within :data:`SHARED_WAIT_SECONDS` (an error, a lock or pool wait), it raises
    :class:`RateLimiterUnavailable` and the request is refused rather than let through
    uncounted, since a limiter that opens whenever the database struggles would let the
    heaviest client through exactly then."""

    budgets: RateBudgets
    window_seconds: float = 60.0
    max_entries: int = 10_000
    wait_seconds: float = SHARED_WAIT_SECONDS

    async def take(self, identity: str, budget: int) -> int | None:
        # Whole seconds in the table; a fractional window is rounded up, never to zero.
        window = max(1, math.ceil(self.window_seconds))
        try:
            async with asyncio.timeout(self.wait_seconds):
                taken = await self.budgets.take_rate_budget(
                    budget_key(identity), budget, window, self.max_entries
                )
        except (StoreError, TimeoutError) as exc:
            logger.warning("shared rate limiter unavailable: %s: %s", type(exc).__name__, exc)
            raise RateLimiterUnavailable(type(exc).__name__) from None
        if taken.admitted:
            return None
        return max(1, math.ceil(taken.reset_in_seconds))


def tenant_budget_identity(ctx: AuthContext) -> str:
    """The tenant budget's identity (``RATE_LIMIT_PER_MINUTE``): one per tenant, and one
    for the global admin, which has no tenant of its own."""
    return "bootstrap" if ctx.is_bootstrap else f"tenant:{ctx.tenant_id}"


def credential_budget_identity(ctx: AuthContext) -> str:
    """A credential's own budget (an API key's ``rate_limit``): named by the SHA-256 of
    the credential (``limiter_key``), never by the credential itself."""
    return f"credential:{ctx.limiter_key or ctx.subject}"


@dataclass(slots=True)
class RateLimits:
    """The two limiters the reference applies after authentication: a global budget per
    tenant (``RATE_LIMIT_PER_MINUTE``) and each key's own ``rate_limit``. Each is this
    process's (:class:`FixedWindowLimiter`) or shared by every process
    (:class:`SharedWindowLimiter`), as ``RATE_LIMIT_BACKEND`` says."""

    per_tenant_per_minute: int | None = None
    tenant: WindowBudgets = field(default_factory=FixedWindowLimiter)
    credential: WindowBudgets = field(default_factory=FixedWindowLimiter)

    async def check(self, ctx: AuthContext) -> None:
        if self.per_tenant_per_minute is not None:
            wait = await self.tenant.take(tenant_budget_identity(ctx), self.per_tenant_per_minute)
            if wait is not None:
                raise AuthError(AuthReason.RATE_LIMITED, "Rate limit exceeded", retry_after=wait)
        if ctx.rate_limit is not None:
            wait = await self.credential.take(credential_budget_identity(ctx), ctx.rate_limit)
            if wait is not None:
                raise AuthError(AuthReason.RATE_LIMITED, "Rate limit exceeded", retry_after=wait)

"""API keys over HTTP: the admin routes (any tenant for the bootstrap admin, its own for
a tenant admin) and the reference's agent self-service routes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ...runtime import Services
from ...sequencer import api_keys
from ...sequencer.api_keys import KeyRequestError, KeySpec
from ...sequencer.auth import AuthContext, AuthError, ensure_admin
from .deps import Auth, ServicesDep, actor, admin_ip_guard, bind_stream
from .errors import AgentError, agent_error, responses

admin_router = APIRouter(
    prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(admin_ip_guard)]
)
agents_router = APIRouter(prefix="/api/v1/agents", tags=["agents"])


_EXPIRES_AT: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339 with a UTC offset; omitted: never expires (or the minting "
    "key's own expiry, when it has one)",
}
_TTL_SECONDS: dict[str, Any] = {
    "type": "integer",
    "minimum": 1,
    "maximum": api_keys.MAX_TTL_SECONDS,
    "description": "seconds from now; instead of expiresAt",
}


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenantId: uuid.UUID  # noqa: N815 - wire names in the reference's camelCase
    storeIds: list[uuid.UUID] = Field(default_factory=list, max_length=api_keys.MAX_STORES)  # noqa: N815
    read: StrictBool = True
    write: StrictBool = False
    admin: StrictBool = False
    agentId: uuid.UUID | None = None  # noqa: N815
    rateLimit: StrictInt | None = Field(default=None, ge=1, le=api_keys.MAX_RATE_LIMIT)  # noqa: N815
    # Typed loosely on purpose: the minting rule's parser refuses a wrong type with its
    # own reason (EXPIRY_INVALID), as it refuses a naive or past time.
    expiresAt: Any = Field(default=None, json_schema_extra=_EXPIRES_AT)  # noqa: N815
    ttlSeconds: Any = Field(default=None, json_schema_extra=_TTL_SECONDS)  # noqa: N815


class AgentKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    storeIds: list[uuid.UUID] | None = Field(default=None, max_length=api_keys.MAX_STORES)  # noqa: N815
    readOnly: StrictBool = False  # noqa: N815
    admin: StrictBool = False
    rateLimit: StrictInt | None = Field(default=None, ge=1, le=api_keys.MAX_RATE_LIMIT)  # noqa: N815
    expiresAt: Any = Field(default=None, json_schema_extra=_EXPIRES_AT)  # noqa: N815
    ttlSeconds: Any = Field(default=None, json_schema_extra=_TTL_SECONDS)  # noqa: N815


class KeyOut(BaseModel):
    keyHashPrefix: str  # noqa: N815
    tenantId: str  # noqa: N815
    storeIds: list[str]  # noqa: N815
    agentId: str | None  # noqa: N815
    active: bool
    permissions: str
    read: bool
    write: bool
    admin: bool
    rateLimit: int | None  # noqa: N815
    createdAt: str | None  # noqa: N815
    parentKeyHashPrefix: str | None  # noqa: N815 - the key that minted it (revoked with it)
    expiresAt: str | None  # noqa: N815 - None: never expires


class CreatedKey(BaseModel):
    success: bool
    apiKey: str  # noqa: N815
    keyHashPrefix: str  # noqa: N815
    permissions: str
    key: KeyOut
    message: str


class KeyList(BaseModel):
    keys: list[KeyOut]
    count: int


class Revoked(BaseModel):
    success: bool
    keyHashPrefix: str  # noqa: N815
    revokedChildren: list[str]  # noqa: N815 - keys minted from it, revoked with it
    message: str


class AgentInfo(BaseModel):
    agentId: str  # noqa: N815
    tenantId: str  # noqa: N815
    active: bool
    permissions: str
    storeIds: list[str]  # noqa: N815
    rateLimit: int | None  # noqa: N815


def _forbidden(exc: AuthError) -> AgentError:
    return agent_error(exc.reason, exc.message)


def _agent_error(exc: KeyRequestError) -> AgentError:
    return agent_error(exc.reason, exc.message)


def _expiry(ctx: AuthContext, expires_at: object, ttl_seconds: object) -> datetime | None:
    """The requested expiry; omitted, the minter's own (as an omitted rateLimit is), so
    that an omission never makes a key outlive the key that minted it."""
    try:
        chosen = api_keys.parse_expiry(expires_at, ttl_seconds, now=datetime.now(UTC))
    except KeyRequestError as exc:
        raise _agent_error(exc) from None
    return chosen if chosen is not None else ctx.expires_at


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _created(plaintext: str, record: Any) -> dict[str, Any]:
    return {
        "success": True,
        "apiKey": plaintext,
        "keyHashPrefix": record.key_hash[:16],
        "permissions": api_keys.permissions(record),
        "key": api_keys.describe(record),
        "message": "Store this key now: it is not shown again",
    }


async def _mint(
    request: Request, services: Services, ctx: AuthContext, spec: KeySpec
) -> dict[str, Any]:
    """Every HTTP mint goes through the one minting rule, with the caller as minter."""
    who, kind = actor(ctx)
    try:
        plaintext, record = await api_keys.create_key(
            services.store,
            spec,
            actor=who,
            actor_type=kind,
            request_id=_request_id(request),
            minter=ctx,
            max_keys_per_agent=services.settings.MAX_API_KEYS_PER_AGENT,
        )
    except KeyRequestError as exc:
        raise _agent_error(exc) from None
    return _created(plaintext, record)


async def _revoke(
    request: Request,
    services: Services,
    ctx: AuthContext,
    prefix: str,
    agent_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Revoke one key the caller can see: its tenant's (every tenant's for the bootstrap
    admin), within its stores, and the agent's own when ``agent_id`` is given."""
    who, kind = actor(ctx)
    try:
        revocation = await api_keys.revoke_tree(
            services.store,
            prefix,
            tenant_id=None if ctx.is_bootstrap else ctx.tenant_id,
            within_stores=() if ctx.is_bootstrap else ctx.store_ids,
            agent_id=agent_id,
            actor=who,
            actor_type=kind,
            request_id=_request_id(request),
            keep_last_admin=True,
        )
    except KeyRequestError as exc:
        raise _agent_error(exc) from None
    record, children = revocation.record, revocation.children
    for key in (record, *children):
        services.authenticator.forget(key.key_hash)
    message = "API key revoked"
    if children:
        message += f", with {len(children)} key(s) minted from it"
    return {
        "success": True,
        "keyHashPrefix": record.key_hash[:16],
        "revokedChildren": [c.key_hash[:16] for c in children],
        "message": message,
    }


# --- admin --------------------------------------------------------------------------------


@admin_router.post("/api-keys", response_model=CreatedKey, responses=responses())
async def admin_create_key(
    request: Request, body: CreateKeyRequest, services: ServicesDep, ctx: Auth
) -> dict[str, Any]:
    """Empty ``storeIds`` means every store; an omitted ``rateLimit`` inherits the
    caller's. The minting rule refuses anything wider than the caller; another tenant is
    refused first, as FORBIDDEN like every cross-tenant request."""
    try:
        ensure_admin(ctx, body.tenantId)
    except AuthError as exc:
        raise _forbidden(exc) from None
    bind_stream(request, body.tenantId, None)
    spec = KeySpec(
        tenant_id=body.tenantId,
        store_ids=tuple(body.storeIds),
        read=body.read,
        write=body.write,
        admin=body.admin,
        agent_id=body.agentId,
        rate_limit=body.rateLimit if body.rateLimit is not None else ctx.rate_limit,
        expires_at=_expiry(ctx, body.expiresAt, body.ttlSeconds),
    )
    return await _mint(request, services, ctx, spec)


@admin_router.get("/api-keys", response_model=KeyList, responses=responses())
async def admin_list_keys(
    services: ServicesDep,
    ctx: Auth,
    tenant_id: Annotated[uuid.UUID | None, Query()] = None,
) -> dict[str, Any]:
    """One tenant's keys; every tenant's for the bootstrap admin when no tenant is named."""
    scope = tenant_id if tenant_id is not None or not ctx.is_bootstrap else None
    try:
        ensure_admin(ctx, scope if scope is not None else ctx.tenant_id)
    except AuthError as exc:
        raise _forbidden(exc) from None
    if scope is None and not ctx.is_bootstrap:
        scope = ctx.tenant_id
    records = await services.store.list_api_keys(scope)
    if not ctx.is_bootstrap:
        records = [r for r in records if api_keys.within_scope(r, ctx.store_ids)]
    return {"keys": [api_keys.describe(r) for r in records], "count": len(records)}


@admin_router.delete(
    "/api-keys/{key_hash_prefix}", response_model=Revoked, responses=responses(404, 409)
)
async def admin_revoke_key(
    request: Request, key_hash_prefix: str, services: ServicesDep, ctx: Auth
) -> dict[str, Any]:
    try:
        ensure_admin(ctx)
    except AuthError as exc:
        raise _forbidden(exc) from None
    return await _revoke(request, services, ctx, key_hash_prefix)


# --- agent self-service -------------------------------------------------------------------


def _self_or_admin(ctx: AuthContext, agent_id: uuid.UUID) -> None:
    if ctx.agent_id == agent_id or ctx.can_admin:
        return
    raise AgentError(403, "FORBIDDEN", "Only the agent itself or an admin may do this")


async def _agent_keys(services: ServicesDep, ctx: AuthContext, agent_id: uuid.UUID) -> list[Any]:
    scope = None if ctx.is_bootstrap else ctx.tenant_id
    return [k for k in await services.store.list_api_keys(scope) if k.agent_id == agent_id]


@agents_router.get("/{agent_id}", response_model=AgentInfo, responses=responses(404))
async def get_agent(agent_id: uuid.UUID, services: ServicesDep, ctx: Auth) -> dict[str, Any]:
    _self_or_admin(ctx, agent_id)
    keys = await _agent_keys(services, ctx, agent_id)
    if not keys:
        raise AgentError(404, "AGENT_NOT_FOUND", "Agent not found")
    first = keys[0]
    return {
        "agentId": str(agent_id),
        "tenantId": str(first.tenant_id),
        "active": any(k.active for k in keys),
        "permissions": api_keys.permissions(first),
        "storeIds": [str(s) for s in first.store_ids],
        "rateLimit": first.rate_limit,
    }


@agents_router.post("/{agent_id}/api-keys", response_model=CreatedKey, responses=responses(404))
async def agent_create_key(
    request: Request,
    agent_id: uuid.UUID,
    body: AgentKeyRequest,
    services: ServicesDep,
    ctx: Auth,
) -> dict[str, Any]:
    """A key for the agent, never wider than the caller (the minting rule): omitted
    ``storeIds`` and ``rateLimit`` inherit the caller's."""
    _self_or_admin(ctx, agent_id)
    if ctx.is_bootstrap:
        existing = await _agent_keys(services, ctx, agent_id)
        if not existing:
            raise AgentError(404, "AGENT_NOT_FOUND", "Agent not found")
        tenant = existing[0].tenant_id
    else:
        tenant = ctx.tenant_id
    stores = tuple(body.storeIds) if body.storeIds is not None else ctx.store_ids
    write = not body.readOnly
    spec = KeySpec(
        tenant_id=tenant,
        store_ids=stores,
        read=True,
        write=write,
        admin=body.admin,
        agent_id=agent_id,
        rate_limit=body.rateLimit if body.rateLimit is not None else ctx.rate_limit,
        expires_at=_expiry(ctx, body.expiresAt, body.ttlSeconds),
    )
    return await _mint(request, services, ctx, spec)


@agents_router.get("/{agent_id}/api-keys", response_model=KeyList, responses=responses())
async def agent_list_keys(agent_id: uuid.UUID, services: ServicesDep, ctx: Auth) -> dict[str, Any]:
    _self_or_admin(ctx, agent_id)
    keys = await _agent_keys(services, ctx, agent_id)
    return {"keys": [api_keys.describe(k) for k in keys], "count": len(keys)}


@agents_router.delete(
    "/{agent_id}/api-keys/{key_prefix}", response_model=Revoked, responses=responses(404, 409)
)
async def agent_revoke_key(
    request: Request, agent_id: uuid.UUID, key_prefix: str, services: ServicesDep, ctx: Auth
) -> dict[str, Any]:
    _self_or_admin(ctx, agent_id)
    return await _revoke(request, services, ctx, key_prefix, agent_id=agent_id)

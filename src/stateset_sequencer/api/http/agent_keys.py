"""Agent signing keys: register (the reference's route), list and revoke (ours; the
reference offers those only over gRPC). Errors use the agent handlers' body,
``{"success": false, "error", "code"}``.

An agent signing key belongs to its tenant, not to a store (``AgentKey`` has no store):
registering and revoking need a tenant-wide admin, listing tenant-wide read (or an
agent-bound key listing its own agent's keys). A store-scoped key gets 403
``TENANT_WIDE_REQUIRED``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ...sequencer.auth import AuthContext, AuthError, ensure_tenant_wide
from ...store.errors import IntegrityError
from ...store.records import AgentKey, AuditEntry
from ...ves.codec import format_rfc3339, parse_rfc3339
from ...ves.errors import VesError
from ...ves.signing import parse_public_key
from .deps import Auth, ServicesDep, actor, bind_stream
from .errors import AgentError, agent_error, responses

router = APIRouter(prefix="/api/v1/agents", tags=["agent keys"])

U32_MAX = 2**32 - 1
ED25519_ALGORITHMS = {0, 1}  # the legacy profile's Ed25519 codes; PQC keys need PQC crypto


class RegisterKeyRequest(BaseModel):
    # Not strict as a whole: FastAPI validates decoded JSON in Python mode, where strict
    # would refuse a UUID string. Integers are strict one by one (no ``false`` for 0).
    model_config = ConfigDict(extra="ignore")
    tenantId: uuid.UUID  # noqa: N815 - the reference's wire names
    agentId: uuid.UUID  # noqa: N815
    keyId: StrictInt = Field(ge=0, le=U32_MAX)  # noqa: N815
    publicKey: str = Field(max_length=200)  # noqa: N815
    validFrom: str | None = Field(default=None, max_length=64)  # noqa: N815
    validTo: str | None = Field(default=None, max_length=64)  # noqa: N815
    keyAlgorithm: StrictInt | None = Field(default=None, ge=0, le=255)  # noqa: N815


class RegisterKeyResponse(BaseModel):
    success: bool
    tenantId: str  # noqa: N815
    agentId: str  # noqa: N815
    keyId: int  # noqa: N815
    keyAlgorithm: int  # noqa: N815
    message: str


class AgentKeyOut(BaseModel):
    tenantId: str  # noqa: N815
    agentId: str  # noqa: N815
    keyId: int  # noqa: N815
    publicKey: str  # noqa: N815
    keyAlgorithm: int  # noqa: N815
    status: str
    validFrom: str | None  # noqa: N815
    validTo: str | None  # noqa: N815
    revokedAt: str | None  # noqa: N815
    createdAt: str | None  # noqa: N815


class AgentKeyList(BaseModel):
    keys: list[AgentKeyOut]
    count: int


class RevokeKeyResponse(BaseModel):
    success: bool
    key: AgentKeyOut
    message: str


def _time(value: datetime | None) -> str | None:
    return format_rfc3339(value) if value is not None else None


def key_out(key: AgentKey) -> dict[str, Any]:
    return {
        "tenantId": str(key.tenant_id),
        "agentId": str(key.agent_id),
        "keyId": key.key_id,
        "publicKey": key.public_key.hex(),
        "keyAlgorithm": key.key_algorithm,
        "status": key.status,
        "validFrom": _time(key.valid_from),
        "validTo": _time(key.valid_to),
        "revokedAt": _time(key.revoked_at),
        "createdAt": _time(key.created_at),
    }


def _tenant_wide(
    ctx: AuthContext, tenant_id: uuid.UUID, *, admin: bool, own_agent: uuid.UUID | None = None
) -> None:
    try:
        ensure_tenant_wide(ctx, tenant_id, admin=admin, own_agent=own_agent)
    except AuthError as exc:
        raise agent_error(exc.reason, exc.message) from None


def key_audit(
    request_id: str | None,
    ctx: AuthContext,
    action: str,
    key: tuple[uuid.UUID, uuid.UUID, int],
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """The audit row of a change to one agent key, ``key`` as (tenant, agent, key id),
    whichever API made it."""
    tenant_id, agent_id, key_id = key
    who, kind = actor(ctx)
    return AuditEntry(
        action=action,
        actor=who,
        actor_type=kind,
        tenant_id=tenant_id,
        resource_type="agent_key",
        resource_id=f"{agent_id}/{key_id}",
        request_id=request_id,
        details={} if details is None else details,
    )


def _parse_time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except VesError as exc:
        raise AgentError(400, "INVALID_TIMESTAMP", f"{name}: {exc}") from None


@router.post(
    "/keys",
    response_model=RegisterKeyResponse,
    responses=responses(409, 500),
    summary="Register an agent signing key",
)
async def register_agent_key(
    request: Request, body: RegisterKeyRequest, services: ServicesDep, ctx: Auth
) -> dict[str, Any]:
    _tenant_wide(ctx, body.tenantId, admin=True)
    bind_stream(request, body.tenantId, None)
    algorithm = 1 if body.keyAlgorithm is None else body.keyAlgorithm
    if algorithm not in ED25519_ALGORITHMS:
        raise AgentError(
            400, "ALGORITHM_NOT_ALLOWED", f"key algorithm {algorithm} is not allowed by profile"
        )
    try:
        public_key = parse_public_key(body.publicKey)
    except VesError as exc:
        raise AgentError(400, "INVALID_PUBLIC_KEY", f"publicKey: {exc}") from None
    valid_from = _parse_time("validFrom", body.validFrom)
    valid_to = _parse_time("validTo", body.validTo)
    if valid_from is not None and valid_to is not None and valid_from > valid_to:
        raise AgentError(400, "INVALID_VALIDITY", "validFrom must not be after validTo")
    key = AgentKey(
        tenant_id=body.tenantId,
        agent_id=body.agentId,
        key_id=body.keyId,
        public_key=public_key,
        valid_from=valid_from,
        valid_to=valid_to,
        key_algorithm=algorithm,
    )
    audit = key_audit(
        getattr(request.state, "request_id", None),
        ctx,
        "agent_key.register",
        (body.tenantId, body.agentId, body.keyId),
        {"public_key": public_key.hex(), "key_algorithm": algorithm},
    )
    try:
        # The audit row commits with the key, or neither does.
        await services.store.put_agent_key(key, audit)
    except IntegrityError:
        # The reference answers 500 here; a conflict is what it is. The very same key
        # again is a success, so that a setup script can be re-run.
        if await _same_key_registered(services, key):
            return _registered(body, algorithm, "Agent key already registered")
        raise AgentError(
            409, "KEY_EXISTS", f"key {body.keyId} of agent {body.agentId} is already registered"
        ) from None
    services.sequencer.keys.invalidate(body.tenantId, body.agentId, body.keyId)
    return _registered(body, algorithm, "Agent key registered")


def _registered(body: RegisterKeyRequest, algorithm: int, message: str) -> dict[str, Any]:
    return {
        "success": True,
        "tenantId": str(body.tenantId),
        "agentId": str(body.agentId),
        "keyId": body.keyId,
        "keyAlgorithm": algorithm,
        "message": message,
    }


async def _same_key_registered(services: ServicesDep, key: AgentKey) -> bool:
    """Whether the key id is taken by this very key, still active: same public key,
    algorithm and validity. A revoked key is not brought back by registering it again."""
    for held in await services.store.list_agent_keys(key.tenant_id, key.agent_id):
        if held.key_id == key.key_id:
            return (
                held.status == "active"
                and held.public_key == key.public_key
                and held.key_algorithm == key.key_algorithm
                and held.valid_from == key.valid_from
                and held.valid_to == key.valid_to
            )
    return False


@router.get("/keys", response_model=AgentKeyList, responses=responses())
async def list_agent_keys(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    tenant_id: Annotated[uuid.UUID, Query()],
    agent_id: Annotated[uuid.UUID | None, Query()] = None,
) -> dict[str, Any]:
    _tenant_wide(ctx, tenant_id, admin=False, own_agent=agent_id)
    bind_stream(request, tenant_id, None)
    keys = await services.store.list_agent_keys(tenant_id, agent_id)
    return {"keys": [key_out(k) for k in keys], "count": len(keys)}


@router.delete(
    "/keys/{tenant_id}/{agent_id}/{key_id}",
    response_model=RevokeKeyResponse,
    responses=responses(404),
)
async def revoke_agent_key(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    tenant_id: uuid.UUID,
    agent_id: uuid.UUID,
    key_id: Annotated[int, Path(ge=0, le=U32_MAX)],
) -> dict[str, Any]:
    """Revoke at server time: events signed with the key and sequenced later are
    rejected; those already sequenced stay valid (they were valid when sequenced)."""
    _tenant_wide(ctx, tenant_id, admin=True)
    bind_stream(request, tenant_id, None)
    revoked = await services.store.revoke_agent_key(
        tenant_id,
        agent_id,
        key_id,
        services.sequencer.clock(),
        key_audit(
            getattr(request.state, "request_id", None),
            ctx,
            "agent_key.revoke",
            (tenant_id, agent_id, key_id),
        ),
    )
    if revoked is None:
        raise AgentError(404, "KEY_NOT_FOUND", "Agent key not found")
    services.sequencer.keys.invalidate(tenant_id, agent_id, key_id)
    return {"success": True, "key": key_out(revoked), "message": "Agent key revoked"}

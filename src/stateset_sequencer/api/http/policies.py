"""Agent event policies over HTTP: ``GET``/``PUT /api/v1/agents/{agent_id}/policy``
(REFERENCE_DELTA §3.4), camelCase as in the reference. The rules live in
``sequencer.policies``; this module parses, authorises and shapes.

Both routes need an admin of the named tenant (or the global admin), as the reference's
``ensure_admin``. Setting a policy also needs a tenant-wide admin: a policy binds the
agent in every store of the tenant, so a key limited to some stores may read it but not
change it. Errors use the agent handlers' body, ``{"success": false, "error", "code"}``,
with the reference's messages.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ...sequencer import policies
from ...sequencer.auth import AuthContext, AuthError, AuthReason, ensure_admin
from ...sequencer.policies import PolicyInputError, PolicyReason
from ...store.records import AgentPolicy
from ...ves.codec import format_rfc3339
from .deps import Auth, ServicesDep, actor, bind_stream
from .errors import AgentError, agent_error, responses

router = APIRouter(prefix="/api/v1/agents", tags=["agent policies"])


def _rules_schema(max_bytes: int) -> dict[str, Any]:
    return {
        "maxItems": policies.MAX_RULES,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": max_bytes,
            "pattern": r"^[^*]*\*?$",
        },
    }


class PolicyRequest(BaseModel):
    # Unknown members are ignored, as the reference's serde does: the SDK sends a policy
    # it read back (agentId and all) with tenantId merged in.
    model_config = ConfigDict(extra="ignore")
    tenantId: uuid.UUID  # noqa: N815 - the reference's wire names
    # The bounds are stated in the document but checked by the rule (sequencer/policies.py),
    # so that each is answered with the reference's code and message, not a generic 422;
    # the route's body limit bounds the request. A rule's length is bounded in UTF-8
    # bytes, which the characters of maxLength bound from above.
    allowedEventTypes: list[StrictStr] = Field(  # noqa: N815
        default_factory=list,
        json_schema_extra=_rules_schema(policies.MAX_EVENT_RULE_BYTES),
    )
    allowedEntityTypes: list[StrictStr] = Field(  # noqa: N815
        default_factory=list,
        json_schema_extra=_rules_schema(policies.MAX_ENTITY_RULE_BYTES),
    )
    requireBaseVersion: StrictBool = True  # noqa: N815
    maxPayloadBytes: StrictInt | None = Field(  # noqa: N815
        default=None,
        json_schema_extra={"minimum": 1, "maximum": policies.MAX_POLICY_PAYLOAD_BYTES},
    )
    enabled: StrictBool = True


class PolicyOut(BaseModel):
    tenantId: str  # noqa: N815
    agentId: str  # noqa: N815
    allowedEventTypes: list[str]  # noqa: N815
    allowedEntityTypes: list[str]  # noqa: N815
    requireBaseVersion: bool  # noqa: N815
    maxPayloadBytes: int | None  # noqa: N815
    enabled: bool
    # Ours, beside the reference's fields.
    createdAt: str | None  # noqa: N815
    updatedAt: str | None  # noqa: N815


def policy_out(policy: AgentPolicy) -> dict[str, Any]:
    return {
        "tenantId": str(policy.tenant_id),
        "agentId": str(policy.agent_id),
        "allowedEventTypes": list(policy.allowed_event_types),
        "allowedEntityTypes": list(policy.allowed_entity_types),
        "requireBaseVersion": policy.require_base_version,
        "maxPayloadBytes": policy.max_payload_bytes,
        "enabled": policy.enabled,
        "createdAt": None if policy.created_at is None else format_rfc3339(policy.created_at),
        "updatedAt": None if policy.updated_at is None else format_rfc3339(policy.updated_at),
    }


def _refused(exc: AuthError | PolicyInputError) -> AgentError:
    return agent_error(exc.reason, exc.message)


def _ensure_admin(ctx: AuthContext, tenant_id: uuid.UUID, *, tenant_wide: bool) -> None:
    try:
        ensure_admin(ctx, tenant_id)
        if tenant_wide and not ctx.is_tenant_wide_admin:
            raise AuthError(
                AuthReason.TENANT_WIDE_REQUIRED,
                "Tenant-wide admin required: this key is limited to some stores, and an "
                "agent's policy applies in every store of the tenant",
            )
    except AuthError as exc:
        raise _refused(exc) from None


@router.get("/{agent_id}/policy", response_model=PolicyOut, responses=responses(404))
async def get_policy(
    request: Request,
    agent_id: uuid.UUID,
    services: ServicesDep,
    ctx: Auth,
    tenant_id: Annotated[uuid.UUID, Query()],
) -> dict[str, Any]:
    _ensure_admin(ctx, tenant_id, tenant_wide=False)
    bind_stream(request, tenant_id, None)
    policy = await services.store.get_policy(tenant_id, agent_id)
    if policy is None:
        raise agent_error(PolicyReason.POLICY_NOT_FOUND, policies.POLICY_NOT_FOUND)
    return policy_out(policy)


@router.put("/{agent_id}/policy", response_model=PolicyOut, responses=responses(404))
async def put_policy(
    request: Request,
    agent_id: uuid.UUID,
    body: PolicyRequest,
    services: ServicesDep,
    ctx: Auth,
) -> dict[str, Any]:
    """Create or replace the agent's policy (every field; omitted ones take their
    defaults). Refused with 404 when the tenant has no signing key for the agent."""
    _ensure_admin(ctx, body.tenantId, tenant_wide=True)
    bind_stream(request, body.tenantId, None)
    who, kind = actor(ctx)
    try:
        policy = policies.validated_policy(
            body.tenantId,
            agent_id,
            allowed_event_types=body.allowedEventTypes,
            allowed_entity_types=body.allowedEntityTypes,
            require_base_version=body.requireBaseVersion,
            max_payload_bytes=body.maxPayloadBytes,
            enabled=body.enabled,
        )
        stored = await policies.put_policy(
            services.store,
            services.store,
            policy,
            actor=who,
            actor_type=kind,
            request_id=getattr(request.state, "request_id", None),
        )
    except PolicyInputError as exc:
        raise _refused(exc) from None
    # The next ingest through this process sees the change at once, feed or no feed.
    services.sequencer.policies.invalidate(stored.tenant_id, stored.agent_id)
    return policy_out(stored)

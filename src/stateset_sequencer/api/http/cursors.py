"""Agent cursors, ``/api/v1/ves/cursors/{agent_id}`` (REFERENCE_DELTA §3.3): read and raise
how far an agent has processed a stream. camelCase as in the reference; the rules are in
``sequencer/cursors.py``."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ...sequencer import cursors as rules
from ...sequencer.auth import AuthError
from ...store.records import StreamKey
from ...ves.codec import format_rfc3339
from .deps import Auth, ServicesDep, bind_stream
from .errors import ApiError, api_error, responses

router = APIRouter(prefix="/api/v1/ves/cursors", tags=["cursors"])

TenantQ = Annotated[uuid.UUID, Query(description="Tenant UUID")]
StoreQ = Annotated[uuid.UUID, Query(description="Store UUID")]


class Acknowledge(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tenantId: uuid.UUID  # noqa: N815 - the reference's wire names
    storeId: uuid.UUID  # noqa: N815
    # The reference's u64: strict, so that true, 2.0 and "2" are refused as wrong types
    # (422, as its JSON extractor answers) rather than read as numbers.
    sequenceNumber: StrictInt = Field(ge=0, le=rules.MAX_WIRE_SEQUENCE)  # noqa: N815


class CursorOut(BaseModel):
    tenantId: str  # noqa: N815
    storeId: str  # noqa: N815
    agentId: str  # noqa: N815
    acknowledgedSequence: int  # noqa: N815 - 0 when the agent never acknowledged
    headSequence: int  # noqa: N815
    lag: int  # headSequence - acknowledgedSequence, never below 0
    updatedAt: str | None  # noqa: N815 - its last acknowledgement; null when none


def cursor_out(view: rules.CursorView) -> dict[str, Any]:
    return {
        "tenantId": str(view.stream.tenant_id),
        "storeId": str(view.stream.store_id),
        "agentId": str(view.agent_id),
        "acknowledgedSequence": view.acknowledged_sequence,
        "headSequence": view.head_sequence,
        "lag": view.lag,
        "updatedAt": None if view.updated_at is None else format_rfc3339(view.updated_at),
    }


def _refusal(exc: AuthError | rules.CursorError) -> ApiError:
    return api_error(exc.reason, exc.message)


@router.get("/{agent_id}", response_model=CursorOut, responses=responses())
async def get_cursor(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    agent_id: uuid.UUID,
    tenant_id: TenantQ,
    store_id: StoreQ,
) -> dict[str, Any]:
    bind_stream(request, tenant_id, store_id)
    try:
        view = await rules.read_cursor(
            services.store, ctx, StreamKey(tenant_id, store_id), agent_id
        )
    except (AuthError, rules.CursorError) as exc:
        raise _refusal(exc) from None
    return cursor_out(view)


@router.put("/{agent_id}", response_model=CursorOut, responses=responses())
async def acknowledge(
    request: Request, services: ServicesDep, ctx: Auth, agent_id: uuid.UUID, body: Acknowledge
) -> dict[str, Any]:
    """Raise the cursor to ``sequenceNumber``; a lower or equal one leaves it where it is
    and answers 200 with the stored value. Past the stream head: 400, nothing written."""
    bind_stream(request, body.tenantId, body.storeId)
    try:
        view = await rules.acknowledge(
            services.store,
            ctx,
            StreamKey(body.tenantId, body.storeId),
            agent_id,
            body.sequenceNumber,
        )
    except (AuthError, rules.CursorError) as exc:
        raise _refusal(exc) from None
    return cursor_out(view)

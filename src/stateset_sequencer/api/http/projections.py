"""Reading a projection: ``GET /api/v1/projections/{entity_type}/{entity_id}``.

The document the projection worker folded for one entity (``sequencer/projections.py``),
with the number of the entity's events folded into it. A document trails the log by
the worker's poll interval; an entity with events not yet folded answers its last
folded document, or 404 before the first.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from ...sequencer.projections import (
    SOURCE_VES,
    SOURCES,
    ProjectionError,
    ProjectionReason,
    check_source,
    ensure_kept,
)
from ...ves.codec import format_rfc3339
from .deps import Auth, ServicesDep
from .errors import api_error, responses
from .events import EntityId, EntityType, StoreQ, TenantQ, read_stream, storable_entity

router = APIRouter(prefix="/api/v1", tags=["projections"])

SourceQ = Annotated[
    str,
    Query(
        description="`ves` (the default): documents folded from the VES log; `legacy` is "
        "accepted as the reference does, but this service keeps no legacy projections (404)",
        # Checked by the handler, to answer the reference's own message; stated here so
        # that what the document calls valid is what the route accepts.
        json_schema_extra={"enum": list(SOURCES)},
    ),
]


class ProjectionResponse(BaseModel):
    tenant_id: str
    store_id: str
    entity_type: str
    entity_id: str
    source: str
    version: int
    updated_at: str
    document: Any


@router.get(
    "/projections/{entity_type}/{entity_id:anytext}",
    response_model=ProjectionResponse,
    responses=responses(404),
)
async def get_projection(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    entity_type: EntityType,
    entity_id: EntityId,
    tenant_id: TenantQ,
    store_id: StoreQ,
    source: SourceQ = SOURCE_VES,
) -> dict[str, Any]:
    """One entity's projected document and version (its events folded so far).
    ``entity_id`` may hold any characters, slashes included (send them as ``%2F``)."""
    try:
        check_source(source)
        storable = storable_entity(entity_type, entity_id)
        stream = read_stream(ctx, request, tenant_id, store_id)
        ensure_kept(source)
    except ProjectionError as exc:
        raise api_error(exc.reason, exc.message) from None
    found = (
        await services.store.get_projection(stream, entity_type, entity_id) if storable else None
    )
    if found is None:
        raise api_error(ProjectionReason.NOT_FOUND, "Projection not found")
    return {
        "tenant_id": str(found.tenant_id),
        "store_id": str(found.store_id),
        "entity_type": found.entity_type,
        "entity_id": found.entity_id,
        "source": source,
        "version": found.version,
        "updated_at": format_rfc3339(found.updated_at),
        "document": found.document,
    }

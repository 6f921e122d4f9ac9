"""Schema registry routes (REFERENCE_MAP §1.7), camelCase as in the reference. A schema
of another tenant answers 404, as a missing one does."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from ...sequencer.auth import AuthContext, AuthError, ensure_admin, ensure_read, ensure_write
from ...sequencer.schemas import SchemaActor, SchemaInputError, SchemaUnusable
from ...store.records import SchemaRecord
from ...ves.codec import format_rfc3339
from ...ves.envelope import MAX_EVENT_TYPE_BYTES
from ...ves.jsontext import load_json
from .deps import Auth, ServicesDep, actor, bind_stream
from .errors import ApiError, api_error, responses

router = APIRouter(prefix="/api/v1/schemas", tags=["schemas"])


class RegisterSchema(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tenantId: uuid.UUID  # noqa: N815 - the reference's wire names
    eventType: str = Field(min_length=1, max_length=MAX_EVENT_TYPE_BYTES)  # noqa: N815
    # Strict: in lax mode 0, 1 and "false" would pass as booleans, and 0 become the schema
    # that refuses everything. A JSON Schema is an object or true/false, nothing else.
    schemaJson: dict[str, Any] | StrictBool  # noqa: N815
    description: str | None = Field(default=None, max_length=2048)
    compatibility: str | None = Field(default=None, max_length=16)

    @field_validator("schemaJson", mode="before")
    @classmethod
    def _a_schema(cls, value: Any) -> Any:
        # Checked before the union, whose own report names Python types, not the request.
        if isinstance(value, dict) or type(value) is bool:
            return value
        raise ValueError("a JSON Schema is an object or true/false")


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tenantId: uuid.UUID  # noqa: N815
    eventType: str = Field(min_length=1, max_length=MAX_EVENT_TYPE_BYTES)  # noqa: N815
    payload: Any = None
    schemaVersion: StrictInt | None = Field(default=None, ge=1, le=2**31 - 1)  # noqa: N815


class StatusRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: str = Field(max_length=16)


class SchemaOut(BaseModel):
    id: str
    tenantId: str  # noqa: N815
    eventType: str  # noqa: N815
    version: int
    schemaJson: Any  # noqa: N815
    status: str
    compatibility: str
    description: str | None
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    createdBy: str | None  # noqa: N815


class Registered(BaseModel):
    id: str
    eventType: str  # noqa: N815
    version: int
    createdAt: str  # noqa: N815


class SchemaList(BaseModel):
    schemas: list[SchemaOut]
    count: int


class PathError(BaseModel):
    path: str
    message: str


class Validation(BaseModel):
    valid: bool
    schemaId: str | None  # noqa: N815
    schemaVersion: int | None  # noqa: N815
    errors: list[PathError]


class Deleted(BaseModel):
    success: bool
    id: str


def schema_out(record: SchemaRecord) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "tenantId": str(record.tenant_id),
        "eventType": record.event_type,
        "version": record.version,
        "schemaJson": load_json(record.schema_json),
        "status": record.status,
        "compatibility": record.compatibility,
        "description": record.description,
        "createdAt": format_rfc3339(record.created_at),
        "updatedAt": format_rfc3339(record.updated_at),
        "createdBy": record.created_by,
    }


def _check(check: Any, ctx: AuthContext, tenant_id: uuid.UUID) -> None:
    try:
        check(ctx, tenant_id)
    except AuthError as exc:
        raise api_error(exc.reason, exc.message) from None


def _actor(request: Request, ctx: AuthContext) -> SchemaActor:
    who, kind = actor(ctx)
    return SchemaActor(who, kind, getattr(request.state, "request_id", None))


def _input_error(exc: SchemaInputError) -> ApiError:
    return api_error(exc.reason, exc.message)


async def _owned(
    services: ServicesDep, ctx: AuthContext, schema_id: uuid.UUID, check: Any
) -> SchemaRecord:
    record = await services.schemas.get(schema_id)
    if record is None or (not ctx.is_bootstrap and ctx.tenant_id != record.tenant_id):
        # Another tenant's schema is answered as a missing one: ids leak nothing.
        raise ApiError("RESOURCE_NOT_FOUND", "Schema not found")
    # The caller's own tenant's schema: a missing permission is a 403, not "not found".
    _check(check, ctx, record.tenant_id)
    return record


@router.get("", response_model=SchemaList, responses=responses())
async def list_schemas(
    request: Request, services: ServicesDep, ctx: Auth, tenant_id: Annotated[uuid.UUID, Query()]
) -> dict[str, Any]:
    _check(ensure_read, ctx, tenant_id)
    bind_stream(request, tenant_id, None)
    records = await services.schemas.list_schemas(tenant_id)
    return {"schemas": [schema_out(r) for r in records], "count": len(records)}


@router.post("", response_model=Registered, responses=responses())
async def register_schema(
    request: Request, body: RegisterSchema, services: ServicesDep, ctx: Auth
) -> dict[str, Any]:
    _check(ensure_write, ctx, body.tenantId)
    bind_stream(request, body.tenantId, None)
    who, _kind = actor(ctx)
    try:
        record = await services.schemas.register(
            body.tenantId,
            body.eventType,
            body.schemaJson,
            description=body.description,
            compatibility=body.compatibility or "backward",
            created_by=who,
            actor=_actor(request, ctx),
        )
    except SchemaInputError as exc:
        raise _input_error(exc) from None
    return {
        "id": str(record.id),
        "eventType": record.event_type,
        "version": record.version,
        "createdAt": format_rfc3339(record.created_at),
    }


@router.post("/validate", response_model=Validation, responses=responses())
async def validate_payload(
    body: ValidateRequest, services: ServicesDep, ctx: Auth
) -> dict[str, Any]:
    _check(ensure_read, ctx, body.tenantId)
    try:
        schema, errors = await services.schemas.validate_payload(
            body.tenantId, body.eventType, body.payload, body.schemaVersion
        )
    except SchemaUnusable as exc:
        raise ApiError("SCHEMA_VALIDATION_FAILED", exc.message) from None
    if schema is None:
        raise ApiError("SCHEMA_NOT_FOUND", f"No schema for event type {body.eventType!r}")
    return {
        "valid": not errors,
        "schemaId": str(schema.id),
        "schemaVersion": schema.version,
        "errors": [{"path": e["path"], "message": e["message"]} for e in errors],
    }


@router.get("/event-type/{event_type}/latest", response_model=SchemaOut, responses=responses(404))
async def latest_schema(
    event_type: str, services: ServicesDep, ctx: Auth, tenant_id: Annotated[uuid.UUID, Query()]
) -> dict[str, Any]:
    _check(ensure_read, ctx, tenant_id)
    record = await services.schemas.latest(tenant_id, event_type)
    if record is None:
        raise ApiError("SCHEMA_NOT_FOUND", "No active schema", status=404)
    return schema_out(record)


@router.get("/event-type/{event_type}", response_model=SchemaList, responses=responses(404))
async def schemas_for_type(
    event_type: str,
    services: ServicesDep,
    ctx: Auth,
    tenant_id: Annotated[uuid.UUID, Query()],
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> dict[str, Any]:
    _check(ensure_read, ctx, tenant_id)
    if version is not None:
        record = await services.schemas.get_version(tenant_id, event_type, version)
        if record is None:
            raise ApiError("SCHEMA_NOT_FOUND", "No such schema version", status=404)
        records = [record]
    else:
        records = await services.schemas.list_schemas(tenant_id, event_type)
    return {"schemas": [schema_out(r) for r in records], "count": len(records)}


@router.get("/{schema_id}", response_model=SchemaOut, responses=responses(404))
async def get_schema(schema_id: uuid.UUID, services: ServicesDep, ctx: Auth) -> dict[str, Any]:
    return schema_out(await _owned(services, ctx, schema_id, ensure_read))


@router.put("/{schema_id}/status", response_model=SchemaOut, responses=responses(404))
async def set_status(
    request: Request,
    schema_id: uuid.UUID,
    body: StatusRequest,
    services: ServicesDep,
    ctx: Auth,
) -> dict[str, Any]:
    await _owned(services, ctx, schema_id, ensure_write)
    try:
        record = await services.schemas.set_status(schema_id, body.status, _actor(request, ctx))
    except SchemaInputError as exc:
        raise _input_error(exc) from None
    if record is None:
        raise ApiError("RESOURCE_NOT_FOUND", "Schema not found")
    return schema_out(record)


@router.delete("/{schema_id}", response_model=Deleted, responses=responses(404))
async def delete_schema(
    request: Request, schema_id: uuid.UUID, services: ServicesDep, ctx: Auth
) -> dict[str, Any]:
    await _owned(services, ctx, schema_id, lambda c, t: ensure_admin(c, t))
    if not await services.schemas.delete(schema_id, _actor(request, ctx)):
        raise ApiError("RESOURCE_NOT_FOUND", "Schema not found")
    return {"success": True, "id": str(schema_id)}

"""``POST /api/v1/ves/events/ingest``: the reference's wire format (REFERENCE_MAP §4.1).

The body is parsed here rather than by FastAPI so that a malformed JSON text (400), a
wrongly typed field (422, with its path) and the strict-hex setting are told apart
exactly; the OpenAPI document still describes the body through ``openapi_extra``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...sequencer.auth import AuthContext, AuthError, ensure_write
from ...sequencer.ingest import BatchRejected
from ...store.base import StoreError, StreamKey
from ...ves import jcs
from ...ves.codec import parse_uuid
from ...ves.envelope import VesEventEnvelope, parse_envelope
from ...ves.errors import VesError
from .deps import Auth, ServicesDep, bind_stream
from .errors import ApiError, responses
from .metrics import rejection_label
from .validation import pydantic_error

router = APIRouter(prefix="/api/v1", tags=["ingest"])


class IngestRequest(BaseModel):
    """The wrapper: camelCase, envelopes snake_case."""

    model_config = ConfigDict(strict=True, extra="ignore")
    agentId: uuid.UUID  # noqa: N815 - the reference's wire name
    events: list[VesEventEnvelope] = Field(max_length=100_000)


class RejectionOut(BaseModel):
    event_id: str
    reason: str
    message: str


class ReceiptOut(BaseModel):
    sequencerId: str  # noqa: N815
    eventId: str  # noqa: N815
    sequenceNumber: int  # noqa: N815
    sequencedAt: str  # noqa: N815
    receiptHash: str  # noqa: N815
    signatureAlg: str  # noqa: N815
    sequencerSignature: str  # noqa: N815
    sequencerKeyVersion: int  # noqa: N815


class IngestResponse(BaseModel):
    batchId: str  # noqa: N815
    eventsAccepted: int  # noqa: N815
    eventsRejected: int  # noqa: N815
    sequenceStart: int | None  # noqa: N815
    sequenceEnd: int | None  # noqa: N815
    headSequence: int  # noqa: N815
    rejections: list[RejectionOut] | None = None
    receipts: list[ReceiptOut] | None = None


# Whole-batch faults: our precise reason -> the reference's ApiError code.
_BATCH_CODES = {
    "EMPTY_BATCH": "INVALID_FIELD_VALUE",
    "MIXED_STREAM": "INVALID_FIELD_VALUE",
    "AGENT_MISMATCH": "INVALID_FIELD_VALUE",
    "INVALID_FIELD": "INVALID_FIELD_VALUE",
    "MISSING_PAYLOAD": "INVALID_FIELD_VALUE",
    "BATCH_TOO_LARGE": "BATCH_TOO_LARGE",
    "PAYLOAD_TOO_LARGE": "PAYLOAD_TOO_LARGE",
}


def _openapi_body() -> dict[str, Any]:
    schema = IngestRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


def extra_schemas() -> dict[str, Any]:
    """Component schemas the hand-written request body refers to."""
    schema = IngestRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schema.get("$defs", {})
    return defs


def parse_body(raw: bytes, strict_format: bool) -> tuple[uuid.UUID, list[VesEventEnvelope]]:
    try:
        body = jcs.loads(raw)
    except VesError as exc:
        raise ApiError("INVALID_REQUEST_BODY", f"Malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError("INVALID_REQUEST_BODY", "Request body must be a JSON object", status=422)
    for name, kind in (("agentId", str), ("events", list)):
        if name not in body:
            raise ApiError("MISSING_REQUIRED_FIELD", f"missing field `{name}`", status=422)
        if not isinstance(body[name], kind):
            raise ApiError(
                "INVALID_FIELD_VALUE",
                f"{name}: expected {'a string' if kind is str else 'an array'}",
                status=422,
            )
    try:
        agent_id = parse_uuid(body["agentId"])
    except VesError as exc:
        raise ApiError("INVALID_FIELD_VALUE", f"agentId: {exc}", status=422) from None
    events: list[VesEventEnvelope] = []
    for index, item in enumerate(body["events"]):
        if not isinstance(item, dict):
            raise ApiError(
                "INVALID_FIELD_VALUE", f"events[{index}]: expected an object", status=422
            )
        try:
            events.append(parse_envelope(item, strict_format=strict_format))
        except ValidationError as exc:
            raise pydantic_error(exc, prefix=f"events[{index}]") from None
    return agent_id, events


@router.post(
    "/ves/events/ingest",
    response_model=IngestResponse,
    response_model_exclude_none=True,
    responses=responses(500, 503),
    openapi_extra=_openapi_body(),
    summary="Sequence a batch of signed VES events",
)
async def ingest_ves_events(request: Request, services: ServicesDep, ctx: Auth) -> JSONResponse:
    metrics = services.metrics
    started = time.perf_counter()
    raw = await request.body()
    agent_id, events = parse_body(raw, services.sequencer.strict_format)
    metrics.events_per_batch.observe(len(events))
    metrics.events_received.inc(len(events))
    if events:
        bind_stream(request, events[0].tenant_id, events[0].store_id)

    def authorize(stream: StreamKey) -> None:
        _authorize_write(ctx, stream)

    try:
        result = await services.sequencer.ingest(
            agent_id, events, bound_agent_id=ctx.agent_id, authorize=authorize
        )
    except BatchRejected as exc:
        metrics.batches_rejected.labels(exc.code).inc()
        if exc.status == 403:
            raise ApiError("INSUFFICIENT_PERMISSIONS", exc.message, reason=exc.code) from None
        raise ApiError(
            _BATCH_CODES.get(exc.code, "INVALID_FIELD_VALUE"),
            exc.message,
            status=exc.status,
            reason=exc.code,
        ) from None
    except StoreError as exc:
        metrics.db_errors.inc()
        raise ApiError("DATABASE_ERROR", f"Database error: {type(exc).__name__}") from None
    metrics.events_sequenced.inc(result.events_accepted)
    metrics.events_replayed.inc(len(result.receipts) - result.events_accepted)
    for rejection in result.rejections:
        metrics.events_rejected.labels(rejection_label(rejection.reason)).inc()
    metrics.ingest_latency.observe(time.perf_counter() - started)
    return JSONResponse(result.to_wire())


def _authorize_write(ctx: AuthContext, stream: StreamKey) -> None:
    try:
        ensure_write(ctx, stream.tenant_id, stream.store_id)
    except AuthError as exc:
        raise ApiError("INSUFFICIENT_PERMISSIONS", exc.message, reason=exc.code) from None

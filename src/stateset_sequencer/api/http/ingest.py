"""``POST /api/v1/ves/events/ingest``: the reference's wire format (REFERENCE_MAP §4.1).

The body is parsed here rather than by FastAPI so that a malformed JSON text (400), a
wrongly typed field (422, with its path) and the strict-hex setting are told apart
exactly; the OpenAPI document still describes the body through ``openapi_extra``, with
the configured limits filled in when the document is served (:func:`document_limits`).
The response body is built here too (:func:`ingest_body`): the sequencer returns a typed
:class:`IngestResult`.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...runtime import Services
from ...sequencer.auth import AuthContext, AuthError, ensure_write
from ...sequencer.ingest import BatchRejected, Limits
from ...sequencer.outcomes import IngestResult, Rejection
from ...store.errors import StoreError
from ...store.records import StreamKey
from ...ves import jcs
from ...ves.codec import parse_uuid
from ...ves.envelope import (
    MAX_ENTITY_ID_BYTES,
    MAX_ENTITY_TYPE_BYTES,
    MAX_EVENT_TYPE_BYTES,
    VesEventEnvelope,
    parse_envelope,
)
from ...ves.errors import VesError
from .deps import Auth, ServicesDep, bind_stream
from .errors import ApiError, api_error, responses, store_fault, wire_for
from .metrics import rejection_label
from .validation import pydantic_error

router = APIRouter(prefix="/api/v1", tags=["ingest"])
log = structlog.get_logger("stateset_sequencer.http")


# Only the OpenAPI document is built from this model (the body is parsed by
# :func:`parse_body`); the number of events it states is the configured
# ``MAX_EVENTS_PER_BATCH``, filled in by :func:`document_limits`. (Its docstring is
# served as the schema's description.)
class IngestRequest(BaseModel):
    """The wrapper: camelCase, envelopes snake_case."""

    model_config = ConfigDict(strict=True, extra="ignore")
    agentId: uuid.UUID  # noqa: N815 - the reference's wire name
    events: list[VesEventEnvelope] = Field(min_length=1)


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


# --- the response body ----------------------------------------------------------------------


def rejection_body(rejection: Rejection) -> dict[str, str]:
    """snake_case keys even inside the camelCase response, as the reference does."""
    return {
        "event_id": str(rejection.event_id),
        "reason": rejection.reason,
        "message": rejection.message,
    }


def ingest_body(result: IngestResult) -> dict[str, Any]:
    """The reference's camelCase response; empty rejections and receipts are omitted."""
    wire: dict[str, Any] = {
        "batchId": str(result.batch_id),
        "eventsAccepted": result.events_accepted,
        "eventsRejected": result.events_rejected,
        "sequenceStart": result.sequence_start,
        "sequenceEnd": result.sequence_end,
        "headSequence": result.head_sequence,
    }
    if result.rejections:
        wire["rejections"] = [rejection_body(r) for r in result.rejections]
    if result.receipts:
        wire["receipts"] = [r.to_wire() for r in result.receipts]
    return wire


# --- the OpenAPI description of the request -------------------------------------------------

INGEST_PATH = "/api/v1/ves/events/ingest"
_TEXT_LIMITS = {
    "entity_type": MAX_ENTITY_TYPE_BYTES,
    "entity_id": MAX_ENTITY_ID_BYTES,
    "event_type": MAX_EVENT_TYPE_BYTES,
}


def _request_schema() -> dict[str, Any]:
    return IngestRequest.model_json_schema(ref_template="#/components/schemas/{model}")


def _openapi_body() -> dict[str, Any]:
    schema = _request_schema()
    schema.pop("$defs", None)
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


def extra_schemas() -> dict[str, Any]:
    """Component schemas the hand-written request body refers to, with the envelope's
    text limits stated: ``maxLength`` counts characters, so it bounds a limit in UTF-8
    bytes from above, and the description gives the byte limit itself."""
    defs: dict[str, Any] = _request_schema().get("$defs", {})
    envelope = defs.get("VesEventEnvelope", {}).get("properties", {})
    for name, limit in _TEXT_LIMITS.items():
        if name in envelope:
            envelope[name].update(
                minLength=1,
                maxLength=limit,
                description=f"1-{limit} bytes of UTF-8, without NUL (else 400 INVALID_FIELD)",
            )
    return defs


def document_limits(document: dict[str, Any], limits: Limits) -> None:
    """State the configured limits in the served document: at most
    ``MAX_EVENTS_PER_BATCH`` events (more is our 413 ``BATCH_TOO_LARGE``, answered by the
    handler, not by schema validation) and ``MAX_EVENT_PAYLOAD_SIZE`` per payload."""
    operation = document["paths"][INGEST_PATH]["post"]
    # FastAPI puts the route's own ``openapi_extra`` dict into the document: copy it, so
    # that apps with other limits in one process do not write into each other's.
    operation["requestBody"] = body = copy.deepcopy(operation["requestBody"])
    events = body["content"]["application/json"]["schema"]["properties"]["events"]
    events["maxItems"] = limits.max_events_per_batch
    events["minItems"] = 1
    events["description"] = (
        f"1-{limits.max_events_per_batch} signed envelopes of one (tenant_id, store_id) "
        f"stream (more: 413 BATCH_TOO_LARGE); each payload (or payload_encrypted) at most "
        f"{limits.max_event_payload_bytes} bytes as compact JSON (more: 413 "
        "PAYLOAD_TOO_LARGE)"
    )


def parse_body(raw: bytes, strict_format: bool) -> tuple[uuid.UUID, list[VesEventEnvelope]]:
    try:
        body = jcs.loads(raw)
    except VesError as exc:  # jcs.loads says what is wrong in its own words, never the decoder's
        raise ApiError("INVALID_REQUEST_BODY", f"Malformed JSON body: {exc}") from None
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
    INGEST_PATH.removeprefix("/api/v1"),
    response_model=IngestResponse,
    response_model_exclude_none=True,
    responses=responses(500, 503),
    openapi_extra=_openapi_body(),
    summary="Sequence a batch of signed VES events",
)
async def ingest_ves_events(request: Request, services: ServicesDep, ctx: Auth) -> JSONResponse:
    raw = await request.body()
    agent_id, events = parse_body(raw, services.sequencer.strict_format)
    if events:
        bind_stream(request, events[0].tenant_id, events[0].store_id)
    try:
        result = await counted_ingest(services, ctx, agent_id, events)
    except BatchRejected as exc:
        raise api_error(exc.reason, exc.message) from None
    except AuthError as exc:  # from ``authorize``, where the reference checks write
        raise api_error(exc.reason, exc.message) from None
    except StoreError as exc:
        # The driver's text goes to the log, with the request id; the body names the
        # class of fault only (errors.STORE_FAULTS).
        log.error(
            "ingest store fault",
            request_id=getattr(request.state, "request_id", None),
            error=type(exc).__name__,
            detail=str(exc)[:500],
        )
        raise store_fault(exc) from None
    return JSONResponse(ingest_body(result))


async def counted_ingest(
    services: Services,
    ctx: AuthContext,
    agent_id: uuid.UUID,
    events: list[VesEventEnvelope],
) -> IngestResult:
    """One batch through the sequencer, counted in the metrics, whichever API brought it
    (HTTP here, gRPC ``Push``): write permission on the stream as the reference checks it,
    the credential's agent binding, and every counter and the latency on the way. Raises
    what ``Sequencer.ingest`` raises, for the caller's API to answer."""
    metrics = services.metrics
    started = time.perf_counter()
    metrics.events_per_batch.observe(len(events))
    metrics.events_received.inc(len(events))

    def authorize(stream: StreamKey) -> None:
        ensure_write(ctx, stream.tenant_id, stream.store_id)

    try:
        result = await services.sequencer.ingest(
            agent_id, events, bound_agent_id=ctx.agent_id, authorize=authorize
        )
    except BatchRejected as exc:
        metrics.batches_rejected.labels(wire_for(exc.reason).detail or exc.reason).inc()
        raise
    except StoreError:
        metrics.db_errors.inc()
        raise
    metrics.events_sequenced.inc(result.events_accepted)
    metrics.events_replayed.inc(len(result.receipts) - result.events_accepted)
    for rejection in result.rejections:
        metrics.events_rejected.labels(rejection_label(rejection.reason)).inc()
    metrics.ingest_latency.observe(time.perf_counter() - started)
    return result

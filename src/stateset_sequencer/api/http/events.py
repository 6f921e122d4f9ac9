"""Reading the log: events, head and entity history.

The ``/api/v1/ves/…`` routes are ours (the reference documents them but reads VES data
only through gRPC); the legacy paths ``/api/v1/events``, ``/api/v1/head`` and
``/api/v1/entities/…`` keep the reference's shapes and paging but read the VES store,
since this service has one event path.

Every page is bounded by bytes as well as by count (``MAX_PAGE_BYTES``, ``store.paging``):
a page cut short carries ``"truncated": true`` and ``next_from``, the ``from`` that
continues it; a page that was not cut is exactly the reference's shape. Pages are written
one event at a time (:func:`_page_response`) rather than built whole in memory.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.convertors import Convertor, register_url_convertor

from ...runtime import Services
from ...sequencer.auth import AuthContext, AuthError, ensure_read
from ...store.records import StoredEvent, StreamKey
from ...ves.codec import format_rfc3339
from ...ves.envelope import MAX_ENTITY_ID_BYTES, MAX_ENTITY_TYPE_BYTES
from ...ves.storable import TextFault, text_fault
from .deps import Auth, ServicesDep, bind_stream
from .errors import ApiError, api_error, responses

router = APIRouter(prefix="/api/v1", tags=["events"])


class _AnyText(Convertor[str]):
    """Starlette's ``path`` convertor is ``.*``, which stops at a newline, so an entity id
    holding one (``%0A``, storable and accepted at ingest) matched no route: this one
    takes every character."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())

U63 = 2**63 - 1
MAX_PAGE = 1000
MAX_ENTITY_PAGE = 100

TenantQ = Annotated[uuid.UUID, Query(description="Tenant UUID")]
StoreQ = Annotated[uuid.UUID, Query(description="Store UUID")]
FromQ = Annotated[int, Query(alias="from", ge=0, le=U63)]
OffsetQ = Annotated[int, Query(alias="from", ge=0, le=U63, description="Offset")]
LimitQ = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size, 1–1000")]
# ``max_length`` counts characters, so it bounds the real limit, in UTF-8 bytes, from above;
# the description states the byte limit itself.
EntityType = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_ENTITY_TYPE_BYTES,
        description=f"1-{MAX_ENTITY_TYPE_BYTES} bytes of UTF-8 (more: 400)",
    ),
]
EntityId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_ENTITY_ID_BYTES,
        description=f"1-{MAX_ENTITY_ID_BYTES} bytes of UTF-8 (more: 400); any characters, "
        "slashes included",
    ),
]


class HeadResponse(BaseModel):
    head_sequence: int


class VesEventItem(BaseModel):
    """The stored envelope exactly as signed, plus what the sequencer added."""

    model_config = {"extra": "allow"}
    event_id: str
    tenant_id: str
    store_id: str
    sequence_number: int
    sequenced_at: str
    agent_signature: str
    payload_plain_hash: str
    payload_cipher_hash: str
    created_at: str


class Continuation(BaseModel):
    """Present only on a page that ``MAX_PAGE_BYTES`` cut short."""

    truncated: bool | None = None
    next_from: int | None = None


class VesSequenced(BaseModel):
    """The reference's ``SequencedVesEvent``."""

    envelope: VesEventItem


class VesEventsPage(Continuation):
    events: list[VesSequenced]
    count: int
    next_sequence: int
    head_sequence: int
    has_more: bool


class VesEventDetail(BaseModel):
    event: VesEventItem
    receipt: dict[str, Any] | None


class VesEntityPage(Continuation):
    entity_type: str
    entity_id: str
    events: list[VesSequenced]
    count: int
    total: int
    current_version: int
    has_more: bool


class LegacyItem(BaseModel):
    envelope: dict[str, Any]
    sequenced_at: str


class LegacyEventsPage(Continuation):
    events: list[LegacyItem]
    count: int


class LegacyEntityPage(Continuation):
    entity_type: str
    entity_id: str
    events: list[LegacyItem]
    count: int
    total: int
    has_more: bool


# The order VesEventItem answers in: its declared fields, then the rest as the envelope
# has them (what validating through the model gave when pages were built whole).
_VES_FIRST = tuple(VesEventItem.model_fields)


def ves_envelope(event: StoredEvent) -> dict[str, Any]:
    """The stored envelope as signed, with the two fields the sequencer added."""
    wire = event.envelope.to_wire()
    wire["sequence_number"] = event.sequence_number
    wire["sequenced_at"] = format_rfc3339(event.sequenced_at)
    item = {name: wire.pop(name) for name in _VES_FIRST if name in wire}
    item.update(wire)
    return item


def ves_item(event: StoredEvent) -> dict[str, Any]:
    """An item of a VES page: the reference's ``SequencedVesEvent``, which nests the
    envelope (``sequence_number`` and ``sequenced_at`` inside it, as its struct has them)."""
    return {"envelope": ves_envelope(event)}


def legacy_item(event: StoredEvent) -> dict[str, Any]:
    envelope = event.envelope.to_wire()
    envelope["sequence_number"] = event.sequence_number
    return {"envelope": envelope, "sequenced_at": format_rfc3339(event.sequenced_at)}


# What a page's fields hold in place of its events (see _page_response).
EVENTS = object()


def _json(value: Any) -> bytes:
    """Starlette's JSONResponse rendering, so a streamed page is byte for byte the page
    built whole."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _page_response(
    fields: dict[str, Any],
    events: Sequence[StoredEvent],
    item: Callable[[StoredEvent], dict[str, Any]],
) -> StreamingResponse:
    """The JSON object ``fields``, in order, with ``events`` written where a field holds
    :data:`EVENTS`, one event at a time: only one event's text exists at once."""

    async def body() -> AsyncIterator[bytes]:
        yield b"{"
        for index, (name, value) in enumerate(fields.items()):
            key = (b"," if index else b"") + _json(name) + b":"
            if value is not EVENTS:
                yield key + _json(value)
                continue
            yield key + b"["
            for n, event in enumerate(events):
                yield (b"," if n else b"") + _json(item(event))
            yield b"]"
        yield b"}"

    return StreamingResponse(body(), media_type="application/json")


def _continuation(truncated: bool, next_from: int) -> dict[str, Any]:
    return {"truncated": True, "next_from": next_from} if truncated else {}


async def _read_range(
    services: Services, stream: StreamKey, start: int, end: int
) -> tuple[Sequence[StoredEvent], bool]:
    """``start..=end``, cut at ``MAX_PAGE_BYTES``; the events and whether the cap cut them."""
    if start > end:
        return [], False
    page = await services.store.read_page(stream, start, end, services.settings.MAX_PAGE_BYTES)
    return page.events, page.truncated


async def _range_page(
    services: Services,
    stream: StreamKey,
    start: int,
    end: int,
    item: Callable[[StoredEvent], dict[str, Any]],
) -> StreamingResponse:
    """``start..=end`` as ``{"events", "count"}``, cut at ``MAX_PAGE_BYTES``."""
    events, truncated = await _read_range(services, stream, start, end)
    next_from = events[-1].sequence_number + 1 if events else start
    fields = {"events": EVENTS, "count": len(events), **_continuation(truncated, next_from)}
    return _page_response(fields, events, item)


def contiguous(events: Sequence[StoredEvent], start: int, end: int, head: int, cut: bool) -> bool:
    """Whether the page holds every sequence number from ``start`` up to where it stops:
    the end of the range or the head, or where the byte cap cut it. A hole means the log
    lost events (a restore gone wrong); answering a short page as if complete would let
    a reader step over them for good."""
    if any(e.sequence_number != start + i for i, e in enumerate(events)):
        return False
    return cut or start + len(events) > min(end, head)


def read_stream(
    ctx: AuthContext, request: Request, tenant_id: uuid.UUID, store_id: uuid.UUID
) -> StreamKey:
    """The stream a read route names, once the caller may read it (shared by every read
    of one stream: event pages, entity histories, projections)."""
    bind_stream(request, tenant_id, store_id)
    try:
        ensure_read(ctx, tenant_id, store_id)
    except AuthError as exc:
        raise api_error(exc.reason, exc.message) from None
    return StreamKey(tenant_id, store_id)


def entity_fault(entity_type: str, entity_id: str) -> tuple[bool, str | None]:
    """The storable-text rule (``ves.storable``) on an entity's names, for every API:
    whether a store can hold them, and the message of a length fault (past the UTF-8 byte
    limits, or empty), which the caller refuses. Text no store can hold (NUL, a lone
    surrogate) was refused at ingest on every backend, so no stored event carries it: the
    caller answers "nothing there" without asking the store (PostgreSQL would fail such a
    query)."""
    storable = True
    for name, value, limit in (
        ("entity_type", entity_type, MAX_ENTITY_TYPE_BYTES),
        ("entity_id", entity_id, MAX_ENTITY_ID_BYTES),
    ):
        fault = text_fault(value, field=name, min_bytes=1, max_bytes=limit)
        if fault is None:
            continue
        if fault.fault in (TextFault.TOO_LONG, TextFault.TOO_SHORT):
            return False, fault.message
        storable = False
    return storable, None


def storable_entity(entity_type: str, entity_id: str) -> bool:
    """:func:`entity_fault` on an entity path: a length fault is 400, as the reference
    answers (``Path(max_length)`` counts characters, not bytes)."""
    storable, length_fault = entity_fault(entity_type, entity_id)
    if length_fault is not None:
        raise ApiError("INVALID_FIELD_VALUE", length_fault)
    return storable


async def _entity_page(
    request: Request,
    services: Services,
    ctx: AuthContext,
    ids: tuple[uuid.UUID, uuid.UUID],
    entity: tuple[str, str],
    offset: int,
    limit: int,
    item: Callable[[StoredEvent], dict[str, Any]],
) -> StreamingResponse:
    """One page of an entity's history, in the shape both entity routes answer."""
    entity_type, entity_id = entity
    storable = storable_entity(entity_type, entity_id)
    stream = read_stream(ctx, request, *ids)
    events: Sequence[StoredEvent] = []
    total = 0
    if storable:
        events, total = await services.store.read_entity(
            stream, entity_type, entity_id, offset, limit, services.settings.MAX_PAGE_BYTES
        )
    # Fewer events than the count allows, with more remaining: the byte cap ended it.
    truncated = len(events) < min(limit, max(total - offset, 0))
    fields = {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "events": EVENTS,
        "count": len(events),
        "total": total,
        **({"current_version": total} if item is ves_item else {}),
        "has_more": offset + len(events) < total,
        **_continuation(truncated, offset + len(events)),
    }
    return _page_response(fields, events, item)


# --- VES reads ----------------------------------------------------------------------------


@router.get("/ves/events", response_model=VesEventsPage, responses=responses(409))
async def list_ves_events(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    tenant_id: TenantQ,
    store_id: StoreQ,
    from_: FromQ = 1,
    limit: Annotated[
        int, Query(ge=1, le=U63, description="Page size: 1 or more, capped at 1000")
    ] = 100,
) -> StreamingResponse:
    """Events with ``max(from,1) <= sequence_number <= max(from,1)+limit-1``, in order, up
    to ``MAX_PAGE_BYTES`` of them (then ``truncated`` and ``next_from``). As the
    reference: ``limit`` 0 is refused, larger than 1000 is capped; ``next_sequence`` is
    where the next page starts and ``has_more`` says whether the head lies beyond it."""
    stream = read_stream(ctx, request, tenant_id, store_id)
    start = max(from_, 1)
    end = min(start + min(limit, MAX_PAGE) - 1, U63)
    # The head first: an append landing between the two reads then only adds events
    # past the head this page reports, never a hole below it.
    head = await services.store.head(stream)
    events, truncated = await _read_range(services, stream, start, end)
    if not contiguous(events, start, end, head, truncated):
        raise ApiError(
            "SEQUENCE_GAP",
            f"the stream has a gap in sequence numbers {start}..{min(end, head)}; "
            "run sequencer-cli verify-events",
            reason="sequence_range",
        )
    last = events[-1].sequence_number if events else 0
    next_sequence = last + 1 if events else start
    # An append after the head was read may be on the page already: the head reported is
    # never below the last event returned.
    head_sequence = max(head, last)
    fields = {
        "events": EVENTS,
        "count": len(events),
        "next_sequence": next_sequence,
        "head_sequence": head_sequence,
        "has_more": next_sequence <= head_sequence,
        **_continuation(truncated, next_sequence),
    }
    return _page_response(fields, events, ves_item)


@router.get("/ves/events/{event_id}", response_model=VesEventDetail, responses=responses(404))
async def get_ves_event(
    request: Request, services: ServicesDep, ctx: Auth, event_id: uuid.UUID
) -> dict[str, Any]:
    """One event with its receipt. Another tenant's event answers 404, as a missing one
    does, so ids leak nothing across tenants."""
    event = await services.store.get_event(event_id)
    if event is None:
        raise ApiError("EVENT_NOT_FOUND", "Event not found")
    env = event.envelope
    try:
        ensure_read(ctx, env.tenant_id, env.store_id)
    except AuthError:
        raise ApiError("EVENT_NOT_FOUND", "Event not found") from None
    bind_stream(request, env.tenant_id, env.store_id)
    receipt = await services.store.get_receipt(event_id)
    return {"event": ves_envelope(event), "receipt": receipt.to_wire() if receipt else None}


@router.get("/ves/head", response_model=HeadResponse, responses=responses())
async def ves_head(
    request: Request, services: ServicesDep, ctx: Auth, tenant_id: TenantQ, store_id: StoreQ
) -> dict[str, int]:
    stream = read_stream(ctx, request, tenant_id, store_id)
    return {"head_sequence": await services.store.head(stream)}


@router.get(
    "/ves/entities/{entity_type}/{entity_id:anytext}",
    response_model=VesEntityPage,
    responses=responses(),
)
async def ves_entity_history(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    entity_type: EntityType,
    entity_id: EntityId,
    tenant_id: TenantQ,
    store_id: StoreQ,
    from_: OffsetQ = 0,
    limit: Annotated[int, Query(ge=0, le=U63)] = MAX_ENTITY_PAGE,
) -> StreamingResponse:
    """An entity's events in sequence order, ``from`` being an offset into them.
    ``current_version`` is the entity's number of events. As the reference, ``limit`` 0
    means 100 and larger values are capped at 100. ``entity_id`` may hold any characters,
    slashes included; it is only ever a bound query parameter."""
    page = MAX_ENTITY_PAGE if limit == 0 else min(limit, MAX_ENTITY_PAGE)
    return await _entity_page(
        request,
        services,
        ctx,
        (tenant_id, store_id),
        (entity_type, entity_id),
        from_,
        page,
        ves_item,
    )


class SequencerInfo(BaseModel):
    sequencerId: str  # noqa: N815 - camelCase like the receipts it describes
    publicKey: str | None  # noqa: N815
    signatureAlg: str  # noqa: N815


@router.get("/ves/sequencer", response_model=SequencerInfo, responses=responses())
async def sequencer_info(services: ServicesDep, ctx: Auth) -> dict[str, Any]:
    """The receipt-signing identity, so that clients can verify receipts offline."""
    signer = services.sequencer.receipt_signer
    key = signer.public_key
    return {
        "sequencerId": str(signer.sequencer_id),
        "publicKey": key.hex() if key is not None else None,
        "signatureAlg": "ed25519" if key is not None else "none",
    }


# --- legacy paths, reading the VES store --------------------------------------------------


@router.get("/events", response_model=LegacyEventsPage, responses=responses())
async def list_events(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    tenant_id: TenantQ,
    store_id: StoreQ,
    from_: FromQ = 0,
    limit: LimitQ = 100,
) -> StreamingResponse:
    """The reference's paging, quirk included: ``[max(from,1), from+limit-1]``, so
    ``from=0&limit=100`` returns at most 99 events; cut as the VES page is."""
    stream = read_stream(ctx, request, tenant_id, store_id)
    end = min(from_ + limit - 1, U63)
    return await _range_page(services, stream, max(from_, 1), end, legacy_item)


# The legacy head answers exactly as the VES one. Registered here, in its place among the
# routes, and with its own ``name``, so its operation id and summary stay its own.
router.get("/head", response_model=HeadResponse, responses=responses(), name="head")(ves_head)


@router.get(
    "/entities/{entity_type}/{entity_id:anytext}",
    response_model=LegacyEntityPage,
    responses=responses(),
)
async def entity_history(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    entity_type: EntityType,
    entity_id: EntityId,
    tenant_id: TenantQ,
    store_id: StoreQ,
    from_: OffsetQ = 0,
    limit: Annotated[int, Query(ge=0, le=U63)] = MAX_ENTITY_PAGE,
) -> StreamingResponse:
    """As the reference: ``limit`` 0 means 100, and larger values are capped at 100."""
    page = MAX_ENTITY_PAGE if limit == 0 else min(limit, MAX_ENTITY_PAGE)
    return await _entity_page(
        request,
        services,
        ctx,
        (tenant_id, store_id),
        (entity_type, entity_id),
        from_,
        page,
        legacy_item,
    )

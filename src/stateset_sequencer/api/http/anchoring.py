"""Anchoring routes (REFERENCE_MAP §1.4, docs/ANCHORING.md): send a commitment to the
registry, commit-and-anchor in one call, and two ways to hold a stored commitment against
the chain. The rules are ``anchoring/anchorer.py``; this module parses, authorises and
shapes. Without anchoring configured each answers 503 ``ANCHORING_NOT_CONFIGURED``,
checked first (as the reference), and every other route works as before."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ...anchoring.anchorer import (
    Anchorer,
    AnchorError,
    all_match,
)
from ...anchoring.chain import ChainError
from ...runtime.service import Services
from ...sequencer.auth import AuthContext, AuthError, ensure_admin, ensure_read
from ...sequencer.commitments import MAX_SEQUENCE, CommitmentError, CommitmentReason
from ...store.records import CommitmentRow, StreamKey
from ...ves.codec import format_rfc3339
from .commitments import HEX64, commitment_out
from .deps import Auth, ServicesDep, bind_stream
from .errors import ApiError, anchoring_not_configured, api_error, chain_fault, responses

router = APIRouter(prefix="/api/v1/ves", tags=["anchoring"])

MAX_EVENTS_PER_ANCHOR = 1 << 20


class AnchorBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    batch_id: uuid.UUID


class CommitAndAnchorBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tenant_id: uuid.UUID
    store_id: uuid.UUID
    sequence_start: StrictInt | None = Field(default=None, ge=1, le=MAX_SEQUENCE)
    sequence_end: StrictInt | None = Field(default=None, ge=1, le=MAX_SEQUENCE)
    max_events: StrictInt = Field(default=1024, ge=1, le=MAX_EVENTS_PER_ANCHOR)


class VerifyTxBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    batch_id: uuid.UUID
    chain_tx_hash: StrictStr = Field(pattern=HEX64)


class AnchorOut(BaseModel):
    batch_id: str
    status: str
    chain_id: int | None
    chain_tx_hash: str | None
    chain_block_number: int | None
    merkle_root: str
    prev_state_root: str
    new_state_root: str
    sequence_start: int
    sequence_end: int
    gas_used: int | None
    final: bool


class FieldOut(BaseModel):
    field: str
    stored: str | int
    on_chain: str | int | None
    match: bool


class VerifyAnchorOut(BaseModel):
    batch_id: str
    anchored_on_chain: bool
    verified: bool
    fields: list[FieldOut]
    chain_id: int | None
    chain_tx_hash: str | None
    chain_block_number: int | None
    anchored_at: str | None


class VerifyTxOut(BaseModel):
    batch_id: str
    chain_tx_hash: str
    valid: bool
    reason: str | None
    block_number: int | None
    fields: list[FieldOut]


def _anchorer(services: Services) -> Anchorer:
    anchorer = services.anchorer
    if anchorer is None:
        raise anchoring_not_configured()
    return anchorer


def _fault(exc: ChainError, anchorer: Anchorer) -> ApiError:
    return chain_fault(exc, anchorer.chain.status().retry_in_s)


async def _load(
    services: Services, ctx: AuthContext, batch_id: uuid.UUID, *, admin: bool
) -> CommitmentRow:
    row = await services.store.get_commitment(batch_id)
    if row is None:
        raise api_error(CommitmentReason.NOT_FOUND, "Commitment not found")
    try:
        if admin:
            ensure_admin(ctx, row.tenant_id, row.store_id)
        else:
            ensure_read(ctx, row.tenant_id, row.store_id)
    except AuthError as exc:
        raise api_error(exc.reason, exc.message) from None
    return row


async def _anchor(anchorer: Anchorer, row: CommitmentRow) -> dict[str, Any]:
    try:
        return (await anchorer.anchor(row)).to_json()
    except AnchorError as exc:
        raise api_error(exc.reason, exc.message) from None
    except ChainError as exc:
        raise _fault(exc, anchorer) from None


@router.post("/anchor", response_model=AnchorOut, responses=responses(404, 409, 502))
async def anchor_commitment(
    request: Request, services: ServicesDep, ctx: Auth, body: AnchorBody
) -> dict[str, Any]:
    """Send one commitment to the registry and wait for its receipt. One the chain holds
    already is recorded from its log (``already_anchored``), nothing is sent; one whose
    predecessor in the stream is not on chain is 409. ``final`` turns true once
    ``ANCHOR_FINALITY_CONFIRMATIONS`` blocks lie on top (the worker's finality pass)."""
    anchorer = _anchorer(services)
    row = await _load(services, ctx, body.batch_id, admin=True)
    bind_stream(request, row.tenant_id, row.store_id)
    return await _anchor(anchorer, row)


@router.post("/commitments/anchor", response_model=AnchorOut, responses=responses(404, 409, 502))
async def commit_and_anchor(
    request: Request, services: ServicesDep, ctx: Auth, body: CommitAndAnchorBody
) -> dict[str, Any]:
    """Commit a range (both bounds, or neither: from the last commitment's end + 1 up to
    ``max_events`` events) and anchor it, as the reference's one-call route."""
    anchorer = _anchorer(services)
    bind_stream(request, body.tenant_id, body.store_id)
    stream = StreamKey(body.tenant_id, body.store_id)
    if (body.sequence_start is None) != (body.sequence_end is None):
        raise ApiError(
            "INVALID_FIELD_VALUE",
            "give both sequence_start and sequence_end, or neither",
            reason="INVALID_RANGE",
        )
    try:
        ensure_admin(ctx, stream.tenant_id, stream.store_id)
        if body.sequence_start is not None and body.sequence_end is not None:
            made = await services.commitments.create(stream, body.sequence_start, body.sequence_end)
        else:
            made = await services.commitments.create_next(stream, body.max_events)
    except AuthError as exc:
        raise api_error(exc.reason, exc.message) from None
    except CommitmentError as exc:
        raise api_error(exc.reason, exc.message) from None
    return await _anchor(anchorer, made.row)


@router.get(
    "/anchor/{batch_id}/verify", response_model=VerifyAnchorOut, responses=responses(404, 502)
)
async def verify_anchor(
    request: Request, services: ServicesDep, ctx: Auth, batch_id: uuid.UUID
) -> dict[str, Any]:
    """Read the registry and compare its record of the batch with the stored commitment,
    field by field (events root, new state root, range, count). ``verified`` is true only
    when the chain holds the batch and every field matches."""
    anchorer = _anchorer(services)
    row = await _load(services, ctx, batch_id, admin=False)
    bind_stream(request, row.tenant_id, row.store_id)
    try:
        exists, checks = await anchorer.verify(row)
    except ChainError as exc:
        raise _fault(exc, anchorer) from None
    out = commitment_out(row)
    return {
        "batch_id": str(row.batch_id),
        "anchored_on_chain": exists,
        "verified": exists and all_match(checks),
        "fields": [c.to_json() for c in checks],
        "chain_id": out["chain_id"],
        "chain_tx_hash": out["chain_tx_hash"],
        "chain_block_number": out["chain_block_number"],
        "anchored_at": None if row.anchored_at is None else format_rfc3339(row.anchored_at),
    }


@router.post("/commitments/verify", response_model=VerifyTxOut, responses=responses(404, 502))
async def verify_commitment_transaction(
    request: Request, services: ServicesDep, ctx: Auth, body: VerifyTxBody
) -> dict[str, Any]:
    """Decode one transaction's ``BatchCommitted`` log and compare it with the stored
    commitment (the recovery guide's data-corruption check). A transaction that is not
    found, not the registry's, reverted, or logs another batch is ``valid: false`` with
    its ``reason``; so is any field that differs."""
    anchorer = _anchorer(services)
    row = await _load(services, ctx, body.batch_id, admin=False)
    bind_stream(request, row.tenant_id, row.store_id)
    tx_hash = bytes.fromhex(body.chain_tx_hash.removeprefix("0x"))
    try:
        reason, checks, block = await anchorer.verify_transaction(row, tx_hash)
    except ChainError as exc:
        raise _fault(exc, anchorer) from None
    valid = reason is None and all_match(checks)
    if reason is None and not valid:
        reason = "fields_differ"
    return {
        "batch_id": str(row.batch_id),
        "chain_tx_hash": tx_hash.hex(),
        "valid": valid,
        "reason": reason,
        "block_number": block,
        "fields": [c.to_json() for c in checks],
    }

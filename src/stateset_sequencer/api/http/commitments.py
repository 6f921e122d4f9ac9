"""Commitments and inclusion proofs (REFERENCE_MAP §1.4, REFERENCE_DELTA §7), and the
two root routes the external anchor service calls (REFERENCE_MAP §1.5). The rules are
``sequencer/commitments.py``; this module parses, authorises and shapes. Hashes are hex
without ``0x`` (what the reference answers; its SDK accepts either)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ...sequencer.auth import AuthContext, AuthError, AuthReason, ensure_read, ensure_write
from ...sequencer.commitments import (
    MAX_SEQUENCE,
    CommitmentError,
    CommitmentIntegrityError,
    CommitmentReason,
    Created,
    Proof,
    check_proof,
)
from ...store.records import AnchorOutcome, CommitmentRow, StreamKey
from ...ves.codec import format_rfc3339
from ...ves.errors import BadProof
from ...ves.merkle import MAX_PROOF_DEPTH
from .deps import Auth, ServicesDep, bind_stream
from .errors import AgentError, ApiError, api_error, responses
from .events import StoreQ, TenantQ, read_stream

router = APIRouter(prefix="/api/v1/ves", tags=["commitments and proofs"])
anchor_service_router = APIRouter(prefix="/v1/commitments", tags=["anchor service"])

SequenceNumber = Annotated[int, Path(ge=1, le=MAX_SEQUENCE, description="Sequence number")]
MAX_LIST = 1000
MAX_PENDING = 5000
HEX64 = r"^(0x)?[0-9a-fA-F]{64}$"


def _hex(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).hex()


def commitment_out(row: CommitmentRow, *, chain: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "batch_id": str(row.batch_id),
        "tenant_id": str(row.tenant_id),
        "store_id": str(row.store_id),
        "ves_version": row.ves_version,
        "tree_depth": row.tree_depth,
        "leaf_count": row.leaf_count,
        "padded_leaf_count": row.padded_leaf_count,
        "merkle_root": _hex(row.merkle_root),
        "prev_state_root": _hex(row.prev_state_root),
        "new_state_root": _hex(row.new_state_root),
        "sequence_start": row.sequence_start,
        "sequence_end": row.sequence_end,
        "committed_at": format_rfc3339(row.committed_at),
    }
    if chain:
        body |= {
            "chain_id": row.chain_id,
            "chain_tx_hash": _hex(row.chain_tx_hash),
            "chain_block_number": row.chain_block_number,
            "anchored_at": None if row.anchored_at is None else format_rfc3339(row.anchored_at),
            "is_anchored": row.anchored_at is not None,
        }
    return body


class CommitmentOut(BaseModel):
    batch_id: str
    tenant_id: str
    store_id: str
    ves_version: int
    tree_depth: int
    leaf_count: int
    padded_leaf_count: int
    merkle_root: str
    prev_state_root: str
    new_state_root: str
    sequence_start: int
    sequence_end: int
    committed_at: str
    chain_id: int | None
    chain_tx_hash: str | None
    chain_block_number: int | None
    anchored_at: str | None
    is_anchored: bool


class CommitmentList(BaseModel):
    commitments: list[CommitmentOut]
    count: int


class CreateCommitment(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tenant_id: uuid.UUID
    store_id: uuid.UUID
    sequence_start: StrictInt = Field(ge=1, le=MAX_SEQUENCE)
    sequence_end: StrictInt = Field(ge=1, le=MAX_SEQUENCE)


class ProofOut(BaseModel):
    sequence_number: int
    batch_id: str
    merkle_root: str
    leaf_hash: str
    leaf_index: int
    proof_path: list[str]
    directions: list[bool]
    tree_depth: int


class VerifyProof(BaseModel):
    # The SDK sends the proof it was given, extra members included.
    model_config = ConfigDict(extra="ignore")
    leaf_hash: StrictStr = Field(pattern=HEX64)
    merkle_root: StrictStr = Field(pattern=HEX64)
    proof_path: list[Annotated[StrictStr, Field(pattern=HEX64)]] = Field(max_length=MAX_PROOF_DEPTH)
    # The reference SDK's bound: an index every client holds exactly.
    leaf_index: StrictInt = Field(ge=0, le=2**53 - 1)
    directions: list[StrictBool] | None = None


class VerifyOut(BaseModel):
    valid: bool
    leaf_hash: str
    merkle_root: str


def _refusal(exc: AuthError | CommitmentError) -> ApiError:
    return api_error(exc.reason, exc.message)


def _damaged(exc: CommitmentIntegrityError) -> ApiError:
    # A fault of the stored data, answered as the store's integrity faults are.
    return ApiError("DATABASE_ERROR", str(exc), reason="COMMITMENT_MISMATCH")


def _owned(ctx: AuthContext, row: CommitmentRow) -> None:
    """Read access to the commitment's stream, checked after the load (as the reference):
    another tenant's commitment is a refusal that names nothing of it."""
    try:
        ensure_read(ctx, row.tenant_id, row.store_id)
    except AuthError as exc:
        raise _refusal(exc) from None


@router.post("/commitments", response_model=CommitmentOut, responses=responses(404, 409))
async def create_commitment(
    request: Request, services: ServicesDep, ctx: Auth, body: CreateCommitment
) -> dict[str, Any]:
    """Commit ``sequence_start..=sequence_end`` of a stream: contiguous, fully stored, and
    starting where the stream's last commitment ends. The same range again answers the
    stored commitment."""
    bind_stream(request, body.tenant_id, body.store_id)
    stream = StreamKey(body.tenant_id, body.store_id)
    try:
        ensure_write(ctx, stream.tenant_id, stream.store_id)
        made: Created = await services.commitments.create(
            stream, body.sequence_start, body.sequence_end
        )
    except (AuthError, CommitmentError) as exc:
        raise _refusal(exc) from None
    return commitment_out(made.row)


@router.get("/commitments", response_model=CommitmentList, responses=responses())
async def list_commitments(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    tenant_id: TenantQ,
    store_id: StoreQ,
    anchored: Annotated[
        Literal["false", "true", "any"],
        Query(description="`false` (the default, as the reference): not yet anchored"),
    ] = "false",
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = MAX_LIST,
) -> dict[str, Any]:
    """A stream's commitments in sequence order: by default only those not yet anchored,
    as the reference lists them; ``anchored=true`` or ``any`` for the rest."""
    stream = read_stream(ctx, request, tenant_id, store_id)
    wanted = {"false": False, "true": True, "any": None}[anchored]
    rows = await services.store.list_commitments(stream, anchored=wanted, limit=limit)
    return {"commitments": [commitment_out(r) for r in rows], "count": len(rows)}


@router.get("/commitments/{batch_id}", response_model=CommitmentOut, responses=responses(404))
async def get_commitment(
    request: Request, services: ServicesDep, ctx: Auth, batch_id: uuid.UUID
) -> dict[str, Any]:
    row = await services.store.get_commitment(batch_id)
    if row is None:
        raise api_error(CommitmentReason.NOT_FOUND, "Commitment not found")
    _owned(ctx, row)
    bind_stream(request, row.tenant_id, row.store_id)
    return commitment_out(row)


def proof_out(found: Proof) -> dict[str, Any]:
    proof = found.proof
    return {
        "sequence_number": found.sequence_number,
        "batch_id": str(found.commitment.batch_id),
        "merkle_root": proof.merkle_root.hex(),
        "leaf_hash": proof.leaf_hash.hex(),
        "leaf_index": proof.leaf_index,
        "proof_path": [p.hex() for p in proof.proof_path],
        "directions": list(proof.directions),
        "tree_depth": found.commitment.tree_depth,
    }


@router.get("/proofs/{sequence_number}", response_model=ProofOut, responses=responses(404))
async def get_proof(
    request: Request,
    services: ServicesDep,
    ctx: Auth,
    sequence_number: SequenceNumber,
    tenant_id: TenantQ,
    store_id: StoreQ,
    batch_id: Annotated[
        uuid.UUID | None,
        Query(description="The commitment; when absent, the one holding the sequence"),
    ] = None,
) -> dict[str, Any]:
    """The inclusion proof of one sequence number: one sibling and one direction per tree
    level (True: the running node is the left child), as the reference's SDK verifies."""
    stream = read_stream(ctx, request, tenant_id, store_id)
    try:
        found = await services.commitments.proof(stream, sequence_number, batch_id)
    except CommitmentError as exc:
        raise _refusal(exc) from None
    except CommitmentIntegrityError as exc:
        raise _damaged(exc) from None
    return proof_out(found)


@router.get("/events/{event_id}/proof", response_model=ProofOut, responses=responses(404))
async def get_event_proof(
    request: Request, services: ServicesDep, ctx: Auth, event_id: uuid.UUID
) -> dict[str, Any]:
    """The inclusion proof of one event, in the commitment that holds it. Another
    tenant's event answers 404, as a missing one does (as ``GET /ves/events/{id}``)."""
    event = await services.store.get_event(event_id)
    env = None if event is None else event.envelope
    if event is None or env is None:
        raise ApiError("EVENT_NOT_FOUND", "Event not found")
    try:
        ensure_read(ctx, env.tenant_id, env.store_id)
    except AuthError:
        raise ApiError("EVENT_NOT_FOUND", "Event not found") from None
    bind_stream(request, env.tenant_id, env.store_id)
    try:
        found = await services.commitments.proof(
            StreamKey(env.tenant_id, env.store_id), event.sequence_number
        )
    except CommitmentError as exc:
        raise _refusal(exc) from None
    except CommitmentIntegrityError as exc:
        raise _damaged(exc) from None
    return proof_out(found)


def _bytes(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


@router.post("/proofs/verify", response_model=VerifyOut, responses=responses())
async def verify_proof(ctx: Auth, body: VerifyProof) -> dict[str, Any]:
    """Whether a proof leads from its leaf to its root (pure computation: no tenant is
    involved). ``directions``, when sent, must be the ones the index gives."""
    if not (ctx.can_read or ctx.can_admin):
        raise api_error(AuthReason.INSUFFICIENT_PERMISSIONS, "Read permission required")
    try:
        checked = check_proof(
            _bytes(body.leaf_hash),
            _bytes(body.merkle_root),
            [_bytes(p) for p in body.proof_path],
            body.leaf_index,
            body.directions,
        )
    except BadProof as exc:
        raise ApiError("INVALID_FIELD_VALUE", str(exc), reason="INVALID_PROOF") from None
    return {
        "valid": checked.valid,
        "leaf_hash": checked.leaf_hash.hex(),
        "merkle_root": checked.merkle_root.hex(),
    }


# --- the external anchor service (root paths, the global admin only) -----------------------


class PendingOut(BaseModel):
    batch_id: str
    tenant_id: str
    store_id: str
    prev_state_root: str
    new_state_root: str
    events_root: str
    sequence_start: int
    sequence_end: int
    event_count: int
    committed_at: str
    chain_tx_hash: str | None


class PendingList(BaseModel):
    commitments: list[PendingOut]
    total: int


class Anchored(BaseModel):
    model_config = ConfigDict(extra="ignore")
    chain_tx_hash: StrictStr = Field(pattern=HEX64)
    chain_id: StrictInt = Field(ge=0, le=2**32 - 1)
    # Bounded where every client's numbers are exact (block numbers and gas are far below).
    block_number: StrictInt | None = Field(default=None, ge=0, le=2**53 - 1)
    gas_used: StrictInt | None = Field(default=None, ge=0, le=2**53 - 1)


class AnchoredOut(BaseModel):
    batch_id: str
    status: str
    chain_tx_hash: str


def _global_admin(ctx: AuthContext) -> None:
    if not ctx.is_bootstrap:
        raise AgentError(403, "FORBIDDEN", "the anchor service routes need the global admin")


@anchor_service_router.get("/pending", response_model=PendingList, responses=responses())
async def pending(
    services: ServicesDep,
    ctx: Auth,
    limit: Annotated[int, Query(ge=1, le=MAX_PENDING)] = 1000,
) -> dict[str, Any]:
    """Commitments of every stream not yet anchored, oldest first (for the external
    anchor service; hashes ``0x``-prefixed as it reads them)."""
    _global_admin(ctx)
    rows = await services.store.pending_commitments(limit)
    return {
        "commitments": [
            {
                "batch_id": str(r.batch_id),
                "tenant_id": str(r.tenant_id),
                "store_id": str(r.store_id),
                "prev_state_root": "0x" + bytes(r.prev_state_root).hex(),
                "new_state_root": "0x" + bytes(r.new_state_root).hex(),
                "events_root": "0x" + bytes(r.merkle_root).hex(),
                "sequence_start": r.sequence_start,
                "sequence_end": r.sequence_end,
                "event_count": r.leaf_count,
                "committed_at": format_rfc3339(r.committed_at),
                "chain_tx_hash": None,
            }
            for r in rows
        ],
        "total": len(rows),
    }


@anchor_service_router.post(
    "/{batch_id}/anchored", response_model=AnchoredOut, responses=responses(404, 409)
)
async def mark_anchored(
    services: ServicesDep, ctx: Auth, batch_id: uuid.UUID, body: Anchored
) -> dict[str, Any]:
    """Record that the anchor service anchored a commitment. The same transaction again
    is ``already_anchored``; another one for an anchored commitment is 409."""
    _global_admin(ctx)
    tx_hash = _bytes(body.chain_tx_hash)
    outcome, row = await services.store.record_anchor(
        batch_id, body.chain_id, tx_hash, body.block_number, datetime.now(UTC)
    )
    if outcome is AnchorOutcome.NOT_FOUND or row is None:
        raise AgentError(404, "NOT_FOUND", "Commitment not found")
    if outcome is AnchorOutcome.CONFLICT:
        raise AgentError(
            409, "ALREADY_ANCHORED", "the commitment is anchored already, by another transaction"
        )
    status = "anchored" if outcome is AnchorOutcome.RECORDED else "already_anchored"
    return {"batch_id": str(batch_id), "status": status, "chain_tx_hash": "0x" + tx_hash.hex()}

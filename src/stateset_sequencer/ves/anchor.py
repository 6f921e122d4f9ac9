"""Calldata for ``StateSetAnchor.anchor`` (VES_PROTOCOL §9): what actually goes on chain.

``anchor(bytes32 batchId, bytes32 tenantId, bytes32 storeId, bytes32 eventsRoot,
bytes32 stateRoot, uint64 sequenceStart, uint64 sequenceEnd, uint32 eventCount)``, one
transaction per commitment. UUIDs sit left-aligned in their bytes32 words (the reference's
``uuid_to_bytes32``); ``prev_state_root`` is not sent.
"""

from __future__ import annotations

import uuid

from .codec import U32_MAX, U64_MAX
from .errors import BadInteger, BadLength
from .keccak import keccak256
from .merkle import Commitment

ANCHOR_SIGNATURE = "anchor(bytes32,bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32)"
ANCHOR_SELECTOR = bytes.fromhex("012f9824")


def function_selector(signature: str) -> bytes:
    """First four bytes of the Keccak-256 of a canonical Solidity signature."""
    return keccak256(signature.encode("ascii"))[:4]


def uuid_to_bytes32(value: uuid.UUID) -> bytes:
    """The UUID's 16 bytes followed by 16 zero bytes."""
    return value.bytes + bytes(16)


def _word_bytes32(name: str, value: bytes) -> bytes:
    if len(value) != 32:
        raise BadLength(f"{name} must be 32 bytes, got {len(value)}")
    return value


def _word_uint(name: str, value: int, limit: int) -> bytes:
    if not 0 <= value <= limit:
        raise BadInteger(f"{name} = {value} is out of range")
    return value.to_bytes(32, "big")


def anchor_calldata(
    *,
    batch_id: uuid.UUID,
    tenant_id: uuid.UUID,
    store_id: uuid.UUID,
    events_root: bytes,
    state_root: bytes,
    sequence_start: int,
    sequence_end: int,
    event_count: int,
) -> bytes:
    """ABI-encode the call: selector then eight 32-byte words."""
    return ANCHOR_SELECTOR + b"".join(
        (
            uuid_to_bytes32(batch_id),
            uuid_to_bytes32(tenant_id),
            uuid_to_bytes32(store_id),
            _word_bytes32("events_root", events_root),
            _word_bytes32("state_root", state_root),
            _word_uint("sequence_start", sequence_start, U64_MAX),
            _word_uint("sequence_end", sequence_end, U64_MAX),
            _word_uint("event_count", event_count, U32_MAX),
        )
    )


def commitment_calldata(batch_id: uuid.UUID, commitment: Commitment) -> bytes:
    """Calldata that anchors one VES commitment: eventsRoot = merkle_root,
    stateRoot = new_state_root, eventCount = leaf_count."""
    return anchor_calldata(
        batch_id=batch_id,
        tenant_id=commitment.tenant_id,
        store_id=commitment.store_id,
        events_root=commitment.merkle_root,
        state_root=commitment.new_state_root,
        sequence_start=commitment.sequence_start,
        sequence_end=commitment.sequence_end,
        event_count=commitment.leaf_count,
    )


def latest_sequence_key(tenant_id: uuid.UUID, store_id: uuid.UUID) -> bytes:
    """The contract's ``latestSequence`` mapping key: keccak256(abi.encodePacked(t32, s32))."""
    return keccak256(uuid_to_bytes32(tenant_id) + uuid_to_bytes32(store_id))

"""What goes on chain for a VES commitment: SetRegistry ``commitBatch`` calldata
(docs/ANCHORING.md), and the older ``StateSetAnchor.anchor`` calldata that 0.2.7 sent,
kept because its golden vector pins the word layout both share.

``commitBatch(bytes32 batchId, bytes32 tenantId, bytes32 storeId, bytes32 eventsRoot,
bytes32 prevStateRoot, bytes32 newStateRoot, uint64 sequenceStart, uint64 sequenceEnd,
uint32 eventCount)``, one transaction per commitment. UUIDs sit left-aligned in their
bytes32 words (the reference's ``uuid_to_bytes32``). Keccak-256 is the Ethereum libraries'
(eth-hash): ``hashlib.sha3_256`` pads differently and would give other selectors.
"""

from __future__ import annotations

import uuid

from eth_hash.auto import keccak

from .codec import U32_MAX, U64_MAX
from .errors import BadInteger, BadLength
from .merkle import Commitment

COMMIT_BATCH_SIGNATURE = (
    "commitBatch(bytes32,bytes32,bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32)"
)
COMMIT_BATCH_SELECTOR = bytes.fromhex("d38f6b8b")
BATCH_COMMITTED_SIGNATURE = "BatchCommitted(bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32)"
ANCHOR_SIGNATURE = "anchor(bytes32,bytes32,bytes32,bytes32,bytes32,uint64,uint64,uint32)"
ANCHOR_SELECTOR = bytes.fromhex("012f9824")


def keccak256(data: bytes) -> bytes:
    return bytes(keccak(data))


def function_selector(signature: str) -> bytes:
    """First four bytes of the Keccak-256 of a canonical Solidity signature."""
    return keccak256(signature.encode("ascii"))[:4]


def event_topic(signature: str) -> bytes:
    """An event's topic0: the whole Keccak-256 of its canonical signature."""
    return keccak256(signature.encode("ascii"))


def uuid_to_bytes32(value: uuid.UUID) -> bytes:
    """The UUID's 16 bytes followed by 16 zero bytes."""
    return value.bytes + bytes(16)


def bytes32_to_uuid(word: bytes) -> uuid.UUID | None:
    """The UUID a ``uuid_to_bytes32`` word holds; None for a word that is not one."""
    if len(word) != 32 or any(word[16:]):
        return None
    return uuid.UUID(bytes=bytes(word[:16]))


def _word_bytes32(name: str, value: bytes) -> bytes:
    if len(value) != 32:
        raise BadLength(f"{name} must be 32 bytes, got {len(value)}")
    return value


def _word_uint(name: str, value: int, limit: int) -> bytes:
    if not 0 <= value <= limit:
        raise BadInteger(f"{name} = {value} is out of range")
    return value.to_bytes(32, "big")


def commit_batch_calldata(
    *,
    batch_id: uuid.UUID,
    tenant_id: uuid.UUID,
    store_id: uuid.UUID,
    events_root: bytes,
    prev_state_root: bytes,
    new_state_root: bytes,
    sequence_start: int,
    sequence_end: int,
    event_count: int,
) -> bytes:
    """ABI-encode ``commitBatch``: the selector, then nine 32-byte words."""
    return COMMIT_BATCH_SELECTOR + b"".join(
        (
            uuid_to_bytes32(batch_id),
            uuid_to_bytes32(tenant_id),
            uuid_to_bytes32(store_id),
            _word_bytes32("events_root", events_root),
            _word_bytes32("prev_state_root", prev_state_root),
            _word_bytes32("new_state_root", new_state_root),
            _word_uint("sequence_start", sequence_start, U64_MAX),
            _word_uint("sequence_end", sequence_end, U64_MAX),
            _word_uint("event_count", event_count, U32_MAX),
        )
    )


def commitment_calldata(batch_id: uuid.UUID, commitment: Commitment) -> bytes:
    """The ``commitBatch`` calldata that anchors one VES commitment: eventsRoot =
    merkle_root, eventCount = leaf_count, and both state roots, so that the contract's
    strict mode can check the chain."""
    return commit_batch_calldata(
        batch_id=batch_id,
        tenant_id=commitment.tenant_id,
        store_id=commitment.store_id,
        events_root=commitment.merkle_root,
        prev_state_root=commitment.prev_state_root,
        new_state_root=commitment.new_state_root,
        sequence_start=commitment.sequence_start,
        sequence_end=commitment.sequence_end,
        event_count=commitment.leaf_count,
    )


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
    """The 0.2.7 ``StateSetAnchor.anchor`` call: the selector, then eight words (no
    previous state root). Nothing sends it; it documents what old anchors hold."""
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


def tenant_store_key(tenant_id: uuid.UUID, store_id: uuid.UUID) -> bytes:
    """The contract's per-stream key, keccak256(abi.encodePacked(t32, s32)): the second
    topic of ``BatchCommitted`` and the key of its latest-commitment mapping."""
    return keccak256(uuid_to_bytes32(tenant_id) + uuid_to_bytes32(store_id))


# The 0.2.7 contract keyed its latestSequence mapping the same way.
latest_sequence_key = tenant_store_key

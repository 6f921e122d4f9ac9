"""Merkle trees over a commitment's leaves, inclusion proofs, and the state-root chain
(VES_PROTOCOL §6–§7; the reference's ``ves_commitment.rs``).

Leaves are padded once, at the bottom, with ``PAD_LEAF`` up to the next power of two, so
every level above is even. One leaf is its own root; zero leaves give the zero root.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from . import hashing
from .errors import BadLength, BadProof

# The reference caps proof paths at 64 levels: more would mean over 2**64 leaves.
MAX_PROOF_DEPTH = 64


def next_pow2(n: int) -> int:
    """Smallest power of two ≥ n, with next_pow2(0) = next_pow2(1) = 1."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """All levels bottom-up, the padded leaves first and the root level last."""
    for leaf in leaves:
        if len(leaf) != 32:
            raise BadLength(f"a leaf is 32 bytes, got {len(leaf)}")
    level = list(leaves) + [hashing.PAD_LEAF] * (next_pow2(len(leaves)) - len(leaves))
    levels = [level]
    node = hashing.node_hash
    while len(level) > 1:
        level = [node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the padded tree; the zero hash for no leaves."""
    if not leaves:
        return hashing.ZERO_HASH
    return _levels(leaves)[-1][0]


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """A leaf's path to the root, siblings bottom-up, as ``GET /v1/ves/proofs/{seq}`` gives it.

    ``directions[d]`` is True when the running node is the *left* child at level d.
    """

    leaf_index: int
    leaf_hash: bytes
    merkle_root: bytes
    proof_path: tuple[bytes, ...]
    directions: tuple[bool, ...]


def inclusion_proof(leaves: Sequence[bytes], leaf_index: int) -> InclusionProof:
    """The proof for ``leaves[leaf_index]``; its path length is always the tree depth."""
    if not 0 <= leaf_index < len(leaves):
        raise BadProof(f"leaf index {leaf_index} outside 0..{len(leaves) - 1}")
    levels = _levels(leaves)
    path: list[bytes] = []
    directions: list[bool] = []
    index = leaf_index
    for level in levels[:-1]:
        path.append(level[index ^ 1])
        directions.append(index & 1 == 0)
        index >>= 1
    return InclusionProof(
        leaf_index=leaf_index,
        leaf_hash=leaves[leaf_index],
        merkle_root=levels[-1][0],
        proof_path=tuple(path),
        directions=tuple(directions),
    )


def root_from_proof(leaf_hash: bytes, proof_path: Sequence[bytes], leaf_index: int) -> bytes:
    """Fold a proof path into a root. Directions come from ``leaf_index`` alone, as the
    reference's verify endpoint recomputes them and ignores any supplied."""
    if len(proof_path) > MAX_PROOF_DEPTH:
        raise BadProof(f"proof path longer than {MAX_PROOF_DEPTH}")
    if leaf_index < 0 or leaf_index >> len(proof_path):
        raise BadProof(f"leaf index {leaf_index} does not fit a tree of depth {len(proof_path)}")
    if len(leaf_hash) != 32 or any(len(s) != 32 for s in proof_path):
        raise BadProof("leaf and path entries must be 32 bytes")
    current = leaf_hash
    for depth, sibling in enumerate(proof_path):
        if (leaf_index >> depth) & 1 == 0:
            current = hashing.node_hash(current, sibling)
        else:
            current = hashing.node_hash(sibling, current)
    return current


def verify_inclusion(
    leaf_hash: bytes, merkle_root: bytes, proof_path: Sequence[bytes], leaf_index: int
) -> None:
    """Raise :class:`BadProof` unless the proof leads from the leaf to the root."""
    if root_from_proof(leaf_hash, proof_path, leaf_index) != merkle_root:
        raise BadProof("inclusion proof does not lead to the Merkle root")


def is_included(
    leaf_hash: bytes, merkle_root: bytes, proof_path: Sequence[bytes], leaf_index: int
) -> bool:
    """:func:`verify_inclusion` as a boolean (the ``valid`` of the verify endpoint)."""
    try:
        verify_inclusion(leaf_hash, merkle_root, proof_path, leaf_index)
    except BadProof:
        return False
    return True


# --- commitments and the state-root chain (§7) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Commitment:
    """The hashes and counts of one VES batch commitment (ids and chain fields live in the
    store)."""

    tenant_id: uuid.UUID
    store_id: uuid.UUID
    sequence_start: int
    sequence_end: int
    leaf_count: int
    padded_leaf_count: int
    tree_depth: int
    merkle_root: bytes
    prev_state_root: bytes
    new_state_root: bytes


def commit(
    tenant_id: uuid.UUID,
    store_id: uuid.UUID,
    sequence_start: int,
    leaves: Sequence[bytes],
    prev_state_root: bytes = hashing.ZERO_HASH,
) -> Commitment:
    """Commit leaves for sequences ``sequence_start … sequence_start + n - 1`` onto a chain
    whose last state root is ``prev_state_root`` (zeros for a stream's first commitment)."""
    if not leaves:
        raise BadProof("a commitment cannot cover an empty range")
    if sequence_start < 1:
        raise BadProof("sequence numbers start at 1")
    n = len(leaves)
    padded = next_pow2(n)
    root = merkle_root(leaves)
    end = sequence_start + n - 1
    new_root = hashing.state_root(
        stream=hashing.stream_id(tenant_id, store_id),
        prev_state_root=prev_state_root,
        merkle_root=root,
        sequence_start=sequence_start,
        sequence_end=end,
        leaf_count=n,
    )
    return Commitment(
        tenant_id=tenant_id,
        store_id=store_id,
        sequence_start=sequence_start,
        sequence_end=end,
        leaf_count=n,
        padded_leaf_count=padded,
        tree_depth=padded.bit_length() - 1,
        merkle_root=root,
        prev_state_root=prev_state_root,
        new_state_root=new_root,
    )


def verify_chain(commitments: Sequence[Commitment]) -> None:
    """Check a stream's commitments in order: contiguous ranges, counts that fit the range,
    each ``prev_state_root`` equal to the previous ``new_state_root`` (zeros first), and
    every ``new_state_root`` recomputed. Raises :class:`BadProof` at the first fault."""
    prev_root = hashing.ZERO_HASH
    prev_end: int | None = None
    for c in commitments:
        where = f"commitment {c.sequence_start}..{c.sequence_end}"
        if prev_end is not None and c.sequence_start != prev_end + 1:
            raise BadProof(f"{where} does not start at {prev_end + 1}")
        if c.leaf_count != c.sequence_end - c.sequence_start + 1 or c.leaf_count < 1:
            raise BadProof(f"{where} has leaf_count {c.leaf_count}")
        if c.padded_leaf_count != next_pow2(c.leaf_count):
            raise BadProof(f"{where} has padded_leaf_count {c.padded_leaf_count}")
        if c.prev_state_root != prev_root:
            raise BadProof(f"{where} does not chain onto the previous state root")
        expected = hashing.state_root(
            stream=hashing.stream_id(c.tenant_id, c.store_id),
            prev_state_root=c.prev_state_root,
            merkle_root=c.merkle_root,
            sequence_start=c.sequence_start,
            sequence_end=c.sequence_end,
            leaf_count=c.leaf_count,
        )
        if expected != c.new_state_root:
            raise BadProof(f"{where} has a wrong new_state_root")
        prev_root, prev_end = c.new_state_root, c.sequence_end

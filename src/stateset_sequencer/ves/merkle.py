"""Merkle trees over a commitment's leaves, inclusion proofs, and the state-root chain
(VES_PROTOCOL §6–§7; the reference's ``ves_commitment.rs``).

Leaves are padded once, at the bottom, with ``PAD_LEAF`` up to the next power of two, so
every level above is even. One leaf is its own root; zero leaves give the zero root.

:func:`chain_faults` is the one statement of the chain rules: it lists every fault of a
stream's commitments with a stable code (:class:`ChainFaultKind`); :func:`verify_chain`
raises on the first. The verifier in ``recovery/verify`` reports them all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from . import hashing
from .errors import BadLength, BadProof, VesError

# The reference caps proof paths at 64 levels: more would mean over 2**64 leaves.
MAX_PROOF_DEPTH = 64


def next_pow2(n: int) -> int:
    """Smallest power of two ≥ n, with next_pow2(0) = next_pow2(1) = 1."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def tree_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """All levels bottom-up, the padded leaves first and the root level last (what a
    sequencer keeps to hand out many proofs of one tree)."""
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
    return tree_levels(leaves)[-1][0]


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
    return proof_from_levels(tree_levels(leaves), leaf_index, len(leaves))


def proof_from_levels(
    levels: Sequence[Sequence[bytes]], leaf_index: int, leaf_count: int
) -> InclusionProof:
    """The proof for leaf ``leaf_index`` of a tree given by :func:`tree_levels` over
    ``leaf_count`` real leaves (the padding is never proved)."""
    if not 0 <= leaf_index < leaf_count:
        raise BadProof(f"leaf index {leaf_index} outside 0..{leaf_count - 1}")
    path: list[bytes] = []
    directions: list[bool] = []
    index = leaf_index
    for level in levels[:-1]:
        path.append(level[index ^ 1])
        directions.append(index & 1 == 0)
        index >>= 1
    return InclusionProof(
        leaf_index=leaf_index,
        leaf_hash=levels[0][leaf_index],
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
    *,
    levels: Sequence[Sequence[bytes]] | None = None,
) -> Commitment:
    """Commit leaves for sequences ``sequence_start … sequence_start + n - 1`` onto a chain
    whose last state root is ``prev_state_root`` (zeros for a stream's first commitment).
    ``levels``, the :func:`tree_levels` of ``leaves`` when the caller keeps the tree
    anyway, saves building it twice."""
    if not leaves:
        raise BadProof("a commitment cannot cover an empty range")
    if sequence_start < 1:
        raise BadProof("sequence numbers start at 1")
    n = len(leaves)
    padded = next_pow2(n)
    if levels is None:
        root = merkle_root(leaves)
    elif len(levels[0]) != padded or list(levels[0][:n]) != list(leaves):
        raise BadProof("the levels given are not the tree of these leaves")
    else:
        root = levels[-1][0]
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


class ChainLink(Protocol):
    """What the chain rules read of a commitment: :class:`Commitment` and the store's
    commitment rows both fit, so ``ves`` needs no store type."""

    @property
    def tenant_id(self) -> uuid.UUID: ...
    @property
    def store_id(self) -> uuid.UUID: ...
    @property
    def sequence_start(self) -> int: ...
    @property
    def sequence_end(self) -> int: ...
    @property
    def leaf_count(self) -> int: ...
    @property
    def padded_leaf_count(self) -> int: ...
    @property
    def tree_depth(self) -> int: ...
    @property
    def merkle_root(self) -> bytes: ...
    @property
    def prev_state_root(self) -> bytes: ...
    @property
    def new_state_root(self) -> bytes: ...


class ChainFaultKind(StrEnum):
    """Stable codes of the chain faults (they appear in verify-events reports)."""

    GAP = "commitment_gap"  # does not start right after the previous one (or at first_start)
    LEAF_COUNT = "commitment_count"  # leaf_count is not the size of the range
    PADDED_COUNT = "commitment_padded_count"  # padded_leaf_count != next_pow2(leaf_count)
    TREE_DEPTH = "commitment_tree_depth"  # tree_depth != log2(next_pow2(leaf_count))
    PREV_ROOT = "state_root_chain"  # prev_state_root is not the previous new_state_root
    NEW_ROOT = "state_root_mismatch"  # new_state_root does not recompute from the fields


@dataclass(frozen=True, slots=True)
class ChainFault:
    """One broken rule at ``index`` in the list given, the commitment covering
    ``sequence_start..sequence_end``."""

    kind: ChainFaultKind
    index: int
    sequence_start: int
    sequence_end: int
    message: str

    def __str__(self) -> str:
        return f"commitment {self.sequence_start}..{self.sequence_end}: {self.message}"


def chain_faults(
    commitments: Sequence[ChainLink],
    *,
    first_start: int | None = None,
    prev_state_root: bytes = hashing.ZERO_HASH,
) -> list[ChainFault]:
    """Every fault of a stream's commitments taken in order, each rule checked on each
    commitment (§6.1 counts, §7.2 range rule and state roots).

    Each commitment is judged against the previous one *as stored*, so one altered field
    gives faults at that commitment (and, for its range end or new state root, at the
    next one's start or previous root), not at every commitment after it.

    ``first_start``: where the first commitment must start. The protocol lets a stream's
    first commitment start at any sequence number (None, the default); this sequencer's
    engine always starts at 1, which its verifier asks for. ``prev_state_root``: the root
    the first commitment chains onto, zeros for a stream's first commitment (pass the last
    known root to check a continuation).
    """
    faults: list[ChainFault] = []
    prev_root, expected_start = prev_state_root, first_start
    for index, c in enumerate(commitments):
        for kind, message in _link_faults(c, expected_start, prev_root):
            faults.append(ChainFault(kind, index, c.sequence_start, c.sequence_end, message))
        prev_root, expected_start = c.new_state_root, c.sequence_end + 1
    return faults


def _link_faults(
    c: ChainLink, expected_start: int | None, prev_root: bytes
) -> list[tuple[ChainFaultKind, str]]:
    found: list[tuple[ChainFaultKind, str]] = []
    if expected_start is not None and c.sequence_start != expected_start:
        found.append((ChainFaultKind.GAP, f"does not start at {expected_start}"))
    elif c.sequence_start < 1:
        found.append((ChainFaultKind.GAP, "starts below 1 (sequence numbers start at 1)"))
    if c.leaf_count < 1 or c.leaf_count != c.sequence_end - c.sequence_start + 1:
        found.append(
            (ChainFaultKind.LEAF_COUNT, f"leaf_count {c.leaf_count} does not fit the range")
        )
    # Both counts follow from leaf_count (§6.1), so a wrong leaf_count is not also
    # reported as wrong padding unless the padding is wrong for it too.
    padded = next_pow2(c.leaf_count)
    depth = padded.bit_length() - 1
    if c.padded_leaf_count != padded:
        found.append(
            (
                ChainFaultKind.PADDED_COUNT,
                f"padded_leaf_count {c.padded_leaf_count}, not {padded} for {c.leaf_count} leaves",
            )
        )
    if c.tree_depth != depth:
        found.append(
            (
                ChainFaultKind.TREE_DEPTH,
                f"tree_depth {c.tree_depth}, not {depth} for {padded} leaves",
            )
        )
    if c.prev_state_root != prev_root:
        found.append(
            (ChainFaultKind.PREV_ROOT, "prev_state_root is not the previous new_state_root")
        )
    if _state_root_of(c) != c.new_state_root:
        found.append((ChainFaultKind.NEW_ROOT, "new_state_root does not recompute"))
    return found


def _state_root_of(c: ChainLink) -> bytes | None:
    """The ``new_state_root`` that ``c``'s own fields give (§7.2); None when a field
    cannot be encoded (a negative sequence number, say), which cannot match any root."""
    try:
        return hashing.state_root(
            stream=hashing.stream_id(c.tenant_id, c.store_id),
            prev_state_root=c.prev_state_root,
            merkle_root=c.merkle_root,
            sequence_start=c.sequence_start,
            sequence_end=c.sequence_end,
            leaf_count=c.leaf_count,
        )
    except VesError:
        return None


def verify_chain(
    commitments: Sequence[ChainLink],
    *,
    first_start: int | None = None,
    prev_state_root: bytes = hashing.ZERO_HASH,
) -> None:
    """:func:`chain_faults`, raising :class:`BadProof` for the first fault found."""
    faults = chain_faults(commitments, first_start=first_start, prev_state_root=prev_state_root)
    if faults:
        raise BadProof(str(faults[0]))

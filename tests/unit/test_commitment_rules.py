"""The pure parts of the commitment engine: range rules, the tree cache's bound, and the
proof check the verify route runs (property-tested against the Merkle module)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.sequencer.commitments import (
    MAX_COMMIT_EVENTS,
    CommitmentError,
    CommitmentReason,
    TreeCache,
    check_proof,
    check_range,
)
from stateset_sequencer.ves import merkle
from stateset_sequencer.ves.errors import BadProof

LEAVES = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40)


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        (0, 1, CommitmentReason.INVALID_RANGE),
        (3, 2, CommitmentReason.INVALID_RANGE),
        (1, 2**63, CommitmentReason.INVALID_RANGE),
        (1, MAX_COMMIT_EVENTS + 1, CommitmentReason.RANGE_TOO_LARGE),
    ],
)
def test_bad_ranges(start: int, end: int, reason: CommitmentReason) -> None:
    with pytest.raises(CommitmentError) as refused:
        check_range(start, end)
    assert refused.value.reason is reason
    check_range(1, MAX_COMMIT_EVENTS)


def test_the_tree_cache_keeps_within_its_bound() -> None:
    cache = TreeCache(max_nodes=10)
    keys = [(uuid.uuid4(), uuid.uuid4()) for _ in range(3)]
    tree = merkle.tree_levels([bytes([i]) * 32 for i in range(4)])  # 4 + 2 + 1 nodes
    cache.put(keys[0], tree)
    assert cache.get(keys[0]) is tree
    cache.put(keys[1], tree)  # 14 nodes would not fit: the oldest goes
    assert cache.get(keys[0]) is None and cache.get(keys[1]) is tree
    cache.put(keys[2], merkle.tree_levels([bytes(32)] * 16))  # larger than the bound
    assert cache.get(keys[2]) is None and cache.get(keys[1]) is tree


@given(LEAVES, st.data())
def test_every_honest_proof_checks_and_wrong_directions_do_not(
    leaves: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle.inclusion_proof(leaves, index)
    root = merkle.merkle_root(leaves)
    path = list(proof.proof_path)
    assert check_proof(leaves[index], root, path, index, list(proof.directions)).valid
    assert check_proof(leaves[index], root, path, index).valid
    if path:
        flip = data.draw(st.integers(0, len(path) - 1))
        wrong = list(proof.directions)
        wrong[flip] = not wrong[flip]
        assert not check_proof(leaves[index], root, path, index, wrong).valid
        assert not check_proof(leaves[index], root, path[:-1], index).valid


def test_malformed_proofs_raise() -> None:
    with pytest.raises(BadProof):
        check_proof(bytes(32), bytes(32), [bytes(32)] * 65, 0)
    with pytest.raises(BadProof):
        check_proof(bytes(31), bytes(32), [], 0)
    with pytest.raises(BadProof):
        check_proof(bytes(32), bytes(32), [], -1)

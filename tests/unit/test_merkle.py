"""Merkle trees, inclusion proofs and the state-root chain (golden file + properties)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.ves import hashing, merkle
from stateset_sequencer.ves.errors import BadLength, BadProof

T, S = uuid.UUID(int=1), uuid.UUID(int=2)


def _golden_leaves(golden: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(ev["_leaf_hash"]) for ev in golden["golden_example"]["events"]]


def test_golden_batches(golden: dict[str, Any]) -> None:
    g = golden["golden_example"]
    leaves = _golden_leaves(golden)
    first = merkle.commit(T, S, 1, leaves[:3])
    b1 = g["batch1"]
    assert (first.sequence_start, first.sequence_end) == tuple(b1["range"])
    assert first.leaf_count == b1["leaf_count"]
    assert first.padded_leaf_count == b1["padded_leaf_count"]
    assert first.tree_depth == b1["tree_depth"]
    assert first.merkle_root.hex() == b1["merkle_root"]
    assert first.prev_state_root.hex() == b1["prev_state_root"]
    assert first.new_state_root.hex() == b1["new_state_root"]
    second = merkle.commit(T, S, 4, leaves[3:], first.new_state_root)
    b2 = g["batch2"]
    assert (second.sequence_start, second.sequence_end) == tuple(b2["range"])
    assert (second.leaf_count, second.padded_leaf_count, second.tree_depth) == (
        b2["leaf_count"],
        b2["padded_leaf_count"],
        b2["tree_depth"],
    )
    assert second.merkle_root.hex() == b2["merkle_root"]
    assert second.prev_state_root.hex() == b2["prev_state_root"]
    assert second.new_state_root.hex() == b2["new_state_root"]
    merkle.verify_chain([first, second])


def test_golden_proofs(golden: dict[str, Any]) -> None:
    leaves = _golden_leaves(golden)[:3]
    for expected in golden["golden_example"]["batch1"]["proofs"]:
        proof = merkle.inclusion_proof(leaves, expected["leaf_index"])
        assert proof.leaf_hash.hex() == expected["leaf_hash"]
        assert [p.hex() for p in proof.proof_path] == expected["proof_path"]
        assert list(proof.directions) == expected["directions"]
        merkle.verify_inclusion(
            proof.leaf_hash,
            bytes.fromhex(golden["golden_example"]["batch1"]["merkle_root"]),
            proof.proof_path,
            proof.leaf_index,
        )


def test_single_leaf_is_its_own_root(golden: dict[str, Any]) -> None:
    assert golden["golden_example"]["single_leaf_root_is_leaf"] is True
    leaf = _golden_leaves(golden)[0]
    assert merkle.merkle_root([leaf]) == leaf
    proof = merkle.inclusion_proof([leaf], 0)
    assert proof.proof_path == () and proof.directions == ()
    c = merkle.commit(T, S, 7, [leaf])
    assert (c.padded_leaf_count, c.tree_depth) == (1, 0)


def test_empty_tree_root_is_zero_and_cannot_be_committed() -> None:
    assert merkle.merkle_root([]) == bytes(32)
    with pytest.raises(BadProof):
        merkle.commit(T, S, 1, [])


def test_padding_uses_pad_leaf() -> None:
    a, b, c = (hashlib.sha256(bytes([i])).digest() for i in range(3))
    expected = hashing.node_hash(hashing.node_hash(a, b), hashing.node_hash(c, hashing.PAD_LEAF))
    assert merkle.merkle_root([a, b, c]) == expected


@pytest.mark.parametrize(
    ("n", "m"), [(0, 1), (1, 1), (2, 2), (3, 4), (5, 8), (1024, 1024), (1025, 2048)]
)
def test_next_pow2(n: int, m: int) -> None:
    assert merkle.next_pow2(n) == m


@given(st.integers(min_value=1, max_value=300), st.data())
def test_every_leaf_proves_and_any_flipped_bit_fails(n: int, data: st.DataObject) -> None:
    leaves = [
        hashlib.sha256(n.to_bytes(4, "big") + i.to_bytes(4, "big")).digest() for i in range(n)
    ]
    root = merkle.merkle_root(leaves)
    for index in range(n):
        proof = merkle.inclusion_proof(leaves, index)
        assert proof.merkle_root == root
        assert len(proof.proof_path) == merkle.next_pow2(n).bit_length() - 1
        assert merkle.is_included(proof.leaf_hash, root, proof.proof_path, index)
    index = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(leaves, index)
    parts = [proof.leaf_hash, root, *proof.proof_path]
    which = data.draw(st.integers(0, len(parts) - 1))
    bit = data.draw(st.integers(0, 255))
    corrupted = bytearray(parts[which])
    corrupted[bit // 8] ^= 1 << (bit % 8)
    parts[which] = bytes(corrupted)
    assert not merkle.is_included(parts[0], parts[1], parts[2:], index)
    if n > 1:
        wrong_index = (index + data.draw(st.integers(1, n - 1))) % n
        if leaves[wrong_index] != leaves[index]:
            assert not merkle.is_included(proof.leaf_hash, root, proof.proof_path, wrong_index)


def test_proof_faults() -> None:
    leaves = [bytes(32), bytes([1]) * 32]
    with pytest.raises(BadProof):
        merkle.inclusion_proof(leaves, 2)
    with pytest.raises(BadProof):
        merkle.root_from_proof(bytes(32), [bytes(32)] * 65, 0)
    with pytest.raises(BadProof):
        merkle.root_from_proof(bytes(32), [bytes(32)], 2)
    with pytest.raises(BadProof):
        merkle.root_from_proof(bytes(32), [bytes(31)], 0)
    with pytest.raises(BadProof):
        merkle.root_from_proof(bytes(32), [bytes(32)], -1)
    with pytest.raises(BadLength):
        merkle.merkle_root([bytes(31)])
    with pytest.raises(BadProof):
        merkle.commit(T, S, 0, leaves)


def test_verify_chain_catches_each_fault(golden: dict[str, Any]) -> None:
    leaves = _golden_leaves(golden)
    first = merkle.commit(T, S, 1, leaves[:3])
    second = merkle.commit(T, S, 4, leaves[3:], first.new_state_root)
    faults = [
        [first, replace(second, sequence_start=5, sequence_end=6)],
        [first, replace(second, leaf_count=3)],
        [first, replace(second, padded_leaf_count=4)],
        [first, replace(second, prev_state_root=bytes(32))],
        [first, replace(second, new_state_root=bytes(32))],
        [first, replace(second, merkle_root=first.merkle_root)],
        [replace(first, prev_state_root=second.new_state_root), second],
    ]
    for chain in faults:
        with pytest.raises(BadProof):
            merkle.verify_chain(chain)
    merkle.verify_chain([])

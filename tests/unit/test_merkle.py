"""Merkle trees, inclusion proofs and the state-root chain (golden file + properties)."""

from __future__ import annotations

import hashlib
import re
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


def _golden_chain(golden: dict[str, Any]) -> tuple[merkle.Commitment, merkle.Commitment]:
    leaves = _golden_leaves(golden)
    first = merkle.commit(T, S, 1, leaves[:3])
    return first, merkle.commit(T, S, 4, leaves[3:], first.new_state_root)


K = merkle.ChainFaultKind


def test_verify_chain_catches_each_fault(golden: dict[str, Any]) -> None:
    first, second = _golden_chain(golden)
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
        assert merkle.chain_faults(chain)
        with pytest.raises(BadProof):
            merkle.verify_chain(chain)
    merkle.verify_chain([])
    merkle.verify_chain([first, second])


def test_chain_faults_names_every_fault_with_its_place(golden: dict[str, Any]) -> None:
    first, second = _golden_chain(golden)
    assert merkle.chain_faults([first, second]) == []
    found = merkle.chain_faults(
        [first, replace(second, sequence_start=5, sequence_end=6), replace(second, tree_depth=9)]
    )
    assert [(f.kind, f.index, f.sequence_start) for f in found] == [
        (K.GAP, 1, 5),
        (K.NEW_ROOT, 1, 5),
        # The third is judged against the second as stored (5..6, its new root).
        (K.GAP, 2, 4),
        (K.TREE_DEPTH, 2, 4),
        (K.PREV_ROOT, 2, 4),
    ]
    assert str(found[0]) == "commitment 5..6: does not start at 4"
    with pytest.raises(BadProof, match=re.escape("commitment 5..6: does not start at 4")):
        merkle.verify_chain([first, replace(second, sequence_start=5, sequence_end=6)])


def test_padded_leaf_count_and_tree_depth_are_checked(golden: dict[str, Any]) -> None:
    first, second = _golden_chain(golden)
    padded = merkle.chain_faults([first, replace(second, padded_leaf_count=4)])
    assert [(f.kind, f.index) for f in padded] == [(K.PADDED_COUNT, 1)]
    assert str(padded[0]) == "commitment 4..5: padded_leaf_count 4, not 2 for 2 leaves"
    depth = merkle.chain_faults([replace(first, tree_depth=1), second])
    assert [(f.kind, f.index) for f in depth] == [(K.TREE_DEPTH, 0)]


def test_a_first_commitment_may_start_anywhere_unless_told(golden: dict[str, Any]) -> None:
    """VES_PROTOCOL §7.2: the first commitment of a stream may start anywhere, with a zero
    previous root; this sequencer's verifier asks for 1 (``first_start``)."""
    later = merkle.commit(T, S, 5, _golden_leaves(golden)[:2])
    assert merkle.chain_faults([later]) == []
    [gap] = merkle.chain_faults([later], first_start=1)
    assert (gap.kind, gap.index, gap.message) == (K.GAP, 0, "does not start at 1")
    assert [f.kind for f in merkle.chain_faults([replace(later, sequence_start=0)])] == [
        K.GAP,
        K.LEAF_COUNT,
        K.NEW_ROOT,
    ]


def test_a_continuation_chains_onto_a_given_root(golden: dict[str, Any]) -> None:
    first, second = _golden_chain(golden)
    assert merkle.chain_faults([second], first_start=4, prev_state_root=first.new_state_root) == []
    [broken] = merkle.chain_faults([second], first_start=4)
    assert broken.kind is K.PREV_ROOT


def _chain(n: int, sizes: list[int]) -> list[merkle.Commitment]:
    chain: list[merkle.Commitment] = []
    start, prev = 1, hashing.ZERO_HASH
    for size in sizes[:n]:
        leaves = [hashlib.sha256(f"{start + i}".encode()).digest() for i in range(size)]
        chain.append(merkle.commit(T, S, start, leaves, prev))
        start, prev = start + size, chain[-1].new_state_root
    return chain


SIZES = st.lists(st.integers(1, 9), min_size=1, max_size=12)
FIELDS = (
    "tenant_id",
    "sequence_start",
    "sequence_end",
    "leaf_count",
    "padded_leaf_count",
    "tree_depth",
    "merkle_root",
    "prev_state_root",
    "new_state_root",
)


@given(SIZES)
def test_a_valid_chain_of_any_length_has_no_faults(sizes: list[int]) -> None:
    chain = _chain(len(sizes), sizes)
    assert merkle.chain_faults(chain, first_start=1) == []
    merkle.verify_chain(chain, first_start=1)


def _changed(c: merkle.Commitment, name: str, delta: int) -> merkle.Commitment:
    value = getattr(c, name)
    changed: dict[str, Any]  # ``name`` is any field, so its value's type is not static
    if isinstance(value, bytes):
        changed = {name: bytes([value[0] ^ 1]) + value[1:]}
    elif isinstance(value, uuid.UUID):
        changed = {name: uuid.UUID(int=value.int ^ 1)}
    else:
        changed = {name: value + delta}
    return replace(c, **changed)


@given(SIZES, st.data())
def test_changing_any_one_field_gives_exactly_its_faults(
    sizes: list[int], data: st.DataObject
) -> None:
    chain = _chain(len(sizes), sizes)
    index = data.draw(st.integers(0, len(chain) - 1))
    name = data.draw(st.sampled_from(FIELDS))
    delta = data.draw(st.sampled_from([-1, 1, 2, 7]))
    c = chain[index]
    bad = _changed(c, name, delta)
    chain[index] = bad
    here = {
        "tenant_id": {K.NEW_ROOT},
        "sequence_start": {K.GAP, K.LEAF_COUNT, K.NEW_ROOT},
        "sequence_end": {K.LEAF_COUNT, K.NEW_ROOT},
        "leaf_count": {K.LEAF_COUNT, K.NEW_ROOT},
        "padded_leaf_count": {K.PADDED_COUNT},
        "tree_depth": {K.TREE_DEPTH},
        "merkle_root": {K.NEW_ROOT},
        "prev_state_root": {K.PREV_ROOT, K.NEW_ROOT},
        "new_state_root": {K.NEW_ROOT},
    }[name]
    if name == "leaf_count" and merkle.next_pow2(bad.leaf_count) != c.padded_leaf_count:
        # Padding and depth follow from leaf_count: wrong for the new count when its
        # power of two differs.
        here = here | {K.PADDED_COUNT, K.TREE_DEPTH}
    expected = {(kind, index) for kind in here}
    if index + 1 < len(chain):
        # The next commitment is judged against this one as stored.
        if name == "sequence_end":
            expected.add((K.GAP, index + 1))
        if name == "new_state_root":
            expected.add((K.PREV_ROOT, index + 1))
    found = merkle.chain_faults(chain, first_start=1)
    assert {(f.kind, f.index) for f in found} == expected
    assert len(found) == len(expected)

"""Anchor calldata, selectors and Keccak-256 (the known answers of the Keccak the project
once carried itself, now held against eth-hash's)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from stateset_sequencer.ves import anchor, merkle
from stateset_sequencer.ves.anchor import keccak256
from stateset_sequencer.ves.errors import BadInteger, BadLength


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
        # Around the 136-byte rate, where padding takes a block of its own: the answers
        # of the sponge this project carried before it used eth-hash.
        (b"a" * 136, "a6c4d403279fe3e0af03729caada8374b5ca54d8065329a3ebcaeb4b60aa386e"),
        (b"a" * 137, "d869f639c7046b4929fc92a4d988a8b22c55fbadb802c0c66ebcd484f1915f39"),
        (b"a" * 200, None),
    ],
)
def test_keccak256(data: bytes, digest: str | None) -> None:
    if digest is not None:
        assert keccak256(data).hex() == digest
    assert len(keccak256(data)) == 32
    assert keccak256(data) != keccak256(data + b"\x00")


def test_selector_is_keccak_of_signature(golden: dict[str, Any]) -> None:
    a = golden["golden_example"]["anchor"]
    assert a["signature"] == anchor.ANCHOR_SIGNATURE
    assert anchor.function_selector(anchor.ANCHOR_SIGNATURE) == anchor.ANCHOR_SELECTOR
    assert anchor.ANCHOR_SELECTOR.hex() == a["selector"] == "012f9824"
    # Other documented selectors of StateSetAnchor.
    assert anchor.function_selector("isAnchored(bytes32)").hex() == "4f0b5801"


def test_golden_calldata(golden: dict[str, Any]) -> None:
    g = golden["golden_example"]
    leaves = [bytes.fromhex(ev["_leaf_hash"]) for ev in g["events"][:3]]
    c = merkle.commit(uuid.UUID(int=1), uuid.UUID(int=2), 1, leaves)
    batch_id = uuid.UUID(g["anchor"]["calldata_batch1"][8:40])
    data = anchor.anchor_calldata(
        batch_id=batch_id,
        tenant_id=c.tenant_id,
        store_id=c.store_id,
        events_root=c.merkle_root,
        state_root=c.new_state_root,
        sequence_start=c.sequence_start,
        sequence_end=c.sequence_end,
        event_count=c.leaf_count,
    )
    assert data.hex() == g["anchor"]["calldata_batch1"]
    assert len(data) == 4 + 8 * 32
    assert (
        anchor.latest_sequence_key(uuid.UUID(int=1), uuid.UUID(int=2)).hex()
        == (g["anchor"]["latestSequence_key"])
    )


def test_uuid_left_aligned() -> None:
    u = uuid.UUID("d982e688-bc8e-4cb3-ba26-b7777a98c526")
    assert anchor.uuid_to_bytes32(u) == u.bytes + bytes(16)


def test_calldata_range_checks() -> None:
    base: dict[str, Any] = {
        "batch_id": uuid.UUID(int=1),
        "tenant_id": uuid.UUID(int=1),
        "store_id": uuid.UUID(int=1),
        "events_root": bytes(32),
        "state_root": bytes(32),
        "sequence_start": 1,
        "sequence_end": 1,
        "event_count": 1,
    }
    anchor.anchor_calldata(**base)
    with pytest.raises(BadInteger):
        anchor.anchor_calldata(**(base | {"event_count": 2**32}))
    with pytest.raises(BadInteger):
        anchor.anchor_calldata(**(base | {"sequence_end": -1}))
    with pytest.raises(BadLength):
        anchor.anchor_calldata(**(base | {"events_root": bytes(31)}))


@pytest.mark.parametrize(
    ("signature", "selector"),
    [
        ("transfer(address,uint256)", "a9059cbb"),
        (anchor.COMMIT_BATCH_SIGNATURE, "d38f6b8b"),
        ("batchExists(bytes32)", "ecd144a7"),
        ("getHeadSequence(bytes32,bytes32)", "c13b23c2"),
        ("getBatchCommitment(bytes32)", "7271b18a"),
    ],
)
def test_selectors(signature: str, selector: str) -> None:
    assert anchor.function_selector(signature).hex() == selector
    assert anchor.function_selector(anchor.COMMIT_BATCH_SIGNATURE) == anchor.COMMIT_BATCH_SELECTOR


def test_batch_committed_topic() -> None:
    assert (
        anchor.event_topic(anchor.BATCH_COMMITTED_SIGNATURE).hex()
        == "1b2cc50ea54dce1d372450a8dc503a51775ab92dc7e68d579ce3fbb4af25cab3"
    )


def test_commit_batch_calldata_layout(golden: dict[str, Any]) -> None:
    """The nine words of commitBatch: the 0.2.7 words with the previous state root between
    the events root and the new one, for the golden example's second commitment too."""
    g = golden["golden_example"]
    leaves = [bytes.fromhex(ev["_leaf_hash"]) for ev in g["events"]]
    first = merkle.commit(uuid.UUID(int=1), uuid.UUID(int=2), 1, leaves[:3])
    second = merkle.commit(
        uuid.UUID(int=1), uuid.UUID(int=2), 4, leaves[3:], prev_state_root=first.new_state_root
    )
    batch = uuid.UUID(g["anchor"]["calldata_batch1"][8:40])
    legacy = anchor.commitment_calldata(batch, first)
    assert legacy[:4].hex() == "d38f6b8b" and len(legacy) == 4 + 9 * 32
    old = bytes.fromhex(g["anchor"]["calldata_batch1"])
    words = [legacy[4 + 32 * i : 36 + 32 * i] for i in range(9)]
    old_words = [old[4 + 32 * i : 36 + 32 * i] for i in range(8)]
    assert words[:4] == old_words[:4] and words[5:] == old_words[4:]
    assert words[4] == bytes(32)  # the first commitment chains from zeros
    data = anchor.commitment_calldata(batch, second)
    assert data[4 + 4 * 32 : 4 + 5 * 32] == first.new_state_root
    assert data[4 + 5 * 32 : 4 + 6 * 32] == second.new_state_root
    assert int.from_bytes(data[4 + 6 * 32 : 4 + 7 * 32], "big") == 4
    assert int.from_bytes(data[4 + 8 * 32 :], "big") == second.leaf_count


def test_bytes32_uuid_round_trip() -> None:
    u = uuid.uuid4()
    assert anchor.bytes32_to_uuid(anchor.uuid_to_bytes32(u)) == u
    assert anchor.bytes32_to_uuid(bytes(31)) is None
    assert anchor.bytes32_to_uuid(u.bytes + b"\x01" + bytes(15)) is None

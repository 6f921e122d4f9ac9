"""Anchor calldata, selector and Keccak-256."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from stateset_sequencer.ves import anchor, merkle
from stateset_sequencer.ves.errors import BadInteger, BadLength
from stateset_sequencer.ves.keccak import keccak256


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
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
    data = anchor.commitment_calldata(batch_id, c)
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

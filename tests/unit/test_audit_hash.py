"""The audit chain's canonical entry and hash (``ves.audit``): the worked example of
docs/PROTOCOL.md recomputed by hand, and properties: every field is covered, the chain
order matters, and the encoding is the same whatever order a mapping holds its keys in."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.sequencer.audit import (
    AuditBreak,
    ChainWalk,
    CheckpointError,
    entry_hash_of,
    parse_checkpoint,
)
from stateset_sequencer.store.records import AuditEntry
from stateset_sequencer.store.rows import chained
from stateset_sequencer.ves.audit import (
    AUDIT_HASHED_FIELDS,
    GENESIS_HASH,
    audit_entry_hash,
    audit_time_text,
    canonical_audit_entry,
)

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"

FIRST: dict[str, Any] = {
    "chain_seq": 1,
    "id": uuid.UUID("6f1c2a4e-0b7d-4c3a-9e58-2d4f6a8b0c1e"),
    "timestamp": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    "action": "api_key.create",
    "actor": "sequencer-cli",
    "actor_type": "cli",
    "tenant_id": uuid.UUID("00000000-0000-0000-0000-0000000000a1"),
    "resource_type": "api_key",
    "resource_id": "3f9a0c5b7d2e4f61",
    "request_id": None,
    "ip_address": None,
    "user_agent": None,
    "details": {"permissions": "admin", "store_ids": [], "bootstrap": False},
    "success": True,
    "error_message": None,
}
FIRST_JCS = (
    '{"action":"api_key.create","actor":"sequencer-cli","actor_type":"cli","chain_seq":1,'
    '"details":{"bootstrap":false,"permissions":"admin","store_ids":[]},'
    '"error_message":null,"id":"6f1c2a4e-0b7d-4c3a-9e58-2d4f6a8b0c1e","ip_address":null,'
    '"request_id":null,"resource_id":"3f9a0c5b7d2e4f61","resource_type":"api_key",'
    '"success":true,"tenant_id":"00000000-0000-0000-0000-0000000000a1",'
    '"timestamp":"2026-01-02T03:04:05.000006Z","user_agent":null}'
)
FIRST_HASH = "cdb3f1969bf726a6eda9fcb2e41037f15f443d10d6b7c11fab50310590ecd4c2"
SECOND = {
    **FIRST,
    "chain_seq": 2,
    "id": uuid.UUID("0a0b0c0d-0e0f-4010-8111-213141516171"),
    "timestamp": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
    "action": "api_key.revoke",
    "details": {},
    "success": False,
    "error_message": "déjà revoked",
}
SECOND_HASH = "447d11b92dc59260f770703782f76eafa76a657120b311ce3b1b74516f5bde70"


def test_worked_example_by_hand() -> None:
    assert canonical_audit_entry(FIRST) == FIRST_JCS.encode()
    by_hand = hashlib.sha256(b"SEQ_AUDIT_V1" + bytes(32) + FIRST_JCS.encode()).hexdigest()
    assert by_hand == FIRST_HASH == audit_entry_hash(GENESIS_HASH, FIRST).hex()
    second = audit_entry_hash(bytes.fromhex(FIRST_HASH), SECOND)
    assert second.hex() == SECOND_HASH


def test_worked_example_is_the_documented_one() -> None:
    text = PROTOCOL.read_text(encoding="utf-8")
    for part in (FIRST_JCS, FIRST_HASH, SECOND_HASH):
        assert part in text


def test_time_text_is_utc_with_six_digits() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert audit_time_text(datetime(2026, 1, 2, 5, 4, 5, tzinfo=plus_two)) == (
        "2026-01-02T03:04:05.000000Z"
    )
    with pytest.raises(ValueError, match="time zone"):
        audit_time_text(datetime(2026, 1, 2))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chain_seq", 0),
        ("chain_seq", True),
        ("id", "6f1c2a4e-0b7d-4c3a-9e58-2d4f6a8b0c1e"),
        ("tenant_id", "x"),
        ("timestamp", "2026-01-02"),
        ("success", 1),
        ("details", []),
        ("action", None),
        ("user_agent", 5),
    ],
)
def test_wrong_types_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        canonical_audit_entry({**FIRST, field: value})


# --- properties -------------------------------------------------------------------------

TEXT = st.text(max_size=20)
CHANGES: dict[str, st.SearchStrategy[Any]] = {
    "chain_seq": st.integers(min_value=1, max_value=2**53),
    "id": st.uuids(),
    "timestamp": st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    "action": TEXT,
    "actor": TEXT,
    "actor_type": TEXT,
    "tenant_id": st.none() | st.uuids(),
    "resource_type": st.none() | TEXT,
    "resource_id": st.none() | TEXT,
    "request_id": st.none() | TEXT,
    "ip_address": st.none() | TEXT,
    "user_agent": st.none() | TEXT,
    "details": st.dictionaries(TEXT, st.none() | st.integers(-(2**53), 2**53) | TEXT, max_size=3),
    "success": st.booleans(),
    "error_message": st.none() | TEXT,
}


@given(st.sampled_from(AUDIT_HASHED_FIELDS).flatmap(lambda f: st.tuples(st.just(f), CHANGES[f])))
def test_changing_any_field_changes_the_hash(change: tuple[str, Any]) -> None:
    field, value = change
    if FIRST[field] == value:
        return
    assert audit_entry_hash(GENESIS_HASH, {**FIRST, field: value}) != bytes.fromhex(FIRST_HASH)


@given(st.binary(min_size=32, max_size=32))
def test_the_previous_hash_is_bound(previous: bytes) -> None:
    if previous != GENESIS_HASH:
        assert audit_entry_hash(previous, FIRST) != bytes.fromhex(FIRST_HASH)


@given(st.permutations(list(FIRST)))
def test_key_order_of_the_input_does_not_matter(order: list[str]) -> None:
    assert canonical_audit_entry({k: FIRST[k] for k in order}) == FIRST_JCS.encode()


def chain_of(actions: list[str]) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    tail = GENESIS_HASH
    for n, action in enumerate(actions):
        entry = chained(
            AuditEntry(action=action, actor="a", actor_type="t", timestamp=FIRST["timestamp"]),
            n,
            tail,
        )
        tail = entry.entry_hash or GENESIS_HASH
        out.append(entry)
    return out


@given(st.lists(TEXT, min_size=2, max_size=6, unique=True), st.data())
def test_chain_order_matters(actions: list[str], data: st.DataObject) -> None:
    chain = chain_of(actions)
    assert all(entry_hash_of(e) == e.entry_hash for e in chain)
    walk = ChainWalk()
    assert walk.feed(chain) and walk.entries == len(chain)
    # Two entries swapped (their chain_seq kept in place): the walk stops at the first.
    i = data.draw(st.integers(0, len(chain) - 2))
    swapped = list(chain)
    swapped[i], swapped[i + 1] = (
        replace(chain[i + 1], chain_seq=chain[i].chain_seq),
        replace(chain[i], chain_seq=chain[i + 1].chain_seq),
    )
    walk = ChainWalk()
    assert not walk.feed(swapped)
    assert walk.fault is not None and walk.fault.chain_seq == i + 1


def test_walk_names_each_kind_of_break() -> None:
    chain = chain_of(["a", "b", "c"])
    edited = [chain[0], replace(chain[1], actor="mallory"), chain[2]]
    gap = [chain[0], chain[2]]
    rehashed = [chain[0], chained(replace(chain[1], actor="m"), 1, GENESIS_HASH), chain[2]]
    for entries, seq, reason in (
        (edited, 2, AuditBreak.ENTRY_HASH),
        (gap, 2, AuditBreak.MISSING),
        (rehashed, 2, AuditBreak.PREVIOUS_HASH),
    ):
        walk = ChainWalk()
        assert not walk.feed(entries)
        assert walk.fault is not None
        assert (walk.fault.chain_seq, walk.fault.reason) == (seq, reason)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "SEQ:HASH"),
        ("12", "SEQ:HASH"),
        ("x:" + "00" * 32, "SEQ:HASH"),
        ("-1:" + "00" * 32, "SEQ:HASH"),
        ("0:" + "00" * 32, "starts at 1"),
        ("3:abcd", "32 bytes"),
        ("3:" + "00" * 33, "32 bytes"),
        ("3:" + "zz" * 32, "SEQ:HASH"),
    ],
)
def test_malformed_checkpoints_are_refused(text: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        parse_checkpoint(text)


def test_checkpoint_round_trip() -> None:
    text = f"7:{FIRST_HASH.upper()}"
    mark = parse_checkpoint(text)
    assert mark.chain_seq == 7 and str(mark) == f"7:{FIRST_HASH}"

"""Ed25519 over VES hashes: key forms, strictness, RFC 8032 and the golden signatures."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.testing.kit import LegacyUnsignedReceipts
from stateset_sequencer.ves import hashing, signing
from stateset_sequencer.ves.errors import (
    BadKey,
    BadLength,
    BadSignature,
    ReceiptHashMismatch,
    ReceiptInvalid,
    ReceiptSignatureInvalid,
    VesError,
)

# Encodings of points of small order (the 8-torsion subgroup), which must never be keys.
SMALL_ORDER_KEYS = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
]
# y = p (not reduced): a non-canonical encoding of a point.
NON_CANONICAL_KEY = "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"


class _ReceiptSubject(TypedDict):
    """What ``verify_receipt`` checks a receipt against, besides the key."""

    tenant_id: uuid.UUID
    store_id: uuid.UUID
    event_signing_hash: bytes


def test_key_generation_vectors(sig_vectors: dict[str, Any]) -> None:
    for case in sig_vectors["key_generation"]["vectors"]:
        signer = signing.Signer(case["seed_hex"])
        assert signer.public_key.hex() == case["public_key_hex"]
        assert signing.parse_public_key(case["public_key_hex"]) == signer.public_key


def test_rfc8032_signatures_verify(sig_vectors: dict[str, Any]) -> None:
    for case in sig_vectors["ed25519_signatures"]["vectors"]:
        pk = bytes.fromhex(case["public_key_hex"])
        sig = bytes.fromhex(case["signature_hex"])
        msg = bytes.fromhex(case["message_hex"])
        signing.verify(pk, msg, sig)
        with pytest.raises(BadSignature):
            signing.verify(pk, msg + b"!", sig)


def test_golden_signatures_reproduce(golden: dict[str, Any]) -> None:
    g = golden["golden_example"]
    signer = signing.Signer(g["signing_key_seed"])
    assert signer.public_key.hex() == g["public_key"]
    for ev in g["events"]:
        esh = bytes.fromhex(ev["_event_signing_hash"])
        assert "0x" + signer.sign(esh).hex() == ev["agent_signature"]
        signing.verify(signer.public_key, esh, signing.parse_signature(ev["agent_signature"]))


def test_full_signing_placeholder(golden: dict[str, Any]) -> None:
    computed = golden["computed_placeholders"]["ves_sig_1_test_vectors.json"]
    signer = signing.Signer("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    esh = bytes.fromhex(computed["full_signing:event_signing_hash"][2:])
    assert "0x" + signer.sign(esh).hex() == computed["full_signing:agent_signature"]


def test_signing_is_deterministic(sig_vectors: dict[str, Any], golden: dict[str, Any]) -> None:
    case = sig_vectors["ed25519_signatures"]["determinism_test"]
    import nacl.signing

    key = nacl.signing.SigningKey(bytes.fromhex(case["private_key_hex"]))
    msg = bytes.fromhex(case["message_hex"])
    first = key.sign(msg).signature
    assert first == key.sign(msg).signature
    expected = golden["computed_placeholders"]["ves_sig_1_test_vectors.json"][
        "ed25519:determinism_signature"
    ]
    assert first.hex() == expected


@pytest.mark.parametrize("key", [*SMALL_ORDER_KEYS, NON_CANONICAL_KEY])
def test_small_order_and_non_canonical_keys_refused(key: str) -> None:
    with pytest.raises(BadKey):
        signing.parse_public_key(key)


def test_small_order_key_cannot_verify_anything() -> None:
    with pytest.raises(BadSignature):
        signing.verify(bytes.fromhex(SMALL_ORDER_KEYS[0]), bytes(32), bytes(64))


def test_non_canonical_s_refused() -> None:
    signer = signing.Signer(bytes(32))
    sig = signer.sign(bytes(32))
    s = int.from_bytes(sig[32:], "little") + signing.ED25519_L
    malleated = sig[:32] + s.to_bytes(32, "little")
    with pytest.raises(BadSignature):
        signing.parse_signature(malleated)
    with pytest.raises(BadSignature):
        signing.verify(signer.public_key, bytes(32), malleated)


@pytest.mark.parametrize("text", ["0x" + "00" * 63, "zz" * 64, "00" * 65])
def test_bad_signature_text(text: str) -> None:
    with pytest.raises(BadSignature):
        signing.parse_signature(text)


def test_signature_type_errors() -> None:
    with pytest.raises(BadSignature):
        signing.parse_signature(12)  # type: ignore[arg-type]
    with pytest.raises(BadSignature):
        signing.parse_signature(b"\x00" * 63)


def test_key_text_forms_for_seeds() -> None:
    seed = bytes(range(32))
    forms = [
        seed.hex(),
        "0x" + seed.hex(),
        base64.b64encode(seed).decode(),
        base64.urlsafe_b64encode(seed).decode().rstrip("="),
    ]
    publics = {signing.Signer(f).public_key for f in forms}
    assert len(publics) == 1


@pytest.mark.parametrize("value", ["", "00", b"\x00" * 31, 7])
def test_bad_seed(value: Any) -> None:
    with pytest.raises(BadKey):
        signing.parse_seed(value)


def test_signer_signs_only_32_byte_hashes() -> None:
    with pytest.raises(BadLength):
        signing.Signer(bytes(32)).sign(b"short")


def test_verify_length_checks() -> None:
    with pytest.raises(BadKey):
        signing.verify(bytes(31), bytes(32), bytes(64))
    with pytest.raises(BadSignature):
        signing.verify(bytes(32), bytes(32), bytes(63))


@given(
    st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), st.integers(0, 511)
)
def test_sign_verify_round_trip_and_any_flipped_bit_fails(
    seed: bytes, digest: bytes, bit: int
) -> None:
    signer = signing.Signer(seed)
    sig = signer.sign(digest)
    signing.verify(signer.public_key, digest, sig)
    flipped = bytearray(sig)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert not signing.is_valid(signer.public_key, digest, bytes(flipped))
    other = bytearray(digest)
    other[bit % 32] ^= 1
    assert not signing.is_valid(signer.public_key, bytes(other), sig)


# --- receipts ---------------------------------------------------------------------------


def _golden_receipt(golden: dict[str, Any], seed: bytes | None) -> tuple[signing.Receipt, Any]:
    """``seed`` None: the receipt a keyless sequencer stored before receipts were always
    signed."""
    ev = golden["golden_example"]["events"][0]
    issuer = (
        signing.ReceiptSigner(uuid.UUID(int=99), seed)
        if seed is not None
        else LegacyUnsignedReceipts(uuid.UUID(int=99))
    )
    receipt = issuer.issue(
        tenant_id=uuid.UUID(ev["tenant_id"]),
        store_id=uuid.UUID(ev["store_id"]),
        event_id=uuid.UUID(ev["event_id"]),
        sequence_number=ev["_sequence_number"],
        event_signing_hash=bytes.fromhex(ev["_event_signing_hash"]),
        sequenced_at=datetime(2025, 1, 1, 0, 0, 1, 500000, UTC),
    )
    return receipt, (issuer, ev)


def test_receipt_signed_and_verified(golden: dict[str, Any]) -> None:
    receipt, (issuer, ev) = _golden_receipt(golden, bytes([5]) * 32)
    assert receipt.receipt_hash.hex() == ev["_receipt_hash"]
    assert receipt.signature_alg == "ed25519" and not receipt.unsigned
    assert receipt.sequenced_at == "2025-01-01T00:00:01.500+00:00"
    wire = receipt.to_wire()
    assert wire["receiptHash"] == ev["_receipt_hash"]
    assert len(wire["sequencerSignature"]) == 128 and not wire["sequencerSignature"].startswith(
        "0x"
    )
    assert signing.Receipt.from_wire(wire) == receipt
    kwargs: _ReceiptSubject = {
        "tenant_id": uuid.UUID(ev["tenant_id"]),
        "store_id": uuid.UUID(ev["store_id"]),
        "event_signing_hash": bytes.fromhex(ev["_event_signing_hash"]),
    }
    signing.verify_receipt(receipt, sequencer_public_key=issuer.public_key, **kwargs)
    with pytest.raises(ReceiptSignatureInvalid, match="signature does not verify"):
        signing.verify_receipt(
            receipt, sequencer_public_key=signing.Signer(bytes(32)).public_key, **kwargs
        )
    bad: _ReceiptSubject = {**kwargs, "event_signing_hash": bytes(32)}
    with pytest.raises(ReceiptHashMismatch):
        signing.verify_receipt(receipt, sequencer_public_key=issuer.public_key, **bad)
    # The hash is checked first, and without a key only the hash.
    with pytest.raises(ReceiptHashMismatch):
        signing.verify_receipt(receipt, sequencer_public_key=None, **bad)


def test_receipt_signer_has_no_unsigned_mode() -> None:
    with pytest.raises(BadKey):
        signing.ReceiptSigner(uuid.UUID(int=1), None)  # type: ignore[arg-type]


def test_legacy_unsigned_receipt_is_read_as_data(golden: dict[str, Any]) -> None:
    receipt, (_issuer, ev) = _golden_receipt(golden, None)
    assert receipt.signature_alg == "none" and receipt.unsigned
    assert receipt.to_wire()["sequencerSignature"] == ""
    assert signing.Receipt.from_wire(receipt.to_wire()) == receipt
    with pytest.raises(ReceiptSignatureInvalid, match="not Ed25519-signed"):
        signing.verify_receipt(
            receipt,
            tenant_id=uuid.UUID(ev["tenant_id"]),
            store_id=uuid.UUID(ev["store_id"]),
            event_signing_hash=bytes.fromhex(ev["_event_signing_hash"]),
            sequencer_public_key=signing.Signer(bytes(32)).public_key,
        )


@pytest.mark.parametrize(
    "change",
    [
        {"sequenceNumber": "1"},
        {"sequenceNumber": True},
        {"receiptHash": "zz"},
        {"eventId": "nope"},
        {"sequencerSignature": "00"},
        {"sequencedAt": 5},
    ],
)
def test_receipt_from_wire_refuses_malformed(
    golden: dict[str, Any], change: dict[str, Any]
) -> None:
    receipt, _ = _golden_receipt(golden, bytes([5]) * 32)
    from stateset_sequencer.ves.errors import VesError

    with pytest.raises(VesError):
        signing.Receipt.from_wire(receipt.to_wire() | change)


def test_receipt_from_wire_missing_field(golden: dict[str, Any]) -> None:
    receipt, _ = _golden_receipt(golden, bytes([5]) * 32)
    wire = receipt.to_wire()
    del wire["receiptHash"]
    with pytest.raises(BadLength):
        signing.Receipt.from_wire(wire)


def test_receipt_hash_ignores_sequencer_id_and_time() -> None:
    t = uuid.UUID(int=1)
    a = signing.ReceiptSigner(uuid.UUID(int=2), bytes([2]) * 32).issue(
        tenant_id=t,
        store_id=t,
        event_id=t,
        sequence_number=1,
        event_signing_hash=bytes(32),
        sequenced_at="x",
    )
    b = signing.ReceiptSigner(uuid.UUID(int=3), bytes([3]) * 32).issue(
        tenant_id=t,
        store_id=t,
        event_id=t,
        sequence_number=1,
        event_signing_hash=bytes(32),
        sequenced_at="y",
    )
    assert a.receipt_hash == b.receipt_hash == hashing.receipt_hash(t, t, t, 1, bytes(32))


def test_receipt_errors_are_typed_and_stay_bad_signatures() -> None:
    """Callers written before the two kinds were told apart catch ``BadSignature`` (or
    any ``VesError``, as the client SDK does); new callers tell them apart by type."""
    for kind in (ReceiptHashMismatch, ReceiptSignatureInvalid):
        assert issubclass(kind, ReceiptInvalid)
        assert issubclass(kind, BadSignature) and issubclass(kind, VesError)
    assert not issubclass(ReceiptHashMismatch, ReceiptSignatureInvalid)
    assert not issubclass(ReceiptSignatureInvalid, ReceiptHashMismatch)


def test_verify_receipt_uses_the_signature_check_given(golden: dict[str, Any]) -> None:
    receipt, (issuer, ev) = _golden_receipt(golden, bytes([5]) * 32)
    kwargs: dict[str, Any] = {
        "tenant_id": uuid.UUID(ev["tenant_id"]),
        "store_id": uuid.UUID(ev["store_id"]),
        "event_signing_hash": bytes.fromhex(ev["_event_signing_hash"]),
        "sequencer_public_key": issuer.public_key,
    }
    calls: list[tuple[bytes, bytes, bytes]] = []

    def accepting(key: bytes, digest: bytes, signature: bytes) -> None:
        calls.append((key, digest, signature))

    signing.verify_receipt(receipt, check_signature=accepting, **kwargs)
    assert calls == [(issuer.public_key, receipt.receipt_hash, receipt.sequencer_signature)]

    def refusing(key: bytes, digest: bytes, signature: bytes) -> None:
        raise BadSignature("signature does not verify")

    with pytest.raises(ReceiptSignatureInvalid, match="receipt signature does not verify"):
        signing.verify_receipt(receipt, check_signature=refusing, **kwargs)


def test_receipts_issued_in_bulk_match_the_golden_receipt(golden: dict[str, Any]) -> None:
    receipt, (issuer, ev) = _golden_receipt(golden, bytes([5]) * 32)
    [bulk] = issuer.issue_many(
        tenant_id=uuid.UUID(ev["tenant_id"]),
        store_id=uuid.UUID(ev["store_id"]),
        events=[
            (
                uuid.UUID(ev["event_id"]),
                ev["_sequence_number"],
                bytes.fromhex(ev["_event_signing_hash"]),
            )
        ],
        sequenced_at=datetime(2025, 1, 1, 0, 0, 1, 500000, UTC),
    )
    assert bulk == receipt
    assert bulk.receipt_hash.hex() == ev["_receipt_hash"]


@given(
    st.lists(
        st.tuples(st.uuids(), st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32)),
        max_size=12,
    ),
    st.uuids(),
    st.uuids(),
    st.datetimes(timezones=st.just(UTC)),
)
def test_bulk_receipts_are_the_single_ones_byte_for_byte(
    events: list[tuple[uuid.UUID, int, bytes]],
    tenant: uuid.UUID,
    store: uuid.UUID,
    at: datetime,
) -> None:
    issuer = signing.ReceiptSigner(uuid.UUID(int=9), bytes([7]) * 32)
    bulk = issuer.issue_many(tenant_id=tenant, store_id=store, events=events, sequenced_at=at)
    single = [
        issuer.issue(
            tenant_id=tenant,
            store_id=store,
            event_id=event_id,
            sequence_number=seq,
            event_signing_hash=esh,
            sequenced_at=at,
        )
        for event_id, seq, esh in events
    ]
    assert bulk == single
    assert hashing.receipt_hashes(tenant, store, events) == [r.receipt_hash for r in single]

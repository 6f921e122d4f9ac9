"""The envelope model: strict parsing, per-event validation order and reasons, signing."""

from __future__ import annotations

import copy
import uuid
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from stateset_sequencer.ves import envelope, hashing, signing, storable
from stateset_sequencer.ves.errors import EnvelopeInvalid

SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
SIGNER = signing.Signer(SEED)
RECIPIENT_SK = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RECIPIENT_PK = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def golden_wire(golden: dict[str, Any], index: int = 0) -> dict[str, Any]:
    ev = {
        k: v for k, v in golden["golden_example"]["events"][index].items() if not k.startswith("_")
    }
    return copy.deepcopy(ev)


def make(**overrides: Any) -> envelope.VesEventEnvelope:
    base: dict[str, Any] = {
        "signer": SIGNER,
        "tenant_id": uuid.UUID(int=1),
        "store_id": uuid.UUID(int=2),
        "source_agent_id": uuid.UUID(int=3),
        "entity_type": "order",
        "entity_id": "ORD-1",
        "event_type": "order.created",
        "created_at": "2025-01-01T00:00:00Z",
        "payload": {"n": 1},
    }
    return envelope.sign_event(**(base | overrides))


def resign(wire: dict[str, Any]) -> envelope.VesEventEnvelope:
    """Parse a wire object, then re-sign it so only the field under test is wrong."""
    env = envelope.parse_envelope(wire)
    sig = SIGNER.sign(env.signing_hash())
    return env.model_copy(update={"agent_signature": sig})


def test_golden_events_parse_validate_and_verify(golden: dict[str, Any]) -> None:
    for i, ev in enumerate(golden["golden_example"]["events"]):
        env = envelope.parse_envelope(golden_wire(golden, i))
        digest = envelope.validate(env)
        assert digest.hex() == ev["_event_signing_hash"]
        envelope.verify_signature(env, SIGNER.public_key, digest)
        assert env.to_wire() == golden_wire(golden, i)


def test_parse_from_json_text_keeps_created_at_verbatim(golden: dict[str, Any]) -> None:
    import json

    wire = golden_wire(golden) | {"created_at": "2025-01-01T00:00:00.000+00:00"}
    env = envelope.parse_envelope_json(json.dumps(wire))
    assert env.created_at == "2025-01-01T00:00:00.000+00:00"


def test_sign_event_round_trip() -> None:
    env = make()
    assert envelope.validate(env) == env.signing_hash()
    envelope.verify_signature(env, SIGNER.public_key, env.signing_hash())
    again = envelope.parse_envelope(env.to_wire())
    assert again == env


def test_sign_event_encrypted_round_trip() -> None:
    from stateset_sequencer.ves import encryption

    env = make(recipients=[(1, RECIPIENT_PK)], payload={"secret": "x", "n": 2})
    assert env.payload_kind == 1 and env.payload is None and env.payload_encrypted is not None
    digest = envelope.validate(env)
    envelope.verify_signature(env, SIGNER.public_key, digest)
    wire = env.to_wire()
    assert "payload" not in wire
    plain = encryption.decrypt_payload(
        wire["payload_encrypted"],
        tenant_id=env.tenant_id,
        store_id=env.store_id,
        event_id=env.event_id,
        source_agent_id=env.source_agent_id,
        agent_key_id=env.agent_key_id,
        entity_type=env.entity_type,
        entity_id=env.entity_id,
        event_type=env.event_type,
        created_at=env.created_at,
        payload_plain_hash=env.payload_plain_hash,
        recipient_kid=1,
        recipient_private_key=RECIPIENT_SK,
    )
    assert plain == {"secret": "x", "n": 2}


# --- strict parsing (whole-request faults) ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ves_version", False),
        ("ves_version", "1"),
        ("ves_version", 1.0),
        ("ves_version", -1),
        ("agent_key_id", True),
        ("agent_key_id", 2**32),
        ("agent_key_id", None),
        ("payload_kind", 2),
        ("payload_kind", True),
        ("payload_kind", "0"),
        ("event_id", "not-a-uuid"),
        ("tenant_id", 12),
        ("entity_type", 5),
        ("created_at", 1735689600),
        ("payload_plain_hash", "0x1234"),
        ("payload_plain_hash", "zz" * 32),
        ("payload_cipher_hash", 0),
        ("agent_signature", "0x" + "00" * 63),
        ("base_version", -1),
        ("base_version", 2**64),
        ("base_version", "3"),
        ("command_id", "x"),
        ("payload_encrypted", "blob"),
    ],
)
def test_wrong_types_are_parse_errors(golden: dict[str, Any], field: str, value: Any) -> None:
    wire = golden_wire(golden) | {field: value}
    with pytest.raises(ValidationError):
        envelope.parse_envelope(wire)


@pytest.mark.parametrize(
    "field", ["event_id", "tenant_id", "agent_signature", "created_at", "payload_kind"]
)
def test_missing_required_fields(golden: dict[str, Any], field: str) -> None:
    wire = golden_wire(golden)
    del wire[field]
    with pytest.raises(ValidationError):
        envelope.parse_envelope(wire)


def test_unknown_and_server_assigned_fields_are_ignored(golden: dict[str, Any]) -> None:
    wire = golden_wire(golden) | {"sequence_number": 99, "sequenced_at": "x", "extra": [1]}
    env = envelope.parse_envelope(wire)
    assert "sequence_number" not in env.to_wire()


def test_hex_case_and_prefix_tolerated_unless_strict(golden: dict[str, Any]) -> None:
    wire = golden_wire(golden)
    wire["agent_signature"] = wire["agent_signature"][2:].upper()
    env = envelope.parse_envelope(wire)
    envelope.verify_signature(env, SIGNER.public_key, envelope.validate(env))
    with pytest.raises(ValidationError):
        envelope.parse_envelope(wire, strict_format=True)


# --- per-event validation, in order --------------------------------------------------------


def _reason(env: envelope.VesEventEnvelope) -> str:
    with pytest.raises(EnvelopeInvalid) as info:
        envelope.validate(env)
    return info.value.reason


def test_unsupported_version_wins_over_everything(golden: dict[str, Any]) -> None:
    wire = golden_wire(golden) | {"ves_version": 3, "entity_type": "", "created_at": "bad"}
    assert _reason(envelope.parse_envelope(wire)) == "unsupported_version"


@pytest.mark.parametrize(
    ("field", "limit"),
    [("entity_type", 128), ("entity_id", 512), ("event_type", 256)],
)
def test_byte_length_limits_count_utf8(field: str, limit: int) -> None:
    at_limit = "é" * (limit // 2)  # 2 bytes each: exactly at the limit
    env = make(**{field: at_limit})
    envelope.validate(env)
    over = make(**{field: at_limit + "a"})
    assert len(getattr(over, field)) <= limit  # characters are within, bytes are not
    assert _reason(over) == f"schema_validation: {field}"
    assert _reason(make(**{field: "€" * (limit // 3 + 1)})) == f"schema_validation: {field}"


@pytest.mark.parametrize("field", ["entity_type", "entity_id", "event_type"])
def test_empty_strings_refused(golden: dict[str, Any], field: str) -> None:
    assert _reason(resign(golden_wire(golden) | {field: ""})) == f"schema_validation: {field}"


@pytest.mark.parametrize("field", ["entity_type", "entity_id", "event_type"])
def test_signed_text_is_utf8_and_may_hold_nul(field: str) -> None:
    """The envelope's check is the protocol's text rule (``ves.storable.utf8_text``): a
    lone surrogate cannot be hashed and is refused; NUL is a valid character of a signed
    event (the sequencer refuses it where it stores events, see tests/contract)."""
    env = make(**{field: "ok"}).model_copy(update={field: "a\ud800"})
    assert _reason(env) == f"schema_validation: {field}"
    with_nul = make(**{field: "a\x00b"})
    envelope.verify_signature(with_nul, SIGNER.public_key, envelope.validate(with_nul))


# --- the storable-text rule itself ----------------------------------------------------------


def test_storable_text_counts_utf8_bytes_and_returns_the_size() -> None:
    assert storable.storable_text("é" * 64, field="f", min_bytes=1, max_bytes=128) == 128
    assert storable.storable_text("", field="f") == 0  # no minimum unless one is given
    over = storable.text_fault("é" * 64 + "x", field="f", min_bytes=1, max_bytes=128)
    assert over is not None and over.fault is storable.TextFault.TOO_LONG
    assert (over.field, over.size, over.message) == (
        "f",
        129,
        "f must be 1-128 bytes of UTF-8, got 129",
    )
    short = storable.text_fault("", field="f", min_bytes=1, max_bytes=8)
    assert short is not None and short.fault is storable.TextFault.TOO_SHORT


@pytest.mark.parametrize(
    ("value", "fault"),
    [
        ("\ud800" + "x" * 300, storable.TextFault.NOT_UTF8),  # first fault wins: not UTF-8
        ("\x00" + "x" * 300, storable.TextFault.TOO_LONG),  # then the size, before NUL
        ("\x00", storable.TextFault.NUL),
        ("\udfff", storable.TextFault.NOT_UTF8),
        (
            "\ud83d\ude00",
            storable.TextFault.NOT_UTF8,
        ),  # a surrogate pair, unjoined, is two lone ones
    ],
)
def test_storable_text_fault_order(value: str, fault: storable.TextFault) -> None:
    found = storable.text_fault(value, field="f", max_bytes=10)
    assert found is not None and found.fault is fault
    with pytest.raises(storable.UnstorableText) as info:
        storable.storable_text(value, field="f", max_bytes=10)
    assert info.value.fault is fault and str(info.value) == info.value.message
    assert not storable.is_storable(value, max_bytes=10)


def test_utf8_text_is_the_rule_without_nul() -> None:
    assert storable.utf8_text("a\x00b", field="f", min_bytes=1, max_bytes=3) == 3
    with pytest.raises(storable.UnstorableText) as info:
        storable.storable_text("a\x00b", field="f", min_bytes=1, max_bytes=3)
    assert info.value.fault is storable.TextFault.NUL
    for bad, fault in (
        ("\ud800", storable.TextFault.NOT_UTF8),
        ("abcd", storable.TextFault.TOO_LONG),
    ):
        with pytest.raises(storable.UnstorableText) as info:
            storable.utf8_text(bad, field="f", max_bytes=3)
        assert info.value.fault is fault


def test_storable_text_accepts_every_other_character() -> None:
    text = "\x01\t\n\u2028\ufffd😀\U0010ffff"
    assert storable.is_storable(text)
    assert storable.storable_text(text, field="f") == len(text.encode("utf-8"))


# Hypothesis leaves surrogates out of text by default; mix them in on purpose.
_ANY_CHAR = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=[]),
)


@given(st.text(_ANY_CHAR))
def test_storable_iff_both_drivers_could_encode_it_without_nul(text: str) -> None:
    try:
        text.encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    assert storable.is_storable(text) == (encodable and "\x00" not in text)


def test_make_storable_replaces_and_cuts_at_a_character_boundary() -> None:
    assert storable.make_storable("a\x00b\ud800c", max_bytes=100) == "a\ufffdb\ufffdc"
    cut = storable.make_storable("é" * 10, max_bytes=5)
    assert cut == "éé" and storable.is_storable(cut, max_bytes=5)
    assert storable.make_storable("plain", max_bytes=5) == "plain"


def test_plaintext_kind_consistency(golden: dict[str, Any]) -> None:
    assert _reason(resign(golden_wire(golden) | {"payload": None})) == "schema_validation: payload"
    wire = golden_wire(golden) | {"payload_cipher_hash": "0x" + "11" * 32}
    assert _reason(resign(wire)) == "schema_validation: payload_cipher_hash"
    encrypted = make(recipients=[(1, RECIPIENT_PK)]).to_wire()["payload_encrypted"]
    wire = golden_wire(golden) | {"payload_encrypted": encrypted}
    assert _reason(resign(wire)) == "schema_validation: payload_encrypted"


def test_encrypted_kind_consistency() -> None:
    wire = make(recipients=[(1, RECIPIENT_PK)]).to_wire()
    assert _reason(resign(wire | {"payload": {"leak": 1}})) == "schema_validation: payload"
    del wire["payload_encrypted"]
    assert _reason(resign(wire)) == "schema_validation: payload_encrypted"


def test_malformed_recipient_list_is_a_per_event_rejection() -> None:
    wire = make(recipients=[(1, RECIPIENT_PK), (2, RECIPIENT_PK)]).to_wire()
    wire["payload_encrypted"]["recipients"].reverse()
    reason = _reason(resign(wire))
    assert reason.startswith("schema_validation: payload_encrypted")
    wire["payload_encrypted"]["recipients"] = []
    assert _reason(resign(wire)).startswith("schema_validation: payload_encrypted")


@pytest.mark.parametrize(
    "created_at",
    [
        "",
        "yesterday",
        "2025-01-01",
        "2025-01-01T00:00:00",
        "2025-02-30T00:00:00Z",
        "2025-01-01 00:00",
    ],
)
def test_bad_created_at(golden: dict[str, Any], created_at: str) -> None:
    assert _reason(resign(golden_wire(golden) | {"created_at": created_at})) == (
        "schema_validation: created_at"
    )


def test_bad_payload_hash(golden: dict[str, Any]) -> None:
    wire = golden_wire(golden)
    wire["payload"]["delta"] = 101
    assert _reason(resign(wire)) == "invalid_payload_hash"


def test_bad_cipher_hash() -> None:
    wire = make(recipients=[(1, RECIPIENT_PK)]).to_wire()
    wire["created_at"] = "2025-01-01T00:00:01Z"  # the AAD changes, so the cipher hash does
    assert _reason(resign(wire)) == "invalid_cipher_hash"


def test_bad_signature(golden: dict[str, Any]) -> None:
    env = envelope.parse_envelope(
        golden_wire(golden, 0) | {"agent_signature": golden_wire(golden, 1)["agent_signature"]}
    )
    digest = envelope.validate(env)
    with pytest.raises(EnvelopeInvalid) as info:
        envelope.verify_signature(env, SIGNER.public_key, digest)
    assert info.value.reason == "invalid_signature"
    other = signing.Signer(bytes(32)).public_key
    good = envelope.parse_envelope(golden_wire(golden))
    with pytest.raises(EnvelopeInvalid):
        envelope.verify_signature(good, other, envelope.validate(good))


def test_payload_may_be_any_json_value() -> None:
    for payload in ([], 0, "text", [1, {"a": None}], False):
        env = make(payload=payload)
        assert envelope.validate(env) == env.signing_hash()
        assert env.payload_plain_hash == hashing.payload_plain_hash(payload)


def test_non_canonicalisable_payload_refused() -> None:
    env = make()
    bad = env.model_copy(update={"payload": {"x": float("nan")}})
    assert _reason(bad) == "schema_validation: payload"


# --- sign_unsigned (the CLI's sign) -----------------------------------------------------------


def test_sign_unsigned_reproduces_golden(golden: dict[str, Any]) -> None:
    for i in range(5):
        wire = golden_wire(golden, i)
        unsigned = {
            k: v
            for k, v in wire.items()
            if k not in {"payload_plain_hash", "payload_cipher_hash", "agent_signature"}
        }
        assert envelope.sign_unsigned(unsigned, SIGNER).to_wire() == wire


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"agent_signature": "0x00"}, "schema_validation"),
        ({"ves_version": 3}, "unsupported_version"),
        ({"entity_id": ""}, "schema_validation: entity_id"),
        ({"payload": None}, "schema_validation: payload"),
        ({"payload_kind": 1}, "schema_validation: recipients"),
        ({"payload_kind": 1, "recipients": "x"}, "schema_validation: recipients"),
        (
            {"payload_kind": 1, "recipients": [{"recipient_kid": "1", "public_key": "00"}]},
            "schema_validation: recipients",
        ),
        (
            {"payload_kind": 1, "recipients": [{"recipient_kid": 1, "public_key": "00"}]},
            "schema_validation: recipients",
        ),
        ({"created_at": "soon"}, "schema_validation: created_at"),
        ({"event_id": 5}, "schema_validation"),
    ],
)
def test_sign_unsigned_refuses(golden: dict[str, Any], change: dict[str, Any], reason: str) -> None:
    wire = golden_wire(golden)
    unsigned = {
        k: v
        for k, v in wire.items()
        if k not in {"payload_plain_hash", "payload_cipher_hash", "agent_signature"}
    }
    with pytest.raises(EnvelopeInvalid) as info:
        envelope.sign_unsigned(unsigned | change, SIGNER)
    assert info.value.reason == reason


# Surrogates cannot be encoded as UTF-8 (typed as hypothesis's category literal).
_NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=_NO_SURROGATES), max_size=8),
    lambda c: st.lists(c, max_size=4)
    | st.dictionaries(
        st.text(st.characters(exclude_categories=_NO_SURROGATES), max_size=6), c, max_size=4
    ),
    max_leaves=12,
).filter(lambda v: v is not None)


@given(
    _payloads, st.text(st.characters(exclude_categories=_NO_SURROGATES), min_size=1, max_size=40)
)
def test_sign_then_verify_round_trips(payload: Any, entity_id: str) -> None:
    env = make(payload=payload, entity_id=entity_id)
    again = envelope.parse_envelope(env.to_wire())
    digest = envelope.validate(again)
    envelope.verify_signature(again, SIGNER.public_key, digest)

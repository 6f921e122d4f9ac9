"""VES signing version 2 (signed execution controls): every known answer of
``tests/vectors/ves_sig_2_vectors.json`` byte for byte, the version dispatch, the SDK's
input limits, and properties that tell the two versions apart."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from stateset_sequencer.ves import envelope, hashing, signing
from stateset_sequencer.ves.errors import BadInteger, EnvelopeInvalid, VesError
from tests.conftest import load_vector
from tests.unit.test_envelope import make as make_envelope

V2 = load_vector("ves_sig_2_vectors.json")
SIGNER = signing.Signer(bytes([7]) * 32)
SAFE_MAX = 2**53 - 1
UUIDS = ("tenant_id", "store_id", "event_id", "source_agent_id", "command_id")
HASHES = ("payload_plain_hash", "payload_cipher_hash")


def fields_of(raw: dict[str, Any], changes: dict[str, Any] | None = None) -> hashing.SigningFields:
    """Signing fields from a vector's JSON form (UUID text, bare hex)."""
    merged = raw | (changes or {})
    values: dict[str, Any] = {}
    for name, value in merged.items():
        if name in UUIDS and value is not None:
            value = uuid.UUID(value)
        elif name in HASHES:
            value = bytes.fromhex(value)
        values[name] = value
    return hashing.SigningFields(**values)


REFERENCE = fields_of(V2["reference_fields"])
E970 = fields_of(V2["e970_event"]["fields"])


# --- known answers ------------------------------------------------------------------------


def test_domain_is_fifteen_raw_ascii_bytes() -> None:
    domain = V2["domain"]
    assert domain["ascii"].encode("ascii") == hashing.DOMAIN_EVENTSIG_V2
    assert hashing.DOMAIN_EVENTSIG_V2.hex() == domain["hex"]
    assert len(hashing.DOMAIN_EVENTSIG_V2) == domain["length"] == 15


def test_reference_preimage_byte_for_byte() -> None:
    preimage = hashing.event_signing_preimage(REFERENCE)
    assert preimage.hex() == V2["reference_preimage"]["hex"]
    assert len(preimage) == V2["preimage_lengths"]["both_controls"] == 73
    assert hashlib.sha256(preimage).hexdigest() == V2["cases"][0]["event_signing_hash"]


def test_reference_inner_hash_is_the_v1_recipe_with_version_2() -> None:
    inner = hashing.v1_preimage(REFERENCE)
    assert len(inner) == V2["reference_inner"]["preimage_length"] == 211
    assert inner[15:19] == b"\x00\x00\x00\x02"
    assert hashlib.sha256(inner).hexdigest() == V2["reference_inner"]["hash"]
    assert hashing.event_signing_preimage(REFERENCE)[15:47].hex() == V2["reference_inner"]["hash"]


@pytest.mark.parametrize("case", V2["cases"], ids=[c["name"] for c in V2["cases"]])
def test_reference_field_cases(case: dict[str, Any]) -> None:
    fields = fields_of(V2["reference_fields"], case["changes"])
    assert len(hashing.event_signing_preimage(fields)) == case["preimage_length"]
    assert hashing.event_signing_hash(fields).hex() == case["event_signing_hash"]


def test_no_controls_preimage_is_49_bytes() -> None:
    bare = dataclasses.replace(REFERENCE, command_id=None, base_version=None)
    preimage = hashing.event_signing_preimage(bare)
    assert len(preimage) == V2["preimage_lengths"]["no_controls"] == 49
    assert preimage[-2:] == b"\x00\x00"


def test_ed25519_signature_over_the_reference_vector() -> None:
    vector = V2["signature"]
    signer = signing.Signer(bytes.fromhex(vector["seed"]))
    assert signer.public_key.hex() == vector["public_key"]
    digest = hashing.event_signing_hash(REFERENCE)
    assert signer.sign(digest).hex() == vector["signature"]
    signing.verify(signer.public_key, digest, bytes.fromhex(vector["signature"]))


@pytest.mark.parametrize(
    "case", V2["e970_event"]["cases"], ids=[c["name"] for c in V2["e970_event"]["cases"]]
)
def test_e970_event_cases(case: dict[str, Any]) -> None:
    fields = fields_of(V2["e970_event"]["fields"], case["changes"])
    assert hashing.event_signing_hash(fields).hex() == case["event_signing_hash"]


@pytest.mark.parametrize("case", V2["payload_hashes"], ids=["reference", "empty-object"])
def test_payload_hashes(case: dict[str, Any]) -> None:
    assert hashing.payload_plain_hash(case["payload"]).hex() == case["payload_plain_hash"]


def test_a_v2_envelope_built_from_the_vector_signs_and_verifies() -> None:
    raw = V2["reference_fields"]
    env = envelope.sign_event(
        signer=SIGNER,
        tenant_id=uuid.UUID(raw["tenant_id"]),
        store_id=uuid.UUID(raw["store_id"]),
        source_agent_id=uuid.UUID(raw["source_agent_id"]),
        event_id=uuid.UUID(raw["event_id"]),
        entity_type=raw["entity_type"],
        entity_id=raw["entity_id"],
        event_type=raw["event_type"],
        created_at=raw["created_at"],
        payload={},
        command_id=uuid.UUID(raw["command_id"]),
        base_version=0,
    )
    assert env.ves_version == 2
    expected = dataclasses.replace(REFERENCE, payload_plain_hash=hashing.payload_plain_hash({}))
    assert env.signing_hash() == hashing.event_signing_hash(expected)
    assert envelope.validate(env) == env.signing_hash()
    envelope.verify_signature(env, SIGNER.public_key, env.signing_hash())
    wire = env.to_wire()
    assert wire["ves_version"] == 2 and wire["base_version"] == 0
    assert wire["command_id"] == raw["command_id"]  # the canonical lowercase form
    assert envelope.parse_envelope(wire) == env


# --- versions and limits ------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 3, 7, 2**32 - 1])
def test_other_versions_have_no_recipe(version: int) -> None:
    with pytest.raises(EnvelopeInvalid) as info:
        hashing.event_signing_hash(dataclasses.replace(REFERENCE, ves_version=version))
    assert info.value.reason == "unsupported_version"


@pytest.mark.parametrize("version", [0, 3, 2**32 - 1])
def test_check_version_accepts_only_1_and_2(version: int) -> None:
    env = make().model_copy(update={"ves_version": version})
    with pytest.raises(EnvelopeInvalid) as info:
        envelope.validate(env)
    assert info.value.reason == "unsupported_version"
    assert "expected 1 or 2" in info.value.message
    for ok in (1, 2):
        envelope.check_version(env.model_copy(update={"ves_version": ok}))


def test_version_beyond_u32_is_a_schema_error_not_a_version() -> None:
    wire = make().to_wire() | {"ves_version": 2**32}
    with pytest.raises(ValidationError) as info:
        envelope.parse_envelope(wire)
    assert info.value.errors()[0]["loc"] == ("ves_version",)


def test_base_version_beyond_safe_integer_is_refused_by_the_hash() -> None:
    assert hashing.event_signing_hash(dataclasses.replace(REFERENCE, base_version=SAFE_MAX))
    for bad in (2**53, 2**64 - 1, -1):
        with pytest.raises(BadInteger):
            hashing.event_signing_hash(dataclasses.replace(REFERENCE, base_version=bad))
    # V1 does not sign base_version, so any value hashes (as before V2).
    v1 = dataclasses.replace(REFERENCE, ves_version=1, base_version=2**64 - 1)
    assert hashing.event_signing_hash(v1).hex() == V2["cases"][-1]["event_signing_hash"]


@pytest.mark.parametrize("refused", V2["refused"], ids=["2^53"])
def test_base_version_beyond_safe_integer_is_refused_by_signing(refused: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeInvalid) as info:
        make(**refused["changes"])
    assert info.value.reason == "schema_validation: base_version"
    assert make(base_version=SAFE_MAX).base_version == SAFE_MAX
    assert make(base_version=2**53, ves_version=1).ves_version == 1  # V1 does not sign it


def test_validate_refuses_a_v2_base_version_beyond_safe_integer_after_the_version() -> None:
    env = make(base_version=SAFE_MAX)
    beyond = env.model_copy(update={"base_version": 2**53})
    with pytest.raises(EnvelopeInvalid) as info:
        envelope.validate(beyond)
    assert info.value.reason == "schema_validation: base_version"
    with pytest.raises(EnvelopeInvalid) as first:
        envelope.validate(beyond.model_copy(update={"ves_version": 3}))
    assert first.value.reason == "unsupported_version"
    v1 = make(ves_version=1, base_version=2**64 - 1)
    assert envelope.validate(v1) == v1.signing_hash()


def test_sign_event_defaults_to_v2_and_keeps_v1_on_request() -> None:
    assert envelope.DEFAULT_VES_VERSION == 2
    assert make().ves_version == 2
    v1 = make(ves_version=1, command_id=uuid.UUID(int=9), base_version=4)
    assert v1.ves_version == 1
    assert v1.signing_hash() == hashing.event_signing_hash(
        dataclasses.replace(v1.signing_fields(), command_id=None, base_version=None)
    )
    for version in (0, 3):
        with pytest.raises(EnvelopeInvalid) as info:
            make(ves_version=version)
        assert info.value.reason == "unsupported_version"


def test_sign_unsigned_follows_the_objects_version() -> None:
    unsigned = {
        k: v
        for k, v in make(command_id=uuid.UUID(int=5), base_version=3).to_wire().items()
        if k not in {"payload_plain_hash", "payload_cipher_hash", "agent_signature", "ves_version"}
    }
    default = envelope.sign_unsigned(unsigned, SIGNER)
    assert default.ves_version == 2
    v1 = envelope.sign_unsigned(unsigned | {"ves_version": 1}, SIGNER)
    v2 = envelope.sign_unsigned(unsigned | {"ves_version": 2}, SIGNER)
    assert v1.ves_version == 1 and v2 == default
    assert v1.signing_hash() != v2.signing_hash()
    for env in (v1, v2):
        envelope.verify_signature(env, SIGNER.public_key, envelope.validate(env))
    with pytest.raises(EnvelopeInvalid) as info:
        envelope.sign_unsigned(unsigned | {"ves_version": 2, "base_version": 2**53}, SIGNER)
    assert info.value.reason == "schema_validation: base_version"
    with pytest.raises(EnvelopeInvalid) as bad:
        envelope.sign_unsigned(unsigned | {"ves_version": 0}, SIGNER)
    assert bad.value.reason == "unsupported_version"


def test_encrypted_v2_event_signs_its_controls() -> None:
    recipient = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    env = make(recipients=[(1, recipient)], command_id=uuid.UUID(int=4), base_version=2)
    assert env.ves_version == 2 and env.payload_kind == 1
    digest = envelope.validate(env)
    envelope.verify_signature(env, SIGNER.public_key, digest)
    moved = env.model_copy(update={"base_version": 3})
    with pytest.raises(EnvelopeInvalid):
        envelope.verify_signature(moved, SIGNER.public_key, envelope.validate(moved))


def test_receipts_and_leaves_take_the_v2_hash_unchanged() -> None:
    env = make(command_id=uuid.UUID(int=4))
    digest = env.signing_hash()
    issuer = signing.ReceiptSigner(uuid.UUID(int=7), bytes([9]) * 32)
    receipt = issuer.issue(
        tenant_id=env.tenant_id,
        store_id=env.store_id,
        event_id=env.event_id,
        sequence_number=3,
        event_signing_hash=digest,
        sequenced_at="2025-06-01T00:00:00.000+00:00",
    )
    assert receipt.receipt_hash == hashing.receipt_hash(
        env.tenant_id, env.store_id, env.event_id, 3, digest
    )
    signing.verify_receipt(
        receipt,
        tenant_id=env.tenant_id,
        store_id=env.store_id,
        event_signing_hash=digest,
        sequencer_public_key=issuer.public_key,
    )
    leaf = hashing.leaf_hash(env.tenant_id, env.store_id, 3, digest, env.agent_signature)
    assert (
        leaf
        == hashlib.sha256(
            b"VES_LEAF_V1"
            + env.tenant_id.bytes
            + env.store_id.bytes
            + (3).to_bytes(8, "big")
            + digest
            + env.agent_signature
        ).digest()
    )


# --- properties ---------------------------------------------------------------------------


def make(**overrides: Any) -> envelope.VesEventEnvelope:
    """test_envelope's signed event, by this file's signer, as an update."""
    return make_envelope(**({"signer": SIGNER, "event_type": "order.updated"} | overrides))


TEXT = st.text(min_size=1, max_size=12)
BASES = st.none() | st.integers(min_value=0, max_value=SAFE_MAX)
COMMANDS = st.none() | st.uuids()


@st.composite
def signing_fields(draw: st.DrawFn) -> hashing.SigningFields:
    return hashing.SigningFields(
        ves_version=2,
        tenant_id=draw(st.uuids()),
        store_id=draw(st.uuids()),
        event_id=draw(st.uuids()),
        source_agent_id=draw(st.uuids()),
        agent_key_id=draw(st.integers(min_value=0, max_value=2**32 - 1)),
        entity_type=draw(TEXT),
        entity_id=draw(TEXT),
        event_type=draw(TEXT),
        created_at=draw(TEXT),
        payload_kind=draw(st.sampled_from([0, 1])),
        payload_plain_hash=draw(st.binary(min_size=32, max_size=32)),
        payload_cipher_hash=draw(st.binary(min_size=32, max_size=32)),
        command_id=draw(COMMANDS),
        base_version=draw(BASES),
    )


@given(signing_fields())
def test_v1_and_v2_never_collide_for_the_same_fields(fields: hashing.SigningFields) -> None:
    v1 = dataclasses.replace(fields, ves_version=1)
    assert hashing.event_signing_hash(fields) != hashing.event_signing_hash(v1)
    assert len(hashing.event_signing_preimage(fields)) in (49, 57, 65, 73)


@given(signing_fields(), COMMANDS, BASES)
def test_changing_a_control_breaks_v2_but_not_v1(
    fields: hashing.SigningFields, command: uuid.UUID | None, base: int | None
) -> None:
    changed = dataclasses.replace(fields, command_id=command, base_version=base)
    signature = SIGNER.sign(hashing.event_signing_hash(fields))
    same = (command, base) == (fields.command_id, fields.base_version)
    assert (
        signing.is_valid(SIGNER.public_key, hashing.event_signing_hash(changed), signature) == same
    )
    v1, v1_changed = (dataclasses.replace(f, ves_version=1) for f in (fields, changed))
    v1_signature = SIGNER.sign(hashing.event_signing_hash(v1))
    assert signing.is_valid(SIGNER.public_key, hashing.event_signing_hash(v1_changed), v1_signature)


@given(COMMANDS, BASES, COMMANDS, BASES)
def test_the_controls_encoding_is_injective(
    c1: uuid.UUID | None, b1: int | None, c2: uuid.UUID | None, b2: int | None
) -> None:
    same = (c1, b1) == (c2, b2)
    assert (hashing.execution_controls(c1, b1) == hashing.execution_controls(c2, b2)) == same


@given(st.integers(min_value=2**53, max_value=2**64 - 1) | st.integers(max_value=-1))
def test_any_base_version_beyond_the_safe_range_is_refused(base: int) -> None:
    with pytest.raises(VesError):
        hashing.execution_controls(None, base)
    with pytest.raises(EnvelopeInvalid):
        make(base_version=base)

"""VES-ENC-1 encryption: RFC 9180 known answers, the golden vector, errors, structure checks
and round-trip / tamper properties.

``ves.encryption`` seals and opens with ``cryptography``'s HPKE, which picks its own ephemeral
keys. Known answers that fix one are sealed by ``hpke_reference`` instead, and the tests
here check that the library opens what the reference seals and the other way round.
"""

from __future__ import annotations

import copy
import functools
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from stateset_sequencer.ves import encryption as enc
from stateset_sequencer.ves import errors, hashing, jcs
from stateset_sequencer.ves.codec import U32_MAX, b64url_decode, b64url_encode
from tests.unit import hpke_reference as ref

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
ENC1: dict[str, Any] = json.loads((VECTORS / "ves_enc_1_test_vectors.json").read_text("utf-8"))
GOLDEN: dict[str, Any] = json.loads((VECTORS / "ves_golden_example.json").read_text("utf-8"))[
    "computed_placeholders"
]["ves_enc_1_test_vectors.json"]

FULL = ENC1["full_encryption"]
CTX: dict[str, Any] = {k: v for k, v in FULL["event_context"].items() if k != "ves_version"}
KEYS = {k["kid"]: k for k in ENC1["hpke_key_pairs"]["test_keys"]}
R1_SK = bytes.fromhex(KEYS[1]["private_key_hex"])
R1_PK = bytes.fromhex(KEYS[1]["public_key_hex"])
R2_SK = bytes.fromhex(KEYS[2]["private_key_hex"])
R2_PK = bytes.fromhex(KEYS[2]["public_key_hex"])
SALT = bytes.fromhex(FULL["random_values_hex"]["salt"])
DEK = bytes.fromhex(FULL["random_values_hex"]["dek"])
NONCE = bytes.fromhex(FULL["random_values_hex"]["nonce"])
IKM_42 = bytes.fromhex(GOLDEN["full:hpke_ephemeral_ikm(chosen here)"])


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _fixed(*chunks: bytes) -> Callable[[int], bytes]:
    """A randomness source replaying ``chunks`` in order, checking each requested size."""
    queue = list(chunks)

    def draw(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n
        return chunk

    return draw


def _seal_with(*ikms: bytes) -> enc.HpkeSeal:
    """The reference's seal, with ephemeral keys derived from ``ikms`` in order (the library
    cannot be given one)."""
    queue = list(ikms)

    def seal(public_key: bytes, info: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
        return ref.seal_base(public_key, info, b"", plaintext, ikm_e=queue.pop(0))

    return seal


@functools.cache
def _golden() -> enc.EncryptedPayload:
    return enc.encrypt_payload(
        FULL["payload"],
        **CTX,
        recipients=[(1, R1_PK)],
        randomness=_fixed(SALT, DEK, NONCE),
        hpke_seal=_seal_with(IKM_42),
    )


def _golden_wire() -> dict[str, Any]:
    return copy.deepcopy(_golden().payload_encrypted)


def _aad(plain_hash: bytes, **changes: Any) -> bytes:
    ctx = {**CTX, **changes}
    return hashing.payload_aad(
        tenant_id=uuid.UUID(ctx["tenant_id"]),
        store_id=uuid.UUID(ctx["store_id"]),
        event_id=uuid.UUID(ctx["event_id"]),
        source_agent_id=uuid.UUID(ctx["source_agent_id"]),
        agent_key_id=ctx["agent_key_id"],
        entity_type=ctx["entity_type"],
        entity_id=ctx["entity_id"],
        event_type=ctx["event_type"],
        created_at=ctx["created_at"],
        payload_plain_hash=plain_hash,
    )


# --- RFC 9180 Appendix A.1.1 --------------------------------------------------------------
# DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, mode_base. Source: RFC 9180
# Appendix A.1.1 (https://www.rfc-editor.org/rfc/rfc9180#appendix-A.1.1); the values were
# looked up in several independent public HPKE test suites that copy the RFC (Rust, Go, Zig,
# TypeScript), which agree digit for digit. The key-schedule context and secret are
# the RFC's intermediate values of the same section.

A1_INFO = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
A1_IKM_E = bytes.fromhex("7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234")
A1_PK_EM = bytes.fromhex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
A1_SK_EM = bytes.fromhex("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736")
A1_IKM_R = bytes.fromhex("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037")
A1_PK_RM = bytes.fromhex("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
A1_SK_RM = bytes.fromhex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
A1_SHARED = bytes.fromhex("fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc")
A1_KS_CONTEXT = bytes.fromhex(
    "00725611c9d98c07c03f60095cd32d400d8347d45ed67097bbad50fc56da742d07"
    "cb6cffde367bb0565ba28bb02c90744a20f5ef37f30523526106f637abb05449"
)
A1_SECRET = bytes.fromhex("12fff91991e93b48de37e7daddb52981084bd8aa64289c3788471d9a9712f397")
A1_KEY = bytes.fromhex("4531685d41d65f03dc48f6b8302c05b0")
A1_BASE_NONCE = bytes.fromhex("56d890e5accaaf011cff4b7d")
A1_EXPORTER = bytes.fromhex("45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8")
A1_PT = bytes.fromhex("4265617574792069732074727574682c20747275746820626561757479")
A1_AAD0 = bytes.fromhex("436f756e742d30")
A1_CT0 = bytes.fromhex(
    "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
)
A1_SUITE = ref.AES_128_GCM
A1_LIBRARY = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)

# The golden file's one DEK wrap: a known answer for the suite VES actually uses.
G_ENC = b64url_decode(GOLDEN["full:recipient[0]"]["enc_b64u"])
G_CT = b64url_decode(GOLDEN["full:recipient[0]"]["ct_b64u"])
G_INFO = _unhex(GOLDEN["full:payload_aad (Rust: no ves_version)"])


@pytest.mark.parametrize(
    ("ikm", "sk", "pk"),
    [(A1_IKM_E, A1_SK_EM, A1_PK_EM), (A1_IKM_R, A1_SK_RM, A1_PK_RM)],
    ids=["ephemeral", "recipient"],
)
def test_rfc9180_derive_key_pair(ikm: bytes, sk: bytes, pk: bytes) -> None:
    assert ref.derive_key_pair(ikm) == (sk, pk)


def test_rfc9180_encap_and_decap() -> None:
    shared, enc_ = ref.encap(A1_PK_RM, A1_IKM_E)
    assert enc_ == A1_PK_EM
    assert shared == A1_SHARED
    assert ref.decap(enc_, A1_SK_RM) == A1_SHARED


def test_rfc9180_key_schedule() -> None:
    ctx = ref.key_schedule_base(A1_SHARED, A1_INFO, A1_SUITE)
    assert ctx.key_schedule_context == A1_KS_CONTEXT
    assert ctx.secret == A1_SECRET
    assert ctx.key == A1_KEY
    assert ctx.base_nonce == A1_BASE_NONCE
    assert ctx.exporter_secret == A1_EXPORTER
    assert "4531685d" not in repr(ctx)  # secrets stay out of logs


def test_rfc9180_seal_and_open_sequence_0() -> None:
    enc_, ct = ref.seal_base(A1_PK_RM, A1_INFO, A1_AAD0, A1_PT, ikm_e=A1_IKM_E, aead=A1_SUITE)
    assert enc_ == A1_PK_EM
    assert ct == A1_CT0
    assert ref.open_base(enc_, A1_SK_RM, A1_INFO, A1_AAD0, ct, aead=A1_SUITE) == A1_PT


def test_rfc9180_library_opens_sequence_0() -> None:
    # Every A.1.1 encryption has a non-empty aad, which the public API (since it dropped its
    # aad argument) cannot pass, so the library opens the RFC's bytes through its private
    # _decrypt_with_aad. The public API has to refuse them: it binds an empty aad.
    sk = X25519PrivateKey.from_private_bytes(A1_SK_RM)
    sealed = A1_PK_EM + A1_CT0
    opened = rust_openssl.hpke._decrypt_with_aad(A1_LIBRARY, sealed, sk, info=A1_INFO, aad=A1_AAD0)
    assert opened == A1_PT
    with pytest.raises(InvalidTag):
        A1_LIBRARY.decrypt(sealed, sk, info=A1_INFO)


def test_rfc9180_keys_interoperate_with_library() -> None:
    sk = X25519PrivateKey.from_private_bytes(A1_SK_RM)
    enc_, ct = ref.seal_base(A1_PK_RM, A1_INFO, b"", A1_PT, ikm_e=A1_IKM_E, aead=A1_SUITE)
    assert enc_ == A1_PK_EM
    assert A1_LIBRARY.decrypt(enc_ + ct, sk, info=A1_INFO) == A1_PT
    sealed = A1_LIBRARY.encrypt(A1_PT, sk.public_key(), info=A1_INFO)
    assert ref.open_base(sealed[:32], A1_SK_RM, A1_INFO, b"", sealed[32:], aead=A1_SUITE) == A1_PT


def test_library_opens_golden_wrap() -> None:
    assert enc.hpke_open_base(G_ENC, R1_SK, G_INFO, G_CT) == DEK


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    ("enc_", "sk", "info", "ct"),
    [
        (G_ENC, R1_SK, G_INFO, ref.seal_base(R1_PK, G_INFO, b"x", DEK, ikm_e=IKM_42)[1]),
        (G_ENC, R1_SK, b"other info", G_CT),
        (G_ENC, R1_SK, G_INFO, _flip_last(G_CT)),
        (G_ENC, R1_SK, G_INFO, b""),
        (R1_PK, R1_SK, G_INFO, G_CT),
        (bytes(32), R1_SK, G_INFO, G_CT),  # small-order enc: all-zero DH (§7.1.4)
        (G_ENC[:31], R1_SK, G_INFO, G_CT),
        # enc ‖ ct is the golden wrap byte for byte, but split in the wrong place.
        (G_ENC[:31], R1_SK, G_INFO, G_ENC[31:] + G_CT),
        (G_ENC + G_CT[:1], R1_SK, G_INFO, G_CT[1:]),
        (G_ENC, R2_SK, G_INFO, G_CT),
        (A1_PK_EM, A1_SK_RM, A1_INFO, A1_CT0),  # an AES-128-GCM message
    ],
    ids=[
        "aad",
        "info",
        "ct",
        "empty-ct",
        "enc",
        "zero-enc",
        "short-enc",
        "short-enc-same-bytes",
        "long-enc-same-bytes",
        "wrong-key",
        "other-suite",
    ],
)
def test_open_failures_are_decryption_failed(
    enc_: bytes, sk: bytes, info: bytes, ct: bytes
) -> None:
    with pytest.raises(errors.DecryptionFailed) as failure:
        enc.hpke_open_base(enc_, sk, info, ct)
    assert str(failure.value).startswith("HPKE ")  # ours, not the library's


@pytest.mark.parametrize(
    "point",
    [
        "00" * 32,
        "01" + "00" * 31,
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ],
    ids=["0", "1", "order-8", "order-8b", "p-1"],
)
def test_small_order_recipient_key_is_bad_key(point: str) -> None:
    with pytest.raises(errors.BadKey) as failure:
        enc.hpke_seal_base(bytes.fromhex(point), G_INFO, DEK)
    assert str(failure.value) == "recipient public key is of small order"


def test_hpke_key_checks() -> None:
    with pytest.raises(errors.BadKey):
        enc.hpke_seal_base(R1_PK[:31], G_INFO, DEK)
    with pytest.raises(errors.BadKey):
        enc.hpke_open_base(G_ENC, R1_SK + b"\x00", G_INFO, G_CT)
    with pytest.raises(errors.BadKey):
        enc.hpke_open_base(G_ENC, R1_SK.hex(), G_INFO, G_CT)  # type: ignore[arg-type]


def test_library_round_trip_and_reference_interop() -> None:
    enc_, ct = enc.hpke_seal_base(R1_PK, b"info", DEK)
    assert len(enc_) == 32
    assert len(ct) == 48
    assert enc.hpke_open_base(enc_, R1_SK, b"info", ct) == DEK
    assert ref.open_base(enc_, R1_SK, b"info", b"", ct) == DEK
    with pytest.raises(InvalidTag):
        ref.open_base(enc_, R1_SK, b"info", b"", ct, aead=A1_SUITE)
    assert enc.hpke_seal_base(R1_PK, b"info", DEK)[0] != enc_  # a fresh ephemeral key


# --- golden full encryption (VES_PROTOCOL §5.5) -------------------------------------------


def test_golden_hashes() -> None:
    out = _golden()
    assert out.payload_plain_hash == _unhex(GOLDEN["full:payload_plain_hash"])
    assert out.payload_aad == _unhex(GOLDEN["full:payload_aad (Rust: no ves_version)"])
    assert out.recipients_hash == _unhex(GOLDEN["full:recipients_hash"])
    assert out.payload_cipher_hash == _unhex(GOLDEN["full:payload_cipher_hash"])


def test_golden_wire_object() -> None:
    assert _golden().payload_encrypted == {
        "enc_version": 1,
        "aead": "AES-256-GCM",
        "nonce_b64u": b64url_encode(NONCE),
        "ciphertext_b64u": GOLDEN["full:ciphertext_b64u"],
        "tag_b64u": GOLDEN["full:tag_b64u"],
        "hpke": {
            "mode": "base",
            "kem": "X25519-HKDF-SHA256",
            "kdf": "HKDF-SHA256",
            "aead": "AES-256-GCM",
        },
        "recipients": [GOLDEN["full:recipient[0]"]],
    }


def test_golden_plaintext_and_ephemeral() -> None:
    out = _golden()
    wire = out.payload_encrypted
    plaintext = enc.aes_gcm_open(
        DEK,
        NONCE,
        b64url_decode(wire["ciphertext_b64u"]),
        b64url_decode(wire["tag_b64u"]),
        out.payload_aad,
    )
    assert plaintext == bytes.fromhex(GOLDEN["full:plaintext_hex"])
    assert plaintext[16:].decode() == FULL["intermediate_values"]["canonical_json"]
    assert b64url_encode(ref.derive_key_pair(IKM_42)[1]) == wire["recipients"][0]["enc_b64u"]


def test_golden_event_signing_hash_kind_1() -> None:
    out = _golden()
    fields = hashing.SigningFields(
        ves_version=FULL["event_context"]["ves_version"],
        tenant_id=uuid.UUID(CTX["tenant_id"]),
        store_id=uuid.UUID(CTX["store_id"]),
        event_id=uuid.UUID(CTX["event_id"]),
        source_agent_id=uuid.UUID(CTX["source_agent_id"]),
        agent_key_id=CTX["agent_key_id"],
        entity_type=CTX["entity_type"],
        entity_id=CTX["entity_id"],
        event_type=CTX["event_type"],
        created_at=CTX["created_at"],
        payload_kind=1,
        payload_plain_hash=out.payload_plain_hash,
        payload_cipher_hash=out.payload_cipher_hash,
    )
    assert hashing.event_signing_hash(fields) == _unhex(GOLDEN["full:event_signing_hash(kind=1)"])


def test_golden_decrypts_for_recipient_1() -> None:
    out = _golden()
    payload = enc.decrypt_payload(
        out.payload_encrypted,
        **CTX,
        payload_plain_hash=out.payload_plain_hash,
        recipient_kid=1,
        recipient_private_key=R1_SK,
    )
    assert payload == FULL["payload"]


def test_golden_accepts_uuid_objects() -> None:
    ctx = {**CTX, **{k: uuid.UUID(CTX[k]) for k in ("tenant_id", "store_id", "event_id")}}
    again = enc.encrypt_payload(
        FULL["payload"],
        **ctx,
        recipients=[(1, R1_PK)],
        randomness=_fixed(SALT, DEK, NONCE),
        hpke_seal=_seal_with(IKM_42),
    )
    assert again == _golden()


def test_golden_with_the_library_seal() -> None:
    """Everything but the wrap is fixed by ``randomness`` alone, and the library's wrap
    decrypts like the golden one; the default seal draws nothing from ``randomness``."""
    out = enc.encrypt_payload(
        FULL["payload"], **CTX, recipients=[(1, R1_PK)], randomness=_fixed(SALT, DEK, NONCE)
    )
    golden = _golden()
    assert out.payload_plain_hash == golden.payload_plain_hash
    assert out.payload_aad == golden.payload_aad
    wire, golden_wire = out.payload_encrypted, golden.payload_encrypted
    assert {k: v for k, v in wire.items() if k != "recipients"} == {
        k: v for k, v in golden_wire.items() if k != "recipients"
    }
    assert wire["recipients"] != golden_wire["recipients"]
    (entry,) = wire["recipients"]
    enc_, ct = b64url_decode(entry["enc_b64u"]), b64url_decode(entry["ct_b64u"])
    assert ref.open_base(enc_, R1_SK, G_INFO, b"", ct) == DEK
    assert out.payload_cipher_hash == hashing.payload_cipher_hash(
        nonce=NONCE,
        aad=out.payload_aad,
        ciphertext=b64url_decode(wire["ciphertext_b64u"]),
        tag=b64url_decode(wire["tag_b64u"]),
        recipients_hash=hashing.recipients_hash([(1, enc_, ct)]),
    )
    assert _decrypt_golden(wire) == FULL["payload"]


@pytest.mark.parametrize("strict", [False, True])
def test_golden_parse_and_cipher_hash_of(strict: bool) -> None:
    out = _golden()
    parts = enc.parse_encrypted(out.payload_encrypted, strict=strict)
    assert parts.enc_version == 1
    assert parts.nonce == NONCE
    recipient = GOLDEN["full:recipient[0]"]
    assert parts.recipients == (
        (1, b64url_decode(recipient["enc_b64u"]), b64url_decode(recipient["ct_b64u"])),
    )
    aad = _aad(out.payload_plain_hash)
    assert enc.cipher_hash_of(parts, aad) == _unhex(GOLDEN["full:payload_cipher_hash"])


def test_aead_test_case_1() -> None:
    (case,) = ENC1["aead_test_vectors"]["vectors"]
    key, nonce = bytes.fromhex(case["key_hex"]), bytes.fromhex(case["nonce_hex"])
    aad = bytes.fromhex(case["aad_hex"])
    ct, tag = enc.aes_gcm_seal(key, nonce, bytes.fromhex(case["plaintext_hex"]), aad)
    assert ct.hex() == GOLDEN["aead:test_case_1:ciphertext_hex"]
    assert tag.hex() == GOLDEN["aead:test_case_1:tag_hex"]
    assert enc.aes_gcm_open(key, nonce, ct, tag, aad).hex() == case["plaintext_hex"]


@pytest.mark.parametrize("case", ENC1["base64url"]["vectors"], ids=lambda c: c["expected"])
def test_base64url_vectors(case: dict[str, str]) -> None:
    raw = bytes.fromhex(case["input_hex"])
    assert b64url_encode(raw) == case["expected"]
    assert b64url_decode(case["expected"], strict=True) == raw


def test_multiple_recipients_are_sorted_and_each_decrypts() -> None:
    out = enc.encrypt_payload(FULL["payload"], **CTX, recipients=[(7, R2_PK), (1, R1_PK)])
    assert [r["recipient_kid"] for r in out.payload_encrypted["recipients"]] == [1, 7]
    for kid, sk in ((1, R1_SK), (7, R2_SK)):
        assert (
            enc.decrypt_payload(
                out.payload_encrypted,
                **CTX,
                payload_plain_hash=out.payload_plain_hash,
                recipient_kid=kid,
                recipient_private_key=sk,
            )
            == FULL["payload"]
        )


# --- error cases (ves_enc_1 `error_cases`, plus input checks) ----------------------------


def _decrypt_golden(wire: dict[str, Any] | None = None, **changes: Any) -> Any:
    out = _golden()
    args: dict[str, Any] = {
        **CTX,
        "payload_plain_hash": out.payload_plain_hash,
        "recipient_kid": 1,
        "recipient_private_key": R1_SK,
        **changes,
    }
    return enc.decrypt_payload(out.payload_encrypted if wire is None else wire, **args)


def _seal_raw(plaintext: bytes, plain_hash: bytes) -> dict[str, Any]:
    """A sender that seals arbitrary ``salt ‖ body`` bytes under an AAD of its choosing."""
    aad = _aad(plain_hash)
    ct, tag = enc.aes_gcm_seal(DEK, NONCE, plaintext, aad)
    e, wrapped = ref.seal_base(R1_PK, aad, b"", DEK, ikm_e=IKM_42)
    wire = _golden_wire()
    wire["ciphertext_b64u"], wire["tag_b64u"] = b64url_encode(ct), b64url_encode(tag)
    wire["recipients"] = [
        {"recipient_kid": 1, "enc_b64u": b64url_encode(e), "ct_b64u": b64url_encode(wrapped)}
    ]
    return wire


def _case_no_recipients() -> None:
    enc.encrypt_payload(FULL["payload"], **CTX, recipients=[])


def _case_recipient_not_found() -> None:
    _decrypt_golden(recipient_kid=2)


def _case_invalid_tag() -> None:
    wire = _golden_wire()
    tag = b64url_decode(wire["tag_b64u"])
    wire["tag_b64u"] = b64url_encode(bytes([tag[0] ^ 0x80]) + tag[1:])
    _decrypt_golden(wire)


def _case_wrong_aad() -> None:
    _decrypt_golden(created_at="2025-01-01T00:00:00+00:00")


def _case_hash_mismatch() -> None:
    # Keys out of JCS order: the sender hashed these raw bytes, the reader re-canonicalizes.
    body = b'{"reason":"shipment_receive","delta":100}'
    raw_hash = hashing.payload_plain_hash_of_canonical(body, SALT)
    _decrypt_golden(_seal_raw(SALT + body, raw_hash), payload_plain_hash=raw_hash)


_ERROR_CASES: dict[str, Callable[[], None]] = {
    "no_recipients": _case_no_recipients,
    "recipient_not_found": _case_recipient_not_found,
    "invalid_tag": _case_invalid_tag,
    "wrong_aad": _case_wrong_aad,
    "hash_mismatch": _case_hash_mismatch,
}


@pytest.mark.parametrize("case", ENC1["error_cases"]["cases"], ids=lambda c: c["name"])
def test_vector_error_cases(case: dict[str, str]) -> None:
    with pytest.raises(getattr(errors, case["expected_error"])):
        _ERROR_CASES[case["name"]]()


def test_seal_raw_helper_is_sound() -> None:
    canonical = jcs.canonicalize(FULL["payload"])
    plain_hash = hashing.payload_plain_hash_of_canonical(canonical, SALT)
    wire = _seal_raw(SALT + canonical, plain_hash)
    assert wire == _golden().payload_encrypted
    assert _decrypt_golden(wire) == FULL["payload"]


@pytest.mark.parametrize(
    "plaintext",
    [SALT, SALT + b"{not json", SALT[:15], SALT + b'"\\ud800"', SALT + '"é"'.encode("utf-16")],
    ids=["empty-body", "not-json", "short", "lone-surrogate", "utf16"],
)
def test_authentic_but_unreadable_plaintext_is_decryption_failed(plaintext: bytes) -> None:
    plain_hash = hashing.payload_plain_hash_of_canonical(plaintext[16:], SALT)
    with pytest.raises(errors.DecryptionFailed):
        _decrypt_golden(_seal_raw(plaintext, plain_hash), payload_plain_hash=plain_hash)


@pytest.mark.parametrize(
    "changes",
    [
        {"recipient_private_key": R2_SK},
        {"entity_id": "WIDGET-002"},
        {"agent_key_id": 2},
        {"event_id": "11111111-1111-1111-1111-111111111112"},
        {"payload_plain_hash": bytes(32)},
    ],
    ids=["wrong-key", "entity_id", "agent_key_id", "event_id", "plain-hash"],
)
def test_decrypt_failures(changes: dict[str, Any]) -> None:
    with pytest.raises(errors.DecryptionFailed):
        _decrypt_golden(**changes)


def test_decrypt_input_checks() -> None:
    with pytest.raises(errors.BadKey):
        _decrypt_golden(recipient_private_key=R1_SK[:31])
    with pytest.raises(errors.BadLength):
        _decrypt_golden(payload_plain_hash=bytes(31))
    with pytest.raises(errors.EnvelopeInvalid):
        _decrypt_golden({"enc_version": 1})
    for version in (2, 3):
        with pytest.raises(errors.DecryptionFailed):
            _decrypt_golden({**_golden_wire(), "enc_version": version})


def test_encrypt_input_checks() -> None:
    with pytest.raises(errors.EnvelopeInvalid) as info:
        enc.encrypt_payload(FULL["payload"], **CTX, recipients=[(1, R1_PK), (1, R2_PK)])
    assert info.value.reason == "schema_validation: payload_encrypted.recipients"
    with pytest.raises(errors.BadKey):
        enc.encrypt_payload(FULL["payload"], **CTX, recipients=[(1, R1_PK[:31])])
    with pytest.raises(errors.BadKey):
        enc.encrypt_payload(FULL["payload"], **CTX, recipients=[(1, bytes(32))])
    for kid in (-1, U32_MAX + 1, True):
        with pytest.raises(errors.BadInteger):
            enc.encrypt_payload(FULL["payload"], **CTX, recipients=[(kid, R1_PK)])
    with pytest.raises(errors.BadLength):
        enc.encrypt_payload(
            FULL["payload"], **CTX, recipients=[(1, R1_PK)], randomness=lambda n: bytes(n - 1)
        )
    for bad_seal in (
        lambda pk, info, pt: (b"", b""),
        lambda pk, info, pt: (bytes(32), bytes(47)),
        lambda pk, info, pt: (bytes(33), bytes(48)),
    ):
        with pytest.raises(errors.BadLength):
            enc.encrypt_payload(FULL["payload"], **CTX, recipients=[(1, R1_PK)], hpke_seal=bad_seal)
    with pytest.raises(errors.NonCanonical):
        enc.encrypt_payload(float("nan"), **CTX, recipients=[(1, R1_PK)])
    with pytest.raises(errors.BadUuid):
        enc.encrypt_payload(1, **{**CTX, "store_id": "nope"}, recipients=[(1, R1_PK)])


def test_aes_gcm_helper_checks() -> None:
    with pytest.raises(errors.BadKey):
        enc.aes_gcm_seal(DEK[:31], NONCE, b"x", b"")
    with pytest.raises(errors.BadLength):
        enc.aes_gcm_seal(DEK, NONCE[:11], b"x", b"")
    ct, tag = enc.aes_gcm_seal(DEK, NONCE, b"x", b"")
    with pytest.raises(errors.DecryptionFailed):
        enc.aes_gcm_open(DEK, NONCE, ct, tag, b"other")
    with pytest.raises(errors.DecryptionFailed):
        enc.aes_gcm_open(DEK, NONCE, ct, tag[:15], b"")


# --- structure checks (VES_PROTOCOL §5.4, REFERENCE_MAP §4.3 step 4) ----------------------

_DELETE = object()


def _edit(*path: str | int, value: Any) -> dict[str, Any]:
    """The golden wire object with the member at ``path`` replaced (or deleted)."""
    wire = _golden_wire()
    node: Any = wire
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return wire


def _b64(n: int) -> str:
    return b64url_encode(bytes(range(n)))


def _two_recipients(first_kid: int, second_kid: int, **second: Any) -> dict[str, Any]:
    wire = _golden_wire()
    (entry,) = wire["recipients"]
    wire["recipients"] = [
        {**entry, "recipient_kid": first_kid},
        {**entry, "recipient_kid": second_kid, **second},
    ]
    return wire


def _unsorted_after_bad_enc() -> dict[str, Any]:
    """Kids 5 then 1, but entry 0's enc is short: checks interleave, so enc is reported."""
    wire = _two_recipients(5, 1)
    wire["recipients"][0]["enc_b64u"] = _b64(31)
    return wire


_STRUCTURE_CASES: list[tuple[str, Any, str]] = [
    ("not-an-object", [], ""),
    ("enc_version-0", _edit("enc_version", value=0), "enc_version"),
    ("enc_version-4", _edit("enc_version", value=4), "enc_version"),
    ("enc_version-bool", _edit("enc_version", value=True), "enc_version"),
    ("enc_version-str", _edit("enc_version", value="1"), "enc_version"),
    ("enc_version-float", _edit("enc_version", value=1.0), "enc_version"),
    ("enc_version-missing", _edit("enc_version", value=_DELETE), "enc_version"),
    ("aead", _edit("aead", value="AES-128-GCM"), "aead"),
    ("aead-type", _edit("aead", value=256), "aead"),
    ("aead-null", _edit("aead", value=None), "aead"),
    ("hpke-type", _edit("hpke", value="base"), "hpke"),
    ("hpke-missing", _edit("hpke", value=_DELETE), "hpke"),
    ("hpke.mode", _edit("hpke", "mode", value="auth"), "hpke.mode"),
    ("hpke.mode-missing", _edit("hpke", "mode", value=_DELETE), "hpke.mode"),
    ("hpke.kem", _edit("hpke", "kem", value="DHKEM-P256-HKDF-SHA256"), "hpke.kem"),
    ("hpke.kem-case", _edit("hpke", "kem", value="x25519-hkdf-sha256"), "hpke.kem"),
    ("hpke.kdf", _edit("hpke", "kdf", value="HKDF-SHA512"), "hpke.kdf"),
    ("hpke.aead", _edit("hpke", "aead", value="ChaCha20Poly1305"), "hpke.aead"),
    ("hpke.aead-type", _edit("hpke", "aead", value=["AES-256-GCM"]), "hpke.aead"),
    ("nonce-11", _edit("nonce_b64u", value=_b64(11)), "nonce_b64u"),
    ("nonce-13", _edit("nonce_b64u", value=_b64(13)), "nonce_b64u"),
    ("nonce-not-b64", _edit("nonce_b64u", value="AAECAwQFBgcICQo+"), "nonce_b64u"),
    ("nonce-type", _edit("nonce_b64u", value=12), "nonce_b64u"),
    ("nonce-missing", _edit("nonce_b64u", value=_DELETE), "nonce_b64u"),
    ("ciphertext-empty", _edit("ciphertext_b64u", value=""), "ciphertext_b64u"),
    ("ciphertext-not-b64", _edit("ciphertext_b64u", value="A"), "ciphertext_b64u"),
    ("ciphertext-missing", _edit("ciphertext_b64u", value=_DELETE), "ciphertext_b64u"),
    ("tag-15", _edit("tag_b64u", value=_b64(15)), "tag_b64u"),
    ("tag-17", _edit("tag_b64u", value=_b64(17)), "tag_b64u"),
    ("tag-missing", _edit("tag_b64u", value=_DELETE), "tag_b64u"),
    ("recipients-empty", _edit("recipients", value=[]), "recipients"),
    ("recipients-type", _edit("recipients", value={"1": {}}), "recipients"),
    ("recipients-missing", _edit("recipients", value=_DELETE), "recipients"),
    ("recipient-type", _edit("recipients", 0, value="entry"), "recipients"),
    ("recipients-unsorted", _two_recipients(2, 1), "recipients"),
    ("recipients-duplicate", _two_recipients(1, 1), "recipients"),
    ("kid-negative", _edit("recipients", 0, "recipient_kid", value=-1), "recipients.recipient_kid"),
    (
        "kid-too-big",
        _edit("recipients", 0, "recipient_kid", value=U32_MAX + 1),
        "recipients.recipient_kid",
    ),
    ("kid-bool", _edit("recipients", 0, "recipient_kid", value=True), "recipients.recipient_kid"),
    ("kid-str", _edit("recipients", 0, "recipient_kid", value="1"), "recipients.recipient_kid"),
    (
        "kid-missing",
        _edit("recipients", 0, "recipient_kid", value=_DELETE),
        "recipients.recipient_kid",
    ),
    ("enc-31", _edit("recipients", 0, "enc_b64u", value=_b64(31)), "recipients.enc_b64u"),
    ("enc-33", _edit("recipients", 0, "enc_b64u", value=_b64(33)), "recipients.enc_b64u"),
    ("enc-not-b64", _edit("recipients", 0, "enc_b64u", value="$$"), "recipients.enc_b64u"),
    ("enc-missing", _edit("recipients", 0, "enc_b64u", value=_DELETE), "recipients.enc_b64u"),
    ("ct-47", _edit("recipients", 0, "ct_b64u", value=_b64(47)), "recipients.ct_b64u"),
    ("ct-32", _edit("recipients", 0, "ct_b64u", value=_b64(32)), "recipients.ct_b64u"),
    ("ct-type", _edit("recipients", 0, "ct_b64u", value=None), "recipients.ct_b64u"),
    # First fault wins, in the reference's order.
    (
        "order-aead-before-nonce",
        {**_edit("aead", value="x"), "nonce_b64u": "?"},
        "aead",
    ),
    ("order-enc-before-later-sort", _unsorted_after_bad_enc(), "recipients.enc_b64u"),
]


@pytest.mark.parametrize(
    ("obj", "field"),
    [(obj, field) for _, obj, field in _STRUCTURE_CASES],
    ids=[name for name, _, _ in _STRUCTURE_CASES],
)
def test_structure_rejections(obj: Any, field: str) -> None:
    expected = "schema_validation: payload_encrypted" + (f".{field}" if field else "")
    with pytest.raises(errors.EnvelopeInvalid) as info:
        enc.parse_encrypted(obj)
    assert info.value.reason == expected


@pytest.mark.parametrize(
    "obj",
    [
        _edit("enc_version", value=2),
        _edit("enc_version", value=3),
        _edit("hpke", "mode", value="hybrid-base"),
        _edit("hpke", "mode", value="pqc-base"),
        _edit("hpke", "kem", value="x25519+mlkem768"),
        _edit("hpke", "kem", value="mlkem768"),
        _edit("recipients", 0, "recipient_kid", value=U32_MAX),
        _edit("recipients", 0, "recipient_kid", value=0),
        _edit("extra_field", value={"ignored": True}),
        _two_recipients(1, 2),
    ],
    ids=[
        "enc_version-2",
        "enc_version-3",
        "hybrid-base",
        "pqc-base",
        "x25519+mlkem768",
        "mlkem768",
        "kid-max",
        "kid-0",
        "unknown-member",
        "two-sorted",
    ],
)
def test_structure_accepts(obj: dict[str, Any]) -> None:
    parts = enc.parse_encrypted(obj, strict=True)
    assert parts.ciphertext == b64url_decode(GOLDEN["full:ciphertext_b64u"])


def test_strict_base64url() -> None:
    tag_text = GOLDEN["full:tag_b64u"]
    assert tag_text.endswith("A")  # its last character carries 4 unused zero bits
    for text in (tag_text + "==", tag_text[:-1] + "B"):
        wire = _edit("tag_b64u", value=text)
        # Lenient mode decodes to the same 16 bytes ...
        assert enc.parse_encrypted(wire).tag == b64url_decode(tag_text)
        # ... strict mode wants exactly the canonical unpadded text.
        with pytest.raises(errors.EnvelopeInvalid) as info:
            enc.parse_encrypted(wire, strict=True)
        assert info.value.reason == "schema_validation: payload_encrypted.tag_b64u"


# --- properties -----------------------------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=12,
)
_SECRET_KEYS = st.binary(min_size=32, max_size=32)
_RECIPIENTS = st.lists(
    st.tuples(st.integers(0, U32_MAX), _SECRET_KEYS),
    min_size=1,
    max_size=4,
    unique_by=lambda r: r[0],
)


def _x25519_public(sk: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()


@settings(max_examples=40, deadline=None)
@given(payload=_JSON, recipients=_RECIPIENTS)
def test_round_trip_for_every_recipient(payload: Any, recipients: list[tuple[int, bytes]]) -> None:
    out = enc.encrypt_payload(
        payload, **CTX, recipients=[(kid, _x25519_public(sk)) for kid, sk in recipients]
    )
    kids = [r["recipient_kid"] for r in out.payload_encrypted["recipients"]]
    assert kids == sorted(kid for kid, _ in recipients)
    parts = enc.parse_encrypted(out.payload_encrypted, strict=True)
    assert enc.cipher_hash_of(parts, out.payload_aad) == out.payload_cipher_hash
    assert out.payload_aad == _aad(out.payload_plain_hash)
    for kid, sk in recipients:
        decrypted = enc.decrypt_payload(
            out.payload_encrypted,
            **CTX,
            payload_plain_hash=out.payload_plain_hash,
            recipient_kid=kid,
            recipient_private_key=sk,
        )
        assert jcs.canonicalize(decrypted) == jcs.canonicalize(payload)
        assert decrypted == jcs.loads(jcs.canonicalize(payload))


def _distinct_keys(keys: list[bytes]) -> bool:
    # Two secrets that differ only in bits X25519 clamps away are the same key.
    return len({_x25519_public(sk) for sk in keys}) == len(keys)


@settings(max_examples=40, deadline=None)
@given(
    plaintext=st.binary(max_size=80),
    info=st.binary(max_size=80),
    keys=st.lists(_SECRET_KEYS, min_size=1, max_size=4).filter(_distinct_keys),
    ikm=st.binary(min_size=32, max_size=32),
)
def test_hpke_round_trip_through_library(
    plaintext: bytes, info: bytes, keys: list[bytes], ikm: bytes
) -> None:
    for sk in keys:
        pk = _x25519_public(sk)
        enc_, ct = enc.hpke_seal_base(pk, info, plaintext)
        assert len(enc_) == 32 and len(ct) == len(plaintext) + 16
        assert enc.hpke_open_base(enc_, sk, info, ct) == plaintext
        assert ref.open_base(enc_, sk, info, b"", ct) == plaintext
        ref_enc, ref_ct = ref.seal_base(pk, info, b"", plaintext, ikm_e=ikm)
        assert enc.hpke_open_base(ref_enc, sk, info, ref_ct) == plaintext
        for other in keys:
            if other != sk:
                with pytest.raises(errors.DecryptionFailed):
                    enc.hpke_open_base(enc_, other, info, ct)
        with pytest.raises(errors.DecryptionFailed):
            enc.hpke_open_base(enc_, sk, info + b"\x00", ct)


_BLOB_FIELDS = ("nonce_b64u", "ciphertext_b64u", "tag_b64u")


def _flip_bit(node: dict[str, Any], key: str, data: st.DataObject) -> None:
    raw = bytearray(b64url_decode(node[key]))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    node[key] = b64url_encode(bytes(raw))


@settings(max_examples=50, deadline=None)
@given(payload=_JSON, recipients=_RECIPIENTS, data=st.data())
def test_any_single_tamper_is_detected(
    payload: Any, recipients: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    out = enc.encrypt_payload(
        payload, **CTX, recipients=[(kid, _x25519_public(sk)) for kid, sk in recipients]
    )
    wire = copy.deepcopy(out.payload_encrypted)
    ctx = dict(CTX)
    target = data.draw(
        st.sampled_from(
            [*_BLOB_FIELDS, "created_at", "entity_id"]
            + [(i, f) for i in range(len(recipients)) for f in ("enc_b64u", "ct_b64u")]
        )
    )
    victims = {kid for kid, _ in recipients}  # recipients whose decryption must now fail
    if isinstance(target, tuple):
        entry = wire["recipients"][target[0]]
        _flip_bit(entry, target[1], data)
        victims = {entry["recipient_kid"]}
    elif target in _BLOB_FIELDS:
        _flip_bit(wire, target, data)
    else:
        ctx[target] += data.draw(st.sampled_from(["x", " ", "\u00e9"]))

    aad = _aad(out.payload_plain_hash, **ctx)
    assert enc.cipher_hash_of(enc.parse_encrypted(wire), aad) != out.payload_cipher_hash
    for kid, sk in recipients:
        args: dict[str, Any] = {
            **ctx,
            "payload_plain_hash": out.payload_plain_hash,
            "recipient_kid": kid,
            "recipient_private_key": sk,
        }
        if kid in victims:
            with pytest.raises((errors.DecryptionFailed, errors.PayloadHashMismatch)):
                enc.decrypt_payload(wire, **args)
        else:
            decrypted = enc.decrypt_payload(wire, **args)
            assert jcs.canonicalize(decrypted) == jcs.canonicalize(payload)

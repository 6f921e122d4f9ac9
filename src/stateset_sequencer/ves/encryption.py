"""VES-ENC-1: encrypted event payloads (VES_PROTOCOL §3, §5).

A payload is sealed once with AES-256-GCM under a fresh data-encryption key (DEK), and the
DEK is wrapped for every recipient with HPKE (RFC 9180) in base mode. The AEAD is bound to
its event through ``payload_aad`` (which has no ``ves_version`` and no ``payload_kind``, as
the Rust reference does it, VES_PROTOCOL §13), and the whole ciphertext is summarised by
``payload_cipher_hash``, the only payload hash the sequencer can check for such events.

HPKE is built here from ``cryptography`` primitives rather than taken from a package so that
every step can be checked against the RFC's published intermediate values: suite
DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, with the AEAD left as a parameter so
the tests can run the same code on RFC 9180 Appendix A.1 (which uses AES-128-GCM).

Nothing here does I/O or reads a clock; randomness is injectable so that known answers can
be reproduced.
"""

from __future__ import annotations

import hmac
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from . import hashing, jcs
from .codec import U32_MAX, b64url_decode, b64url_encode, parse_uuid
from .errors import (
    BadBase64,
    BadInteger,
    BadKey,
    BadLength,
    DecryptionFailed,
    EnvelopeInvalid,
    NonCanonical,
    NoRecipients,
    PayloadHashMismatch,
    RecipientNotFound,
)

__all__ = [
    "ACCEPTED_ENC_VERSIONS",
    "ACCEPTED_HPKE_KEMS",
    "ACCEPTED_HPKE_MODES",
    "SUITE_X25519_SHA256_AES128GCM",
    "SUITE_X25519_SHA256_AES256GCM",
    "EncryptedParts",
    "EncryptedPayload",
    "HpkeContext",
    "HpkeSuite",
    "RandomSource",
    "aes_gcm_open",
    "aes_gcm_seal",
    "cipher_hash_of",
    "decap",
    "decrypt_payload",
    "derive_key_pair",
    "encap",
    "encrypt_payload",
    "hpke_open_base",
    "hpke_seal_base",
    "key_schedule_base",
    "labeled_expand",
    "labeled_extract",
    "parse_encrypted",
]

# --- wire constants (VES_PROTOCOL §5.1 step 9, §5.4) -------------------------------------

ENC_VERSION: Final = 1
AEAD_NAME: Final = "AES-256-GCM"
HPKE_MODE_BASE: Final = "base"
HPKE_KEM_X25519: Final = "X25519-HKDF-SHA256"
HPKE_KDF_NAME: Final = "HKDF-SHA256"

ACCEPTED_ENC_VERSIONS: Final = frozenset({1, 2, 3})
ACCEPTED_HPKE_MODES: Final = frozenset({"base", "hybrid-base", "pqc-base"})
ACCEPTED_HPKE_KEMS: Final = frozenset({"X25519-HKDF-SHA256", "x25519+mlkem768", "mlkem768"})

SALT_LEN: Final = 16
DEK_LEN: Final = 32
NONCE_LEN: Final = 12
TAG_LEN: Final = 16
ENC_LEN: Final = 32  # Nenc of DHKEM(X25519, HKDF-SHA256)
WRAPPED_DEK_LEN: Final = DEK_LEN + TAG_LEN

_REASON: Final = "schema_validation: payload_encrypted"

# --- HPKE constants (RFC 9180 §4, §5, §7.1) ----------------------------------------------

KEM_ID_X25519_HKDF_SHA256: Final = 0x0020
KDF_ID_HKDF_SHA256: Final = 0x0001
AEAD_ID_AES_128_GCM: Final = 0x0001
AEAD_ID_AES_256_GCM: Final = 0x0002

_HPKE_V1: Final = b"HPKE-v1"
_MODE_BASE: Final = b"\x00"
_N_SECRET: Final = 32  # Nsecret, RFC 9180 §7.1 table 2
_N_SK: Final = 32  # Nsk
_N_PK: Final = 32  # Npk
_N_H: Final = 32  # Nh of HKDF-SHA256, RFC 9180 §7.2 table 3
_N_N: Final = 12  # Nn of both AES-GCM AEADs, RFC 9180 §7.3 table 5
_KEM_SUITE_ID: Final = b"KEM" + KEM_ID_X25519_HKDF_SHA256.to_bytes(2, "big")

RandomSource = Callable[[int], bytes]
"""Returns that many random bytes; ``os.urandom`` unless a test injects a fixed source."""


@dataclass(frozen=True, slots=True)
class HpkeSuite:
    """An HPKE ciphersuite with DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256 fixed.

    Only the AEAD varies: VES uses AES-256-GCM, while RFC 9180 Appendix A.1 publishes its
    X25519 vectors for AES-128-GCM. Both are AES-GCM, so only the id and key length differ.
    """

    aead_id: int
    key_len: int

    @property
    def suite_id(self) -> bytes:
        """``"HPKE" ‖ I2OSP(kem_id, 2) ‖ I2OSP(kdf_id, 2) ‖ I2OSP(aead_id, 2)`` (§5.1)."""
        return (
            b"HPKE"
            + KEM_ID_X25519_HKDF_SHA256.to_bytes(2, "big")
            + KDF_ID_HKDF_SHA256.to_bytes(2, "big")
            + self.aead_id.to_bytes(2, "big")
        )


SUITE_X25519_SHA256_AES256GCM: Final = HpkeSuite(aead_id=AEAD_ID_AES_256_GCM, key_len=32)
SUITE_X25519_SHA256_AES128GCM: Final = HpkeSuite(aead_id=AEAD_ID_AES_128_GCM, key_len=16)


@dataclass(frozen=True, slots=True)
class HpkeContext:
    """Output of the base-mode KeySchedule (RFC 9180 §5.1); secrets are kept out of repr."""

    key_schedule_context: bytes
    secret: bytes = field(repr=False)
    key: bytes = field(repr=False)
    base_nonce: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)


# --- HPKE building blocks ----------------------------------------------------------------


def labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    """RFC 9180 §4 LabeledExtract: HKDF-Extract (RFC 5869 §2.2) over a labelled IKM.

    An empty salt means ``Nh`` zero bytes, exactly as RFC 5869 specifies; HMAC pads its key
    with zeros anyway, but spelling it out keeps the construction visible.
    """
    mac = HMAC(salt or bytes(_N_H), hashes.SHA256())
    mac.update(_HPKE_V1 + suite_id + label + ikm)
    return mac.finalize()


def labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    """RFC 9180 §4 LabeledExpand: HKDF-Expand with ``I2OSP(L, 2) ‖ "HPKE-v1" ‖ suite_id``
    prefixed to the label, so every derived value is bound to its length and suite."""
    labeled_info = length.to_bytes(2, "big") + _HPKE_V1 + suite_id + label + info
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=labeled_info).derive(prk)


def _public_of(sk: bytes) -> bytes:
    """SerializePublicKey(pk(sk)) for X25519 (RFC 9180 §7.1.1): the raw u-coordinate."""
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()


def _dh(sk: bytes, pk: bytes) -> bytes | None:
    """X25519 (RFC 7748 §5); ``None`` when the output is all zeros.

    RFC 9180 §7.1.4 requires that case to abort: it means ``pk`` is of small order and the
    "shared" secret is known to everyone. ``cryptography`` signals it with ``ValueError``.
    """
    try:
        return X25519PrivateKey.from_private_bytes(sk).exchange(
            X25519PublicKey.from_public_bytes(pk)
        )
    except ValueError:
        return None


def _check_key(name: str, value: bytes, length: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != length:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise BadKey(f"{name} must be {length} bytes, got {got}")
    return bytes(value)


def derive_key_pair(ikm: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 §7.1.3 DeriveKeyPair for X25519: ``(sk, pk)`` from input keying material.

    The reference's hpke crate makes every ephemeral key this way from 32 random bytes, so
    deriving it here (rather than generating a key directly) is what lets a fixed ``ikm``
    reproduce its ``enc`` byte for byte. The secret is not clamped: X25519 clamps on use.
    """
    if not isinstance(ikm, bytes | bytearray) or len(ikm) < _N_SK:
        raise BadLength(f"DeriveKeyPair needs at least {_N_SK} bytes of ikm")
    dkp_prk = labeled_extract(_KEM_SUITE_ID, b"", b"dkp_prk", bytes(ikm))
    sk = labeled_expand(_KEM_SUITE_ID, dkp_prk, b"sk", b"", _N_SK)
    return sk, _public_of(sk)


def _extract_and_expand(dh: bytes, kem_context: bytes) -> bytes:
    """RFC 9180 §4.1 ExtractAndExpand: the KEM shared secret, bound to ``enc ‖ pkR``."""
    eae_prk = labeled_extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    return labeled_expand(_KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, _N_SECRET)


def encap(pk_r: bytes, ikm_e: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 §4.1 DHKEM Encap with the ephemeral key from ``DeriveKeyPair(ikm_e)``.

    Returns ``(shared_secret, enc)``. A small-order recipient key raises :class:`BadKey`.
    """
    pk_r = _check_key("recipient public key", pk_r, _N_PK)
    sk_e, pk_e = derive_key_pair(ikm_e)
    dh = _dh(sk_e, pk_r)
    if dh is None:
        raise BadKey("recipient public key is of small order")
    return _extract_and_expand(dh, pk_e + pk_r), pk_e


def decap(enc: bytes, sk_r: bytes) -> bytes:
    """RFC 9180 §4.1 DHKEM Decap: the shared secret for ``enc`` under ``sk_r``.

    A malformed or small-order ``enc`` comes from the sender, so it is reported as
    :class:`DecryptionFailed`; a malformed ``sk_r`` is the caller's and raises :class:`BadKey`.
    """
    sk_r = _check_key("recipient private key", sk_r, _N_SK)
    if not isinstance(enc, bytes | bytearray) or len(enc) != ENC_LEN:
        raise DecryptionFailed(f"HPKE enc must be {ENC_LEN} bytes")
    dh = _dh(sk_r, bytes(enc))
    if dh is None:
        raise DecryptionFailed("HPKE enc is of small order")
    return _extract_and_expand(dh, bytes(enc) + _public_of(sk_r))


def key_schedule_base(
    shared_secret: bytes, info: bytes, suite: HpkeSuite = SUITE_X25519_SHA256_AES256GCM
) -> HpkeContext:
    """RFC 9180 §5.1 KeySchedule for mode_base: empty ``psk`` and ``psk_id``.

    ``info`` enters only through its hash in the context, which is why VES can pass the
    32-byte ``payload_aad`` as ``info`` and thereby bind each DEK wrap to its event.
    """
    sid = suite.suite_id
    psk_id_hash = labeled_extract(sid, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(sid, b"", b"info_hash", info)
    context = _MODE_BASE + psk_id_hash + info_hash
    secret = labeled_extract(sid, shared_secret, b"secret", b"")
    return HpkeContext(
        key_schedule_context=context,
        secret=secret,
        key=labeled_expand(sid, secret, b"key", context, suite.key_len),
        base_nonce=labeled_expand(sid, secret, b"base_nonce", context, _N_N),
        exporter_secret=labeled_expand(sid, secret, b"exp", context, _N_H),
    )


def hpke_seal_base(
    pk_r: bytes,
    info: bytes,
    aad: bytes,
    plaintext: bytes,
    *,
    ikm_e: bytes,
    suite: HpkeSuite = SUITE_X25519_SHA256_AES256GCM,
) -> tuple[bytes, bytes]:
    """RFC 9180 §6.1 single-shot SealBase: ``(enc, ct)``.

    Only sequence number 0 is ever used, so the nonce is ``base_nonce`` itself (§5.2
    ComputeNonce XORs in ``I2OSP(0, Nn)``, which changes nothing).
    """
    shared_secret, enc = encap(pk_r, ikm_e)
    ctx = key_schedule_base(shared_secret, info, suite)
    return enc, AESGCM(ctx.key).encrypt(ctx.base_nonce, plaintext, aad)


def hpke_open_base(
    enc: bytes,
    sk_r: bytes,
    info: bytes,
    aad: bytes,
    ciphertext: bytes,
    *,
    suite: HpkeSuite = SUITE_X25519_SHA256_AES256GCM,
) -> bytes:
    """RFC 9180 §6.1 single-shot OpenBase at sequence 0; any failure is DecryptionFailed."""
    ctx = key_schedule_base(decap(enc, sk_r), info, suite)
    try:
        return AESGCM(ctx.key).decrypt(ctx.base_nonce, ciphertext, aad)
    except InvalidTag:
        raise DecryptionFailed("HPKE open failed: wrong key, info or ciphertext") from None


# --- payload AEAD (VES_PROTOCOL §5.1 step 4) ---------------------------------------------


def aes_gcm_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """AES-GCM, split as the wire carries it: ``(ciphertext, tag16)``."""
    if not isinstance(key, bytes | bytearray) or len(key) not in (16, 32):
        raise BadKey("AES-GCM key must be 16 or 32 bytes")
    if not isinstance(nonce, bytes | bytearray) or len(nonce) != NONCE_LEN:
        raise BadLength(f"AES-GCM nonce must be {NONCE_LEN} bytes")
    sealed = AESGCM(bytes(key)).encrypt(bytes(nonce), plaintext, aad)
    return sealed[:-TAG_LEN], sealed[-TAG_LEN:]


def aes_gcm_open(key: bytes, nonce: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`aes_gcm_seal`; a bad tag, key, nonce or AAD is DecryptionFailed."""
    if not isinstance(key, bytes | bytearray) or len(key) not in (16, 32):
        raise DecryptionFailed("AES-GCM key must be 16 or 32 bytes")
    if len(nonce) != NONCE_LEN or len(tag) != TAG_LEN:
        raise DecryptionFailed("AES-GCM nonce or tag has the wrong length")
    try:
        return AESGCM(bytes(key)).decrypt(bytes(nonce), ciphertext + tag, aad)
    except InvalidTag:
        raise DecryptionFailed("payload AEAD failed: tampered data or wrong AAD") from None


# --- the encrypted-payload object (VES_PROTOCOL §5.4) ------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptedParts:
    """A structurally valid ``payload_encrypted`` with its blobs decoded.

    ``recipients`` is ``(kid, enc, ct)`` in wire order, which :func:`parse_encrypted` has
    checked to be strictly ascending by kid, so it is also the order the hash uses.
    """

    enc_version: int
    aead: str
    nonce: bytes
    ciphertext: bytes
    tag: bytes
    hpke_mode: str
    hpke_kem: str
    hpke_kdf: str
    hpke_aead: str
    recipients: tuple[tuple[int, bytes, bytes], ...]


def _reject(path: str, message: str) -> EnvelopeInvalid:
    return EnvelopeInvalid(f"{_REASON}.{path}" if path else _REASON, message)


def _member(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj or obj[key] is None:
        raise _reject(path, f"{path} is required")
    return obj[key]


def _text(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = _member(obj, key, path)
    if not isinstance(value, str):
        raise _reject(path, f"{path} must be a string")
    return value


def _integer(obj: Mapping[str, Any], key: str, path: str, maximum: int) -> int:
    value = _member(obj, key, path)
    # bool is an int subclass in Python, but JSON true is not a number.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum:
        return value
    raise _reject(path, f"{path} must be an integer in 0..{maximum}")


def _blob(obj: Mapping[str, Any], key: str, path: str, *, strict: bool) -> bytes:
    text = _text(obj, key, path)
    try:
        return b64url_decode(text, strict=strict)
    except BadBase64:
        message = "must be canonical base64url without padding" if strict else "must be base64url"
        raise _reject(path, f"{path} {message}") from None


def _mapping(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = _member(obj, key, path)
    if not isinstance(value, Mapping):
        raise _reject(path, f"{path} must be an object")
    return value


def parse_encrypted(obj: Mapping[str, Any], *, strict: bool = False) -> EncryptedParts:
    """Check ``payload_encrypted`` as the sequencer does and decode its blobs.

    Checks run in the reference's order (``validate_payload_encrypted``), so the first fault
    found is the one the reference reports, as ``EnvelopeInvalid`` with reason
    ``schema_validation: payload_encrypted.<field>``. ``strict`` is
    ``VES_STRICT_FORMAT_VALIDATION``: every blob must then be canonical unpadded base64url.
    """
    if not isinstance(obj, Mapping):
        raise _reject("", "payload_encrypted must be an object")
    enc_version = _integer(obj, "enc_version", "enc_version", U32_MAX)
    if enc_version not in ACCEPTED_ENC_VERSIONS:
        raise _reject("enc_version", "enc_version must be 1, 2 or 3")
    aead = _text(obj, "aead", "aead")
    if aead != AEAD_NAME:
        raise _reject("aead", f"aead must be {AEAD_NAME}")
    hpke = _mapping(obj, "hpke", "hpke")
    mode = _text(hpke, "mode", "hpke.mode")
    if mode not in ACCEPTED_HPKE_MODES:
        raise _reject("hpke.mode", f"hpke.mode must be one of {sorted(ACCEPTED_HPKE_MODES)}")
    kem = _text(hpke, "kem", "hpke.kem")
    if kem not in ACCEPTED_HPKE_KEMS:
        raise _reject("hpke.kem", f"hpke.kem must be one of {sorted(ACCEPTED_HPKE_KEMS)}")
    kdf = _text(hpke, "kdf", "hpke.kdf")
    if kdf != HPKE_KDF_NAME:
        raise _reject("hpke.kdf", f"hpke.kdf must be {HPKE_KDF_NAME}")
    hpke_aead = _text(hpke, "aead", "hpke.aead")
    if hpke_aead != AEAD_NAME:
        raise _reject("hpke.aead", f"hpke.aead must be {AEAD_NAME}")

    nonce = _blob(obj, "nonce_b64u", "nonce_b64u", strict=strict)
    if len(nonce) != NONCE_LEN:
        raise _reject("nonce_b64u", f"nonce_b64u must decode to {NONCE_LEN} bytes")
    ciphertext = _blob(obj, "ciphertext_b64u", "ciphertext_b64u", strict=strict)
    if not ciphertext:
        raise _reject("ciphertext_b64u", "ciphertext_b64u must not be empty")
    tag = _blob(obj, "tag_b64u", "tag_b64u", strict=strict)
    if len(tag) != TAG_LEN:
        raise _reject("tag_b64u", f"tag_b64u must decode to {TAG_LEN} bytes")

    return EncryptedParts(
        enc_version=enc_version,
        aead=aead,
        nonce=nonce,
        ciphertext=ciphertext,
        tag=tag,
        hpke_mode=mode,
        hpke_kem=kem,
        hpke_kdf=kdf,
        hpke_aead=hpke_aead,
        recipients=_parse_recipients(_member(obj, "recipients", "recipients"), strict=strict),
    )


def _parse_recipients(value: Any, *, strict: bool) -> tuple[tuple[int, bytes, bytes], ...]:
    """Recipients must be non-empty and strictly ascending by kid (sorted and unique),
    because ``recipients_hash`` uses list order and two encoders must agree on it."""
    if not isinstance(value, list | tuple):
        raise _reject("recipients", "recipients must be an array")
    if not value:
        raise _reject("recipients", "recipients must not be empty")
    parsed: list[tuple[int, bytes, bytes]] = []
    for entry in value:
        if not isinstance(entry, Mapping):
            raise _reject("recipients", "each recipient must be an object")
        kid = _integer(entry, "recipient_kid", "recipients.recipient_kid", U32_MAX)
        if parsed and kid <= parsed[-1][0]:
            raise _reject("recipients", "recipients must be sorted by recipient_kid and unique")
        enc = _blob(entry, "enc_b64u", "recipients.enc_b64u", strict=strict)
        if len(enc) != ENC_LEN:
            raise _reject("recipients.enc_b64u", f"enc_b64u must decode to {ENC_LEN} bytes")
        ct = _blob(entry, "ct_b64u", "recipients.ct_b64u", strict=strict)
        if len(ct) != WRAPPED_DEK_LEN:
            raise _reject("recipients.ct_b64u", f"ct_b64u must decode to {WRAPPED_DEK_LEN} bytes")
        parsed.append((kid, enc, ct))
    return tuple(parsed)


def cipher_hash_of(parts: EncryptedParts, aad: bytes) -> bytes:
    """``payload_cipher_hash`` of a received payload: what the sequencer compares with the
    signed value. ``aad`` is ``hashing.payload_aad`` over the envelope and its signed plain
    hash; the preimage's ``U32(1)`` is a constant whatever ``enc_version`` says."""
    return hashing.payload_cipher_hash(
        nonce=parts.nonce,
        aad=aad,
        ciphertext=parts.ciphertext,
        tag=parts.tag,
        recipients_hash=hashing.recipients_hash(parts.recipients),
    )


# --- encrypt / decrypt (VES_PROTOCOL §5.1, §5.2) -----------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptedPayload:
    """What an agent puts in an encrypted event.

    ``payload_encrypted`` is the wire object (§5.1 step 9); the two hashes go into the
    envelope and the signing hash. ``payload_aad`` and ``recipients_hash`` are the
    intermediate values, kept because callers and tests often need them.
    """

    payload_encrypted: dict[str, Any]
    payload_plain_hash: bytes
    payload_cipher_hash: bytes
    payload_aad: bytes
    recipients_hash: bytes


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else parse_uuid(value)


def _event_aad(
    *,
    tenant_id: uuid.UUID | str,
    store_id: uuid.UUID | str,
    event_id: uuid.UUID | str,
    source_agent_id: uuid.UUID | str,
    agent_key_id: int,
    entity_type: str,
    entity_id: str,
    event_type: str,
    created_at: str,
    payload_plain_hash: bytes,
) -> bytes:
    return hashing.payload_aad(
        tenant_id=_as_uuid(tenant_id),
        store_id=_as_uuid(store_id),
        event_id=_as_uuid(event_id),
        source_agent_id=_as_uuid(source_agent_id),
        agent_key_id=agent_key_id,
        entity_type=entity_type,
        entity_id=entity_id,
        event_type=event_type,
        created_at=created_at,
        payload_plain_hash=payload_plain_hash,
    )


def _draw(randomness: RandomSource, length: int) -> bytes:
    raw = randomness(length)
    if not isinstance(raw, bytes | bytearray) or len(raw) != length:
        raise BadLength(f"randomness source must return {length} bytes")
    return bytes(raw)


def _check_recipients(recipients: Sequence[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Refuse what the sequencer would refuse, before any randomness is spent."""
    if not recipients:
        raise NoRecipients("encryption needs at least one recipient")
    checked: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    for kid, public_key in recipients:
        if isinstance(kid, bool) or not isinstance(kid, int) or not 0 <= kid <= U32_MAX:
            raise BadInteger(f"recipient_kid {kid!r} does not fit in u32")
        if kid in seen:
            raise _reject("recipients", f"duplicate recipient_kid {kid}")
        seen.add(kid)
        checked.append((kid, _check_key(f"public key of recipient {kid}", public_key, _N_PK)))
    return checked


def encrypt_payload(
    payload: Any,
    *,
    tenant_id: uuid.UUID | str,
    store_id: uuid.UUID | str,
    event_id: uuid.UUID | str,
    source_agent_id: uuid.UUID | str,
    agent_key_id: int,
    entity_type: str,
    entity_id: str,
    event_type: str,
    created_at: str,
    recipients: Sequence[tuple[int, bytes]],
    randomness: RandomSource = os.urandom,
) -> EncryptedPayload:
    """Encrypt a JSON payload for ``recipients`` (``(kid, X25519 public key)``), §5.1.

    ``randomness`` is called for the salt (16), DEK (32) and nonce (12), then for one
    32-byte HPKE ephemeral ikm per recipient in the order given; only a test should replace
    it. ``created_at`` must be the exact string that will be signed.
    """
    checked = _check_recipients(recipients)
    canonical = jcs.canonicalize(payload)
    salt = _draw(randomness, SALT_LEN)
    dek = _draw(randomness, DEK_LEN)
    nonce = _draw(randomness, NONCE_LEN)

    plain_hash = hashing.payload_plain_hash_of_canonical(canonical, salt)
    aad = _event_aad(
        tenant_id=tenant_id,
        store_id=store_id,
        event_id=event_id,
        source_agent_id=source_agent_id,
        agent_key_id=agent_key_id,
        entity_type=entity_type,
        entity_id=entity_id,
        event_type=event_type,
        created_at=created_at,
        payload_plain_hash=plain_hash,
    )
    ciphertext, tag = aes_gcm_seal(dek, nonce, salt + canonical, aad)

    # info = payload_aad and aad = "" (what encrypt.rs does, not what the VEC spec says).
    wrapped = sorted(
        (
            (kid, *hpke_seal_base(pk, aad, b"", dek, ikm_e=_draw(randomness, _N_SK)))
            for kid, pk in checked
        ),
        key=lambda entry: entry[0],
    )
    recipients_hash = hashing.recipients_hash(wrapped)
    cipher_hash = hashing.payload_cipher_hash(
        nonce=nonce, aad=aad, ciphertext=ciphertext, tag=tag, recipients_hash=recipients_hash
    )
    wire: dict[str, Any] = {
        "enc_version": ENC_VERSION,
        "aead": AEAD_NAME,
        "nonce_b64u": b64url_encode(nonce),
        "ciphertext_b64u": b64url_encode(ciphertext),
        "tag_b64u": b64url_encode(tag),
        "hpke": {
            "mode": HPKE_MODE_BASE,
            "kem": HPKE_KEM_X25519,
            "kdf": HPKE_KDF_NAME,
            "aead": AEAD_NAME,
        },
        "recipients": [
            {"recipient_kid": kid, "enc_b64u": b64url_encode(enc), "ct_b64u": b64url_encode(ct)}
            for kid, enc, ct in wrapped
        ],
    }
    return EncryptedPayload(
        payload_encrypted=wire,
        payload_plain_hash=plain_hash,
        payload_cipher_hash=cipher_hash,
        payload_aad=aad,
        recipients_hash=recipients_hash,
    )


def decrypt_payload(
    payload_encrypted: Mapping[str, Any],
    *,
    tenant_id: uuid.UUID | str,
    store_id: uuid.UUID | str,
    event_id: uuid.UUID | str,
    source_agent_id: uuid.UUID | str,
    agent_key_id: int,
    entity_type: str,
    entity_id: str,
    event_type: str,
    created_at: str,
    payload_plain_hash: bytes,
    recipient_kid: int,
    recipient_private_key: bytes,
) -> Any:
    """Open an encrypted payload as recipient ``recipient_kid`` and return the JSON value.

    The AAD is rebuilt from the envelope and the *signed* plain hash, so any change to the
    event fields fails the AEAD (:class:`DecryptionFailed`); the plain hash is then checked
    over ``salt ‖ JCS(parsed)`` (:class:`PayloadHashMismatch`), re-canonicalizing as the
    reference does. A malformed object raises :class:`EnvelopeInvalid`.
    """
    parts = parse_encrypted(payload_encrypted)
    if (parts.enc_version, parts.hpke_mode, parts.hpke_kem) != (
        ENC_VERSION,
        HPKE_MODE_BASE,
        HPKE_KEM_X25519,
    ):
        raise DecryptionFailed("only enc_version 1 with base-mode X25519 HPKE can be opened")
    sk_r = _check_key("recipient private key", recipient_private_key, _N_SK)
    entry = next((r for r in parts.recipients if r[0] == recipient_kid), None)
    if entry is None:
        raise RecipientNotFound(f"no recipient entry for kid {recipient_kid!r}")
    _, enc, wrapped_dek = entry

    aad = _event_aad(
        tenant_id=tenant_id,
        store_id=store_id,
        event_id=event_id,
        source_agent_id=source_agent_id,
        agent_key_id=agent_key_id,
        entity_type=entity_type,
        entity_id=entity_id,
        event_type=event_type,
        created_at=created_at,
        payload_plain_hash=payload_plain_hash,
    )
    dek = hpke_open_base(enc, sk_r, aad, b"", wrapped_dek)
    if len(dek) != DEK_LEN:
        raise DecryptionFailed(f"unwrapped DEK must be {DEK_LEN} bytes")
    plaintext = aes_gcm_open(dek, parts.nonce, parts.ciphertext, parts.tag, aad)
    if len(plaintext) < SALT_LEN:
        raise DecryptionFailed("decrypted plaintext is shorter than its salt")
    salt, body = plaintext[:SALT_LEN], plaintext[SALT_LEN:]
    try:
        # serde_json reads UTF-8 only; json.loads on bytes would also sniff UTF-16/32.
        value = jcs.loads(body.decode("utf-8"))
        recomputed = hashing.payload_plain_hash(value, salt)
    except (UnicodeDecodeError, NonCanonical):
        raise DecryptionFailed("decrypted payload is not valid JSON") from None
    if not hmac.compare_digest(recomputed, payload_plain_hash):
        raise PayloadHashMismatch("decrypted payload does not match payload_plain_hash")
    return value

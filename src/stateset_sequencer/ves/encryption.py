"""VES-ENC-1: encrypted event payloads (VES_PROTOCOL §3, §5).

A payload is sealed once with AES-256-GCM under a fresh data-encryption key (DEK), and the
DEK is wrapped for every recipient with HPKE (RFC 9180) in base mode. The AEAD is bound to
its event through ``payload_aad`` (which has no ``ves_version`` and no ``payload_kind``, as
the Rust reference does it, VES_PROTOCOL §13), and the whole ciphertext is summarised by
``payload_cipher_hash``, the only payload hash the sequencer can check for such events.

HPKE is ``cryptography``'s own (suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
AES-256-GCM), so this module holds no key schedule to get wrong. The library picks each
ephemeral key itself; the known answers that fix one (RFC 9180 Appendix A.1, the golden
file) are reproduced by a deterministic seal that lives with the tests, injected through
``hpke_seal`` and checked to interoperate with the library both ways.

Nothing here does I/O or reads a clock; randomness is injectable so that known answers can
be reproduced.
"""

from __future__ import annotations

import hmac
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
    "EncryptedParts",
    "EncryptedPayload",
    "HpkeSeal",
    "RandomSource",
    "aes_gcm_open",
    "aes_gcm_seal",
    "cipher_hash_of",
    "decrypt_payload",
    "encrypt_payload",
    "hpke_open_base",
    "hpke_seal_base",
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
X25519_KEY_LEN: Final = 32
ENC_LEN: Final = 32  # Nenc of DHKEM(X25519, HKDF-SHA256)
WRAPPED_DEK_LEN: Final = DEK_LEN + TAG_LEN

_REASON: Final = "schema_validation: payload_encrypted"

RandomSource = Callable[[int], bytes]
"""Returns that many random bytes; ``os.urandom`` unless a test injects a fixed source."""

HpkeSeal = Callable[[bytes, bytes, bytes], tuple[bytes, bytes]]
"""``(recipient public key, info, plaintext) -> (enc, ct)``: one base-mode HPKE seal.

Always :func:`hpke_seal_base` in production. A test that needs known answers injects a
deterministic seal, because the library draws each ephemeral key itself and cannot be told
which one to use.
"""

# --- HPKE (RFC 9180) ---------------------------------------------------------------------

_HPKE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _check_key(name: str, value: bytes, length: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != length:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise BadKey(f"{name} must be {length} bytes, got {got}")
    return bytes(value)


def hpke_seal_base(pk_r: bytes, info: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """RFC 9180 §6.1 single-shot SealBase with an empty aad: ``(enc, ct)``.

    The library offers no aad and needs none here: VES binds each DEK wrap to its event by
    passing ``payload_aad`` as ``info``, as the reference's encrypt.rs does.
    """
    public_key = X25519PublicKey.from_public_bytes(
        _check_key("recipient public key", pk_r, X25519_KEY_LEN)
    )
    try:
        sealed = _HPKE.encrypt(plaintext, public_key, info=info)
    except ValueError:
        # An all-zero DH output (RFC 9180 §7.1.4) is the only way a well-formed key can
        # fail: the key is of small order and the "shared" secret would be public.
        raise BadKey("recipient public key is of small order") from None
    return sealed[:ENC_LEN], sealed[ENC_LEN:]


def hpke_open_base(enc: bytes, sk_r: bytes, info: bytes, ciphertext: bytes) -> bytes:
    """RFC 9180 §6.1 single-shot OpenBase with an empty aad.

    A malformed ``sk_r`` is the caller's and raises :class:`BadKey`. Everything else comes
    from the sender, so a bad, short or small-order ``enc`` is :class:`DecryptionFailed`
    just like a bad tag.
    """
    private_key = X25519PrivateKey.from_private_bytes(
        _check_key("recipient private key", sk_r, X25519_KEY_LEN)
    )
    # The library takes enc ‖ ct as one string, so a short enc would silently move the
    # split point instead of being reported.
    if not isinstance(enc, bytes | bytearray) or len(enc) != ENC_LEN:
        raise DecryptionFailed(f"HPKE enc must be {ENC_LEN} bytes")
    try:
        return _HPKE.decrypt(bytes(enc) + ciphertext, private_key, info=info)
    except (InvalidTag, ValueError):
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


def _wrap(seal: HpkeSeal, public_key: bytes, info: bytes, dek: bytes) -> tuple[bytes, bytes]:
    """A seal that a test injects is held to the wire's lengths, as :func:`_draw` holds a
    randomness source to its sizes, so that no malformed recipient entry can be emitted."""
    enc, ct = seal(public_key, info, dek)
    if len(enc) != ENC_LEN or len(ct) != WRAPPED_DEK_LEN:
        raise BadLength(
            f"HPKE seal must return a {ENC_LEN}-byte enc and a {WRAPPED_DEK_LEN}-byte ct"
        )
    return bytes(enc), bytes(ct)


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
        checked.append(
            (kid, _check_key(f"public key of recipient {kid}", public_key, X25519_KEY_LEN))
        )
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
    hpke_seal: HpkeSeal = hpke_seal_base,
) -> EncryptedPayload:
    """Encrypt a JSON payload for ``recipients`` (``(kid, X25519 public key)``), §5.1.

    ``randomness`` is called for the salt (16), DEK (32) and nonce (12), and ``hpke_seal``
    once per recipient in the order given, with ``info = payload_aad``; only a test should
    replace either. ``created_at`` must be the exact string that will be signed.
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
        ((kid, *_wrap(hpke_seal, pk, aad, dek)) for kid, pk in checked),
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
    sk_r = _check_key("recipient private key", recipient_private_key, X25519_KEY_LEN)
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
    dek = hpke_open_base(enc, sk_r, aad, wrapped_dek)
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

"""A deterministic RFC 9180 reference for the tests: base mode, DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256 and AES-GCM, single-shot at sequence number 0.

``ves.encryption`` seals with ``cryptography``'s HPKE, which draws every ephemeral key itself
and exposes no key schedule. So it cannot reproduce RFC 9180 Appendix A.1 or the golden
file's wraps (both fix the ephemeral key), nor show the RFC's intermediate values. This
module does only that, from the ephemeral key's ikm, and the tests prove that the library
opens what this seals and the other way round, so that the known answers pin the library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand


@dataclass(frozen=True, slots=True)
class Aead:
    """Only the AEAD varies: Appendix A.1 uses AES-128-GCM, VES-ENC-1 AES-256-GCM."""

    aead_id: int
    key_len: int

    @property
    def suite_id(self) -> bytes:
        # "HPKE" ‖ kem_id 0x0020 ‖ kdf_id 0x0001 ‖ aead_id (§5.1)
        return b"HPKE\x00\x20\x00\x01" + self.aead_id.to_bytes(2, "big")


AES_128_GCM: Final = Aead(aead_id=0x0001, key_len=16)
AES_256_GCM: Final = Aead(aead_id=0x0002, key_len=32)

_KEM_SUITE_ID: Final = b"KEM\x00\x20"


@dataclass(frozen=True, slots=True)
class Context:
    """The base-mode KeySchedule output (§5.1); secrets stay out of repr, as in any log."""

    key_schedule_context: bytes
    secret: bytes = field(repr=False)
    key: bytes = field(repr=False)
    base_nonce: bytes = field(repr=False)
    exporter_secret: bytes = field(repr=False)


def _extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    # RFC 5869: an empty salt means Nh zero bytes.
    mac = HMAC(salt or bytes(32), hashes.SHA256())
    mac.update(b"HPKE-v1" + suite_id + label + ikm)
    return mac.finalize()


def _expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=labeled).derive(prk)


def _public(sk: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()


def _shared_secret(sk: bytes, pk: bytes, kem_context: bytes) -> bytes:
    # exchange() raises ValueError on the all-zero DH that §7.1.4 says to abort on.
    dh = X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))
    prk = _extract(_KEM_SUITE_ID, b"", b"eae_prk", dh)
    return _expand(_KEM_SUITE_ID, prk, b"shared_secret", kem_context, 32)


def derive_key_pair(ikm: bytes) -> tuple[bytes, bytes]:
    """§7.1.3 DeriveKeyPair: the Rust reference makes every ephemeral key this way, which is
    why a fixed ikm reproduces its ``enc``."""
    sk = _expand(_KEM_SUITE_ID, _extract(_KEM_SUITE_ID, b"", b"dkp_prk", ikm), b"sk", b"", 32)
    return sk, _public(sk)


def encap(pk_r: bytes, ikm_e: bytes) -> tuple[bytes, bytes]:
    """§4.1 Encap with the ephemeral key from ``ikm_e``: ``(shared_secret, enc)``."""
    sk_e, pk_e = derive_key_pair(ikm_e)
    return _shared_secret(sk_e, pk_r, pk_e + pk_r), pk_e


def decap(enc: bytes, sk_r: bytes) -> bytes:
    return _shared_secret(sk_r, enc, enc + _public(sk_r))


def key_schedule_base(shared_secret: bytes, info: bytes, aead: Aead) -> Context:
    sid = aead.suite_id
    context = (
        b"\x00" + _extract(sid, b"", b"psk_id_hash", b"") + _extract(sid, b"", b"info_hash", info)
    )
    secret = _extract(sid, shared_secret, b"secret", b"")
    return Context(
        key_schedule_context=context,
        secret=secret,
        key=_expand(sid, secret, b"key", context, aead.key_len),
        base_nonce=_expand(sid, secret, b"base_nonce", context, 12),
        exporter_secret=_expand(sid, secret, b"exp", context, 32),
    )


def seal_base(
    pk_r: bytes, info: bytes, aad: bytes, pt: bytes, *, ikm_e: bytes, aead: Aead = AES_256_GCM
) -> tuple[bytes, bytes]:
    """§6.1 SealBase: ``(enc, ct)``; at sequence 0 the nonce is ``base_nonce`` itself."""
    shared, enc = encap(pk_r, ikm_e)
    ctx = key_schedule_base(shared, info, aead)
    return enc, AESGCM(ctx.key).encrypt(ctx.base_nonce, pt, aad)


def open_base(
    enc: bytes, sk_r: bytes, info: bytes, aad: bytes, ct: bytes, *, aead: Aead = AES_256_GCM
) -> bytes:
    """§6.1 OpenBase; a failure is the library's InvalidTag, which is all a test needs."""
    ctx = key_schedule_base(decap(enc, sk_r), info, aead)
    return AESGCM(ctx.key).decrypt(ctx.base_nonce, ct, aad)

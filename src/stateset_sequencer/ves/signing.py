"""Ed25519 over 32-byte VES hashes (VES_PROTOCOL §4, §8), agents' and the sequencer's.

Signatures are pure RFC 8032 Ed25519 over the *hash*, never the preimage. Verification runs
in libsodium (PyNaCl), which refuses non-canonical ``S``, small-order ``R`` and small-order or
non-canonical public keys. The reference's dalek ``verify`` is laxer only on crafted
small-order keys, which this module refuses at registration already.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from . import hashing
from .codec import format_rfc3339, parse_hex, parse_key_text, parse_uuid, to_bare_hex
from .errors import (
    BadHex,
    BadKey,
    BadLength,
    BadSignature,
    ReceiptHashMismatch,
    ReceiptSignatureInvalid,
    VesError,
)

# Order of the Ed25519 base point: a canonical signature's S is below it (RFC 8032 §5.1.7).
ED25519_L = 2**252 + 27742317777372353535851937790883648493

SIGNATURE_ALG_ED25519 = "ed25519"
SIGNATURE_ALG_NONE = "none"


def parse_public_key(value: str | bytes) -> bytes:
    """A 32-byte Ed25519 public key from raw bytes or text (hex, ``0x`` hex, base64, base64url).

    Refuses encodings that are not canonical points and points of small order: a key like
    that would accept forged signatures for every message.
    """
    raw = _key_bytes(value, 32, "public key")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        raise BadKey("public key is not a canonical Ed25519 point of large order")
    return raw


def parse_seed(value: str | bytes) -> bytes:
    """A 32-byte Ed25519 seed (RFC 8032 secret key) from raw bytes or text."""
    return _key_bytes(value, 32, "seed")


def parse_signature(value: str | bytes) -> bytes:
    """A 64-byte signature from raw bytes or hex (``0x`` optional); S must be canonical."""
    if isinstance(value, str):
        try:
            raw = parse_hex(value, 64)
        except (BadHex, BadLength) as exc:
            raise BadSignature(f"signature: {exc}") from None
    elif isinstance(value, bytes | bytearray):
        raw = bytes(value)
    else:
        raise BadSignature(f"signature must be text or bytes, got {type(value).__name__}")
    if len(raw) != 64:
        raise BadSignature(f"signature must be 64 bytes, got {len(raw)}")
    if int.from_bytes(raw[32:], "little") >= ED25519_L:
        raise BadSignature("signature S is not canonical (S >= L)")
    return raw


def _key_bytes(value: str | bytes, length: int, what: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        if len(raw) != length:
            raise BadKey(f"{what} must be {length} bytes, got {len(raw)}")
        return raw
    if isinstance(value, str):
        try:
            return parse_key_text(value, length)
        except VesError as exc:
            raise BadKey(f"{what}: {exc}") from None
    raise BadKey(f"{what} must be text or bytes, got {type(value).__name__}")


class Signer:
    """An Ed25519 signing key made from a 32-byte seed (PyNaCl ``SigningKey(seed)``)."""

    __slots__ = ("_key", "public_key")

    def __init__(self, seed: bytes | str) -> None:
        self._key = nacl.signing.SigningKey(parse_seed(seed))
        self.public_key: bytes = bytes(self._key.verify_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def sign(self, message_hash: bytes) -> bytes:
        """Sign a 32-byte VES hash; returns the 64-byte signature."""
        if len(message_hash) != 32:
            raise BadLength(f"VES signs 32-byte hashes, got {len(message_hash)} bytes")
        return self._key.sign(message_hash).signature


def verify(public_key: bytes, message_hash: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature over a 32-byte hash; raise :class:`BadSignature` if not."""
    if len(public_key) != 32:
        raise BadKey(f"public key must be 32 bytes, got {len(public_key)}")
    if len(signature) != 64:
        raise BadSignature(f"signature must be 64 bytes, got {len(signature)}")
    try:
        nacl.bindings.crypto_sign_open(signature + message_hash, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        raise BadSignature("signature does not verify") from None


def is_valid(public_key: bytes, message_hash: bytes, signature: bytes) -> bool:
    """Like :func:`verify`, as a boolean."""
    try:
        verify(public_key, message_hash, signature)
    except VesError:
        return False
    return True


# --- sequencer receipts (§8) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    """A sequencer receipt. Only ``receipt_hash`` is signed; id and time ride alongside."""

    sequencer_id: uuid.UUID
    event_id: uuid.UUID
    sequence_number: int
    sequenced_at: str
    receipt_hash: bytes
    signature_alg: str
    sequencer_signature: bytes
    sequencer_key_version: int = 0

    @property
    def unsigned(self) -> bool:
        """Stored without a signature (alg ``none``), as a sequencer without a key once
        issued them; a receipt that claims a signature is judged by verifying it."""
        return self.signature_alg == SIGNATURE_ALG_NONE and not self.sequencer_signature

    def to_wire(self) -> dict[str, Any]:
        """The reference's camelCase REST form: bare hex, ``""`` when unsigned."""
        return {
            "sequencerId": str(self.sequencer_id),
            "eventId": str(self.event_id),
            "sequenceNumber": self.sequence_number,
            "sequencedAt": self.sequenced_at,
            "receiptHash": to_bare_hex(self.receipt_hash),
            "signatureAlg": self.signature_alg,
            "sequencerSignature": to_bare_hex(self.sequencer_signature),
            "sequencerKeyVersion": self.sequencer_key_version,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Receipt:
        """Parse the REST form; raises a :class:`VesError` subtype on malformed fields."""
        missing = [k for k in _RECEIPT_FIELDS if k not in obj]
        if missing:
            raise BadLength(f"receipt is missing {', '.join(missing)}")
        seq, version = obj["sequenceNumber"], obj.get("sequencerKeyVersion", 0)
        sequenced_at, alg = obj["sequencedAt"], obj["signatureAlg"]
        signature_text = obj["sequencerSignature"]
        if type(seq) is not int or type(version) is not int:
            raise BadLength("receipt sequenceNumber and sequencerKeyVersion must be integers")
        if not isinstance(sequenced_at, str) or not isinstance(alg, str):
            raise BadLength("receipt sequencedAt and signatureAlg must be strings")
        return cls(
            sequencer_id=parse_uuid(obj["sequencerId"]),
            event_id=parse_uuid(obj["eventId"]),
            sequence_number=seq,
            sequenced_at=sequenced_at,
            receipt_hash=parse_hex(obj["receiptHash"], 32),
            signature_alg=alg,
            sequencer_signature=parse_signature(signature_text) if signature_text else b"",
            sequencer_key_version=version,
        )


_RECEIPT_FIELDS = (
    "sequencerId",
    "eventId",
    "sequenceNumber",
    "sequencedAt",
    "receiptHash",
    "signatureAlg",
    "sequencerSignature",
)


class ReceiptSigner:
    """Issues Ed25519-signed receipts for one sequencer identity. There is no unsigned
    mode: a receipt is the sequencer's promise, so issuing one needs a key (receipts stored
    as ``"none"`` by older versions are still read, and judged, as data)."""

    __slots__ = ("_signer", "sequencer_id")

    def __init__(self, sequencer_id: uuid.UUID, seed: bytes | str) -> None:
        self.sequencer_id = sequencer_id
        self._signer = Signer(seed)

    @property
    def public_key(self) -> bytes:
        return self._signer.public_key

    def issue(
        self,
        *,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        event_id: uuid.UUID,
        sequence_number: int,
        event_signing_hash: bytes,
        sequenced_at: datetime | str,
    ) -> Receipt:
        digest = hashing.receipt_hash(
            tenant_id, store_id, event_id, sequence_number, event_signing_hash
        )
        at = sequenced_at if isinstance(sequenced_at, str) else format_rfc3339(sequenced_at)
        return self._signed(event_id, sequence_number, at, digest)

    def issue_many(
        self,
        *,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        events: Sequence[tuple[uuid.UUID, int, bytes]],
        sequenced_at: datetime,
    ) -> list[Receipt]:
        """:meth:`issue` for each ``(event_id, sequence_number, event_signing_hash)`` of one
        stream, all sequenced at one instant (a group commit's), in order. PyNaCl releases
        the GIL while it signs, so a thread pool runs slices of a group side by side."""
        at = format_rfc3339(sequenced_at)
        digests = hashing.receipt_hashes(tenant_id, store_id, events)
        return [
            self._signed(event_id, sequence_number, at, digest)
            for (event_id, sequence_number, _), digest in zip(events, digests, strict=True)
        ]

    def _signed(self, event_id: uuid.UUID, sequence_number: int, at: str, digest: bytes) -> Receipt:
        return Receipt(
            sequencer_id=self.sequencer_id,
            event_id=event_id,
            sequence_number=sequence_number,
            sequenced_at=at,
            receipt_hash=digest,
            signature_alg=SIGNATURE_ALG_ED25519,
            sequencer_signature=self._signer.sign(digest),
        )


def verify_receipt(
    receipt: Receipt,
    *,
    tenant_id: uuid.UUID,
    store_id: uuid.UUID,
    event_signing_hash: bytes,
    sequencer_public_key: bytes | None,
    check_signature: Callable[[bytes, bytes, bytes], None] = verify,
) -> None:
    """Check a receipt's hash against the event it names and, when a sequencer key is
    given, its signature.

    Raises :class:`ReceiptHashMismatch` when the hash does not recompute, and
    :class:`ReceiptSignatureInvalid` when the receipt is unsigned or its signature does not
    verify; both are :class:`BadSignature`. ``check_signature`` is the Ed25519 check to use
    (raising a :class:`VesError` when it fails); the verifier passes one that answers from
    verdicts computed ahead in worker processes.
    """
    expected = hashing.receipt_hash(
        tenant_id, store_id, receipt.event_id, receipt.sequence_number, event_signing_hash
    )
    if expected != receipt.receipt_hash:
        raise ReceiptHashMismatch("receipt hash does not match the event and sequence number")
    if sequencer_public_key is None:
        return
    if receipt.signature_alg != SIGNATURE_ALG_ED25519 or not receipt.sequencer_signature:
        raise ReceiptSignatureInvalid(
            f"receipt is not Ed25519-signed (alg {receipt.signature_alg!r})"
        )
    try:
        check_signature(sequencer_public_key, receipt.receipt_hash, receipt.sequencer_signature)
    except VesError as exc:
        raise ReceiptSignatureInvalid(f"receipt {exc}") from None

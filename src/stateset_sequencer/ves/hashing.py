"""Every domain-separated SHA-256 of VES (VES_PROTOCOL §0), computed once, here, and
the version 2 event signing hash that also signs the execution controls (PROTOCOL §4.1).

Integers are big-endian (``U32``/``U64``), strings are ``U32(len utf8) ‖ utf8`` and UUIDs are
their 16 raw bytes. Domain prefixes are raw ASCII with no terminator or length prefix.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import jcs
from .codec import enc_str, u32, u64
from .errors import BadInteger, BadLength, EnvelopeInvalid

DOMAIN_PAYLOAD_PLAIN = b"VES_PAYLOAD_PLAIN_V1"
DOMAIN_PAYLOAD_AAD = b"VES_PAYLOAD_AAD_V1"
DOMAIN_PAYLOAD_CIPHER = b"VES_PAYLOAD_CIPHER_V1"
DOMAIN_RECIPIENTS = b"VES_RECIPIENTS_V1"
DOMAIN_EVENTSIG = b"VES_EVENTSIG_V1"
DOMAIN_EVENTSIG_V2 = b"VES_EVENTSIG_V2"
DOMAIN_LEAF = b"VES_LEAF_V1"
DOMAIN_PAD_LEAF = b"VES_PAD_LEAF_V1"
DOMAIN_NODE = b"VES_NODE_V1"
DOMAIN_STREAM = b"VES_STREAM_V1"
DOMAIN_RECEIPT = b"VES_RECEIPT_V1"
DOMAIN_STATE_ROOT = b"VES_STATE_ROOT_V1"
# What an agent signs to prove it holds a key it registers (the reference's
# compute_pop_challenge): SHA-256 of this domain then the 32-byte public key.
DOMAIN_POP = b"VES_POP_V1"

VES_VERSION_V1 = 1
VES_VERSION_V2 = 2
SUPPORTED_VES_VERSIONS = (VES_VERSION_V1, VES_VERSION_V2)
# The largest base_version a V2 event may sign: every SDK must be able to hold the value it
# verifies, and JavaScript's integers are exact only up to here (the reference SDK's limit).
MAX_SIGNED_BASE_VERSION = 2**53 - 1

ZERO_HASH = bytes(32)
PAD_LEAF = hashlib.sha256(DOMAIN_PAD_LEAF).digest()

_sha256 = hashlib.sha256


def _check_len(name: str, value: bytes, length: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != length:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise BadLength(f"{name} must be {length} bytes, got {got}")
    return bytes(value)


def _uuid(name: str, value: uuid.UUID) -> bytes:
    if not isinstance(value, uuid.UUID):
        raise BadLength(f"{name} must be a uuid.UUID, got {type(value).__name__}")
    return value.bytes


# --- payload hashes (§3) -----------------------------------------------------------------


def payload_plain_hash_of_canonical(canonical: bytes, salt: bytes | None = None) -> bytes:
    """``SHA256("VES_PAYLOAD_PLAIN_V1" ‖ [salt16] ‖ canonical)`` for already-canonical bytes."""
    if salt is None:
        return _sha256(DOMAIN_PAYLOAD_PLAIN + canonical).digest()
    return _sha256(DOMAIN_PAYLOAD_PLAIN + _check_len("salt", salt, 16) + canonical).digest()


def payload_plain_hash(payload: Any, salt: bytes | None = None) -> bytes:
    """Plain hash of a JSON payload: plaintext events omit the salt, encrypted ones carry it."""
    return payload_plain_hash_of_canonical(jcs.canonicalize(payload), salt)


def payload_aad(
    *,
    tenant_id: uuid.UUID,
    store_id: uuid.UUID,
    event_id: uuid.UUID,
    source_agent_id: uuid.UUID,
    agent_key_id: int,
    entity_type: str,
    entity_id: str,
    event_type: str,
    created_at: str,
    payload_plain_hash: bytes,
) -> bytes:
    """AAD binding an encrypted payload to its event. Note: no ``ves_version``, no kind."""
    return _sha256(
        b"".join(
            (
                DOMAIN_PAYLOAD_AAD,
                _uuid("tenant_id", tenant_id),
                _uuid("store_id", store_id),
                _uuid("event_id", event_id),
                _uuid("source_agent_id", source_agent_id),
                u32(agent_key_id),
                enc_str(entity_type),
                enc_str(entity_id),
                enc_str(event_type),
                enc_str(created_at),
                _check_len("payload_plain_hash", payload_plain_hash, 32),
            )
        )
    ).digest()


def recipients_hash(recipients: Iterable[tuple[int, bytes, bytes]]) -> bytes:
    """Binary RECIP_ENTRY encoding of ``(kid, enc, ct)`` in list order (not JCS of JSON)."""
    parts = [DOMAIN_RECIPIENTS]
    for kid, enc, ct in recipients:
        parts += (u32(kid), u32(len(enc)), enc, u32(len(ct)), ct)
    return _sha256(b"".join(parts)).digest()


def payload_cipher_hash(
    *, nonce: bytes, aad: bytes, ciphertext: bytes, tag: bytes, recipients_hash: bytes
) -> bytes:
    """Cipher hash of an encrypted payload. ``U32(1)`` is a constant, whatever enc_version."""
    return _sha256(
        b"".join(
            (
                DOMAIN_PAYLOAD_CIPHER,
                u32(1),
                _check_len("nonce", nonce, 12),
                _check_len("payload_aad", aad, 32),
                u32(len(ciphertext)),
                ciphertext,
                _check_len("tag", tag, 16),
                _check_len("recipients_hash", recipients_hash, 32),
            )
        )
    ).digest()


# --- event signing hash (§4) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningFields:
    """Every field an event signing hash may cover. ``command_id`` and ``base_version``
    are signed only by version 2; version 1 ignores them."""

    ves_version: int
    tenant_id: uuid.UUID
    store_id: uuid.UUID
    event_id: uuid.UUID
    source_agent_id: uuid.UUID
    agent_key_id: int
    entity_type: str
    entity_id: str
    event_type: str
    created_at: str
    payload_kind: int
    payload_plain_hash: bytes
    payload_cipher_hash: bytes
    command_id: uuid.UUID | None = None
    base_version: int | None = None


def unsupported_version(version: object) -> EnvelopeInvalid:
    return EnvelopeInvalid(
        "unsupported_version", f"Unsupported VES version {version}; expected 1 or 2"
    )


def v1_preimage(f: SigningFields) -> bytes:
    """The version 1 recipe, 171 + Σ(string bytes) long, with ``f.ves_version`` in its
    version field: a V1 event's whole preimage, and the inner part of a V2 one."""
    return b"".join(
        (
            DOMAIN_EVENTSIG,
            u32(f.ves_version),
            _uuid("tenant_id", f.tenant_id),
            _uuid("store_id", f.store_id),
            _uuid("event_id", f.event_id),
            _uuid("source_agent_id", f.source_agent_id),
            u32(f.agent_key_id),
            enc_str(f.entity_type),
            enc_str(f.entity_id),
            enc_str(f.event_type),
            enc_str(f.created_at),
            u32(f.payload_kind),
            _check_len("payload_plain_hash", f.payload_plain_hash, 32),
            _check_len("payload_cipher_hash", f.payload_cipher_hash, 32),
        )
    )


def execution_controls(command_id: uuid.UUID | None, base_version: int | None) -> bytes:
    """``0x00`` or ``0x01 ‖ UUID`` for the command, then ``0x00`` or ``0x01 ‖ U64`` for the
    base version: 2 to 26 bytes, so that an absent value and any present one differ."""
    command = b"\x00" if command_id is None else b"\x01" + _uuid("command_id", command_id)
    if base_version is None:
        return command + b"\x00"
    if (
        isinstance(base_version, bool)
        or not isinstance(base_version, int)
        or not 0 <= base_version <= MAX_SIGNED_BASE_VERSION
    ):
        raise BadInteger(
            f"base_version must be an integer from 0 to 2^53-1 to be signed, got {base_version}"
        )
    return command + b"\x01" + u64(base_version)


def event_signing_preimage(f: SigningFields) -> bytes:
    """What is hashed for the event's ``ves_version``: the V1 recipe, or
    ``"VES_EVENTSIG_V2" ‖ SHA256(V1 recipe) ‖ controls`` (49 to 73 bytes) for V2."""
    if f.ves_version == VES_VERSION_V1:
        return v1_preimage(f)
    if f.ves_version == VES_VERSION_V2:
        inner = _sha256(v1_preimage(f)).digest()
        return DOMAIN_EVENTSIG_V2 + inner + execution_controls(f.command_id, f.base_version)
    raise unsupported_version(f.ves_version)


def event_signing_hash(f: SigningFields) -> bytes:
    """The 32 bytes an agent signs with Ed25519, by the recipe of the event's version."""
    return _sha256(event_signing_preimage(f)).digest()


# --- Merkle tree, stream and state roots (§6–§7) -----------------------------------------


def leaf_hash(
    tenant_id: uuid.UUID,
    store_id: uuid.UUID,
    sequence_number: int,
    event_signing_hash: bytes,
    agent_signature: bytes,
) -> bytes:
    """``SHA256("VES_LEAF_V1" ‖ t ‖ s ‖ U64(seq) ‖ esh ‖ sig64)`` (147-byte preimage)."""
    return _sha256(
        b"".join(
            (
                DOMAIN_LEAF,
                _uuid("tenant_id", tenant_id),
                _uuid("store_id", store_id),
                u64(sequence_number),
                _check_len("event_signing_hash", event_signing_hash, 32),
                _check_len("agent_signature", agent_signature, 64),
            )
        )
    ).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA256("VES_NODE_V1" ‖ left ‖ right)``."""
    return _sha256(
        DOMAIN_NODE + _check_len("left", left, 32) + _check_len("right", right, 32)
    ).digest()


def stream_id(tenant_id: uuid.UUID, store_id: uuid.UUID) -> bytes:
    """``SHA256("VES_STREAM_V1" ‖ t ‖ s)``."""
    return _sha256(
        DOMAIN_STREAM + _uuid("tenant_id", tenant_id) + _uuid("store_id", store_id)
    ).digest()


def state_root(
    *,
    stream: bytes,
    prev_state_root: bytes,
    merkle_root: bytes,
    sequence_start: int,
    sequence_end: int,
    leaf_count: int,
) -> bytes:
    """The next state root in a stream's commitment chain (133-byte preimage)."""
    return _sha256(
        b"".join(
            (
                DOMAIN_STATE_ROOT,
                _check_len("stream_id", stream, 32),
                _check_len("prev_state_root", prev_state_root, 32),
                _check_len("merkle_root", merkle_root, 32),
                u64(sequence_start),
                u64(sequence_end),
                u32(leaf_count),
            )
        )
    ).digest()


# --- receipts (§8) -----------------------------------------------------------------------


def receipt_hash(
    tenant_id: uuid.UUID,
    store_id: uuid.UUID,
    event_id: uuid.UUID,
    sequence_number: int,
    event_signing_hash: bytes,
) -> bytes:
    """``SHA256("VES_RECEIPT_V1" ‖ t ‖ s ‖ e ‖ U64(seq) ‖ esh)``; sequencer id and time are
    not covered."""
    one = (event_id, sequence_number, event_signing_hash)
    [digest] = receipt_hashes(tenant_id, store_id, [one])
    return digest


def receipt_hashes(
    tenant_id: uuid.UUID,
    store_id: uuid.UUID,
    events: Sequence[tuple[uuid.UUID, int, bytes]],
) -> list[bytes]:
    """:func:`receipt_hash` of each ``(event_id, sequence_number, event_signing_hash)`` of
    one stream, in order. The stream's part of the preimage is built once: a group commit
    issues hundreds of receipts for one stream at a time."""
    prefix = DOMAIN_RECEIPT + _uuid("tenant_id", tenant_id) + _uuid("store_id", store_id)
    return [
        _sha256(
            b"".join(
                (
                    prefix,
                    _uuid("event_id", event_id),
                    u64(sequence_number),
                    _check_len("event_signing_hash", signing_hash, 32),
                )
            )
        ).digest()
        for event_id, sequence_number, signing_hash in events
    ]


def pop_challenge(public_key: bytes) -> bytes:
    """The digest a proof of possession of ``public_key`` signs."""
    return _sha256(DOMAIN_POP + _check_len("public_key", public_key, 32)).digest()

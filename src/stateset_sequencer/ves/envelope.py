"""The VES event envelope (REFERENCE_MAP §4.1) as a strict model, its validation in the
reference's order (VES_PROTOCOL §4), and helpers that build and sign envelopes, with the
version 1 or the version 2 signing hash (PROTOCOL §4.1; V2 also signs ``command_id`` and
``base_version``).

Parsing is strict about JSON types (``false`` is not an integer, ``1.0`` is not a key id) and
keeps ``created_at`` as the exact string sent, because that string is what was signed.
Semantic checks that the reference reports per event (version, byte lengths, payload-kind
consistency, encrypted structure, timestamp, payload hash) live in :func:`validate`, so that
the sequencer can reject one event without failing its whole batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)

from . import encryption, hashing
from .codec import (
    U32_MAX,
    U64_MAX,
    parse_hex,
    parse_key_text,
    parse_rfc3339,
    parse_uuid,
    to_0x_hex,
)
from .errors import BadTimestamp, EnvelopeInvalid, VesError
from .signing import Signer, verify
from .storable import UnstorableText, utf8_text

VES_VERSION_V1 = hashing.VES_VERSION_V1
VES_VERSION_V2 = hashing.VES_VERSION_V2
SUPPORTED_VES_VERSIONS = hashing.SUPPORTED_VES_VERSIONS
# What our signers produce unless told otherwise, as the reference SDK does: V2 signs the
# execution controls. V1 stays available for sequencers that accept nothing else.
DEFAULT_VES_VERSION = VES_VERSION_V2
PAYLOAD_KIND_PLAINTEXT = 0
PAYLOAD_KIND_ENCRYPTED = 1

# Byte-length limits in UTF-8 bytes, as the reference enforces them.
MAX_ENTITY_TYPE_BYTES = 128
MAX_ENTITY_ID_BYTES = 512
MAX_EVENT_TYPE_BYTES = 256
# The envelope's free-text fields and their limits, for every check of them.
TEXT_FIELDS = (
    ("entity_type", MAX_ENTITY_TYPE_BYTES),
    ("entity_id", MAX_ENTITY_ID_BYTES),
    ("event_type", MAX_EVENT_TYPE_BYTES),
)


def _strict_format(info: ValidationInfo) -> bool:
    ctx = info.context
    return bool(ctx.get("strict_format")) if isinstance(ctx, Mapping) else False


def _hex_validator(length: int) -> Callable[[Any, ValidationInfo], bytes]:
    def validate_hex(value: Any, info: ValidationInfo) -> bytes:
        if isinstance(value, bytes) and len(value) == length:
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a hex string of {length} bytes")
        try:
            return parse_hex(value, length, strict=_strict_format(info))
        except VesError as exc:
            raise ValueError(str(exc)) from None

    return validate_hex


def _uuid_validator(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return parse_uuid(value)
    except VesError as exc:
        raise ValueError(str(exc)) from None


_HEX32_SCHEMA = {"type": "string", "pattern": "^(0x)?[0-9a-fA-F]{64}$"}
_HEX64_SCHEMA = {"type": "string", "pattern": "^(0x)?[0-9a-fA-F]{128}$"}

Hash32 = Annotated[
    bytes,
    PlainValidator(_hex_validator(32)),
    PlainSerializer(to_0x_hex, return_type=str),
    WithJsonSchema(_HEX32_SCHEMA),
]
Signature64 = Annotated[
    bytes,
    PlainValidator(_hex_validator(64)),
    PlainSerializer(to_0x_hex, return_type=str),
    WithJsonSchema(_HEX64_SCHEMA),
]
UuidField = Annotated[
    uuid.UUID,
    PlainValidator(_uuid_validator),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "format": "uuid"}),
]
U32 = Annotated[int, Field(ge=0, le=U32_MAX)]
U64 = Annotated[int, Field(ge=0, le=U64_MAX)]

_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)


class HpkeParams(BaseModel):
    model_config = _STRICT
    mode: str
    kem: str
    kdf: str
    aead: str


class EncryptedRecipient(BaseModel):
    model_config = _STRICT
    recipient_kid: U32
    enc_b64u: str
    ct_b64u: str


class EncryptedPayload(BaseModel):
    """``payload_encrypted`` as sent. Types are checked here; the VES-ENC-1 structure rules
    (lengths, sorted kids, allowed suites) are per-event checks in :func:`validate`."""

    model_config = _STRICT
    enc_version: U32
    aead: str
    nonce_b64u: str
    ciphertext_b64u: str
    tag_b64u: str
    hpke: HpkeParams
    recipients: list[EncryptedRecipient]


class VesEventEnvelope(BaseModel):
    """One signed VES event (v1 or v2), field for field as the reference's wire format.

    Unknown fields are ignored, as the reference does; ``sequence_number`` and
    ``sequenced_at`` sent by a client are among them (the sequencer assigns both).
    """

    model_config = _STRICT

    ves_version: U32
    event_id: UuidField
    tenant_id: UuidField
    store_id: UuidField
    source_agent_id: UuidField
    agent_key_id: U32
    entity_type: str
    entity_id: str
    event_type: str
    created_at: str
    payload_kind: Annotated[int, Field(ge=0, le=1)]
    payload: Any = None
    payload_encrypted: EncryptedPayload | None = None
    payload_plain_hash: Hash32
    payload_cipher_hash: Hash32
    agent_signature: Signature64
    agent_signature_scheme: U32 | None = None
    agent_signature_bundle: dict[str, Any] | None = None
    command_id: UuidField | None = None
    base_version: U64 | None = None

    def signing_fields(self) -> hashing.SigningFields:
        return hashing.SigningFields(
            ves_version=self.ves_version,
            tenant_id=self.tenant_id,
            store_id=self.store_id,
            event_id=self.event_id,
            source_agent_id=self.source_agent_id,
            agent_key_id=self.agent_key_id,
            entity_type=self.entity_type,
            entity_id=self.entity_id,
            event_type=self.event_type,
            created_at=self.created_at,
            payload_kind=self.payload_kind,
            payload_plain_hash=self.payload_plain_hash,
            payload_cipher_hash=self.payload_cipher_hash,
            command_id=self.command_id,
            base_version=self.base_version,
        )

    def signing_hash(self) -> bytes:
        return hashing.event_signing_hash(self.signing_fields())

    def to_wire(self) -> dict[str, Any]:
        """The JSON object a client sends: snake_case, ``0x`` hex, optional fields omitted
        when unset."""
        wire: dict[str, Any] = self.model_dump(mode="json", exclude_none=True)
        if self.payload_kind == PAYLOAD_KIND_PLAINTEXT and "payload" not in wire:
            wire["payload"] = None
        return wire


def parse_envelope(obj: Mapping[str, Any], *, strict_format: bool = False) -> VesEventEnvelope:
    """Parse a decoded JSON object into an envelope; raises pydantic's ``ValidationError``
    (the HTTP layer maps it to 422 with field paths)."""
    return VesEventEnvelope.model_validate(obj, context={"strict_format": strict_format})


def parse_envelope_json(text: str | bytes, *, strict_format: bool = False) -> VesEventEnvelope:
    return VesEventEnvelope.model_validate_json(text, context={"strict_format": strict_format})


# --- per-event validation, in the reference's order (VES_PROTOCOL §4) ----------------------


def check_version(env: VesEventEnvelope) -> None:
    _check_version(env.ves_version)


def _check_version(version: int) -> None:
    if version not in SUPPORTED_VES_VERSIONS:
        raise hashing.unsupported_version(version)


def check_execution_controls(env: VesEventEnvelope) -> None:
    """A V2 event signs its ``base_version``, so it must be one every SDK can hold exactly
    (at most 2^53-1, the reference SDK's limit). V1 does not sign it and keeps the full
    u64 it has always had, so events stored before V2 still replay."""
    _check_controls(env.ves_version, env.base_version)


def _check_controls(version: int, base: int | None) -> None:
    if version != VES_VERSION_V2 or base is None:
        return
    if not 0 <= base <= hashing.MAX_SIGNED_BASE_VERSION:
        raise EnvelopeInvalid(
            "schema_validation: base_version",
            f"base_version of a ves_version 2 event must be from 0 to 2^53-1, got {base}",
        )


def check_lengths(env: VesEventEnvelope) -> None:
    """Byte lengths in UTF-8: entity_type 1–128, entity_id 1–512, event_type 1–256, and
    valid UTF-8 (:func:`ves.storable.utf8_text`). NUL is allowed here, as the reference
    allows it in a signed event; the sequencer refuses it where events are stored, as
    text no store can hold (``ves.storable.storable_text``)."""
    for name, limit in TEXT_FIELDS:
        try:
            utf8_text(getattr(env, name), field=name, min_bytes=1, max_bytes=limit)
        except UnstorableText as exc:
            raise EnvelopeInvalid(f"schema_validation: {name}", exc.message) from None


def check_payload_kind(env: VesEventEnvelope) -> None:
    """Plaintext: payload present, no payload_encrypted, zero cipher hash. Encrypted: the
    reverse."""
    if env.payload_kind == PAYLOAD_KIND_PLAINTEXT:
        if env.payload is None:
            raise EnvelopeInvalid("schema_validation: payload", "payload is required")
        if env.payload_encrypted is not None:
            raise EnvelopeInvalid(
                "schema_validation: payload_encrypted",
                "payload_encrypted must be absent for a plaintext event",
            )
        if env.payload_cipher_hash != hashing.ZERO_HASH:
            raise EnvelopeInvalid(
                "schema_validation: payload_cipher_hash",
                "payload_cipher_hash must be zero for a plaintext event",
            )
    else:
        if env.payload is not None:
            raise EnvelopeInvalid(
                "schema_validation: payload", "payload must be absent for an encrypted event"
            )
        if env.payload_encrypted is None:
            raise EnvelopeInvalid(
                "schema_validation: payload_encrypted", "payload_encrypted is required"
            )


def check_created_at(env: VesEventEnvelope) -> datetime:
    """The instant ``created_at`` names (UTC); the text itself is what is signed."""
    try:
        return parse_rfc3339(env.created_at)
    except BadTimestamp as exc:
        raise EnvelopeInvalid("schema_validation: created_at", str(exc)) from None


def check_payload_hash(
    env: VesEventEnvelope,
    *,
    strict_format: bool = False,
    parts: encryption.EncryptedParts | None = None,
) -> None:
    """Plaintext: recompute the plain hash. Encrypted: the plain hash is salted and cannot
    be checked, so recompute the cipher hash instead (``parts``: already parsed structure)."""
    if env.payload_kind == PAYLOAD_KIND_PLAINTEXT:
        try:
            expected = hashing.payload_plain_hash(env.payload)
        except VesError as exc:
            raise EnvelopeInvalid("schema_validation: payload", str(exc)) from None
        if expected != env.payload_plain_hash:
            raise EnvelopeInvalid(
                "invalid_payload_hash", "payload_plain_hash does not match the payload"
            )
        return
    if cipher_hash(env, strict_format=strict_format, parts=parts) != env.payload_cipher_hash:
        raise EnvelopeInvalid(
            "invalid_cipher_hash", "payload_cipher_hash does not match payload_encrypted"
        )


def encrypted_parts(
    env: VesEventEnvelope, *, strict_format: bool = False
) -> encryption.EncryptedParts:
    """Check and decode ``payload_encrypted`` (VES-ENC-1 structure rules)."""
    if env.payload_encrypted is None:
        raise EnvelopeInvalid("schema_validation: payload_encrypted", "payload_encrypted missing")
    return encryption.parse_encrypted(env.payload_encrypted.model_dump(), strict=strict_format)


def cipher_hash(
    env: VesEventEnvelope,
    *,
    strict_format: bool = False,
    parts: encryption.EncryptedParts | None = None,
) -> bytes:
    """Recompute an encrypted event's cipher hash from its envelope."""
    if parts is None:
        parts = encrypted_parts(env, strict_format=strict_format)
    aad = hashing.payload_aad(
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
    )
    return encryption.cipher_hash_of(parts, aad)


def validate(env: VesEventEnvelope, *, strict_format: bool = False) -> bytes:
    """Run the reference's per-event checks 1–6 in order and return the event signing hash.

    Key lookup and the signature (checks 7–8) need the key registry, so the caller does
    them, with :func:`verify_signature`. Raises :class:`EnvelopeInvalid` with the
    reference's reason code at the first failure.
    """
    return validate_parts(env, strict_format=strict_format).signing_hash


@dataclass(frozen=True, slots=True)
class Validated:
    """What the checks computed that a store needs again: the event signing hash and the
    instant ``created_at`` names."""

    signing_hash: bytes
    created_at: datetime


def validate_parts(env: VesEventEnvelope, *, strict_format: bool = False) -> Validated:
    """:func:`validate`, keeping the parsed ``created_at`` too (ingest stores it)."""
    check_version(env)
    check_execution_controls(env)
    check_lengths(env)
    check_payload_kind(env)
    parts = None
    if env.payload_kind == PAYLOAD_KIND_ENCRYPTED:
        # Structure is checked before created_at, as the reference orders it; the parsed
        # parts then serve the cipher hash, so the structure is decoded once.
        parts = encrypted_parts(env, strict_format=strict_format)
    created_at = check_created_at(env)
    check_payload_hash(env, strict_format=strict_format, parts=parts)
    return Validated(env.signing_hash(), created_at)


def verify_signature(env: VesEventEnvelope, public_key: bytes, signing_hash: bytes) -> None:
    """Check the agent's Ed25519 signature over the signing hash."""
    try:
        verify(public_key, signing_hash, env.agent_signature)
    except VesError:
        raise EnvelopeInvalid("invalid_signature", "Agent signature does not verify") from None


# --- building and signing -----------------------------------------------------------------


def sign_event(
    *,
    signer: Signer,
    tenant_id: uuid.UUID,
    store_id: uuid.UUID,
    source_agent_id: uuid.UUID,
    entity_type: str,
    entity_id: str,
    event_type: str,
    created_at: str,
    payload: Any,
    agent_key_id: int = 1,
    event_id: uuid.UUID | None = None,
    command_id: uuid.UUID | None = None,
    base_version: int | None = None,
    recipients: Sequence[tuple[int, bytes]] | None = None,
    ves_version: int = DEFAULT_VES_VERSION,
) -> VesEventEnvelope:
    """Build a complete signed envelope from a payload and a key.

    ``ves_version`` picks the signing hash: 2 (the default) also signs ``command_id`` and
    ``base_version``; 1 is for sequencers that accept nothing newer. With ``recipients``
    (``(kid, X25519 public key)`` pairs) the payload is encrypted with VES-ENC-1 and the
    event is of kind 1; otherwise it is plaintext. ``created_at`` is
    passed in (this package reads no clock) and signed exactly as given.
    """
    _check_version(ves_version)
    _check_controls(ves_version, base_version)
    try:
        parse_rfc3339(created_at)
    except BadTimestamp as exc:
        raise EnvelopeInvalid("schema_validation: created_at", str(exc)) from None
    event_id = event_id or uuid.uuid4()
    encrypted: dict[str, Any] | None = None
    if recipients is None:
        kind = PAYLOAD_KIND_PLAINTEXT
        plain = hashing.payload_plain_hash(payload)
        cipher = hashing.ZERO_HASH
    else:
        kind = PAYLOAD_KIND_ENCRYPTED
        sealed = encryption.encrypt_payload(
            payload,
            tenant_id=tenant_id,
            store_id=store_id,
            event_id=event_id,
            source_agent_id=source_agent_id,
            agent_key_id=agent_key_id,
            entity_type=entity_type,
            entity_id=entity_id,
            event_type=event_type,
            created_at=created_at,
            recipients=recipients,
        )
        encrypted, plain = sealed.payload_encrypted, sealed.payload_plain_hash
        cipher = sealed.payload_cipher_hash
    unsigned: dict[str, Any] = {
        "ves_version": ves_version,
        "event_id": event_id,
        "tenant_id": tenant_id,
        "store_id": store_id,
        "source_agent_id": source_agent_id,
        "agent_key_id": agent_key_id,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "event_type": event_type,
        "created_at": created_at,
        "payload_kind": kind,
        "payload": payload if kind == PAYLOAD_KIND_PLAINTEXT else None,
        "payload_encrypted": encrypted,
        "payload_plain_hash": plain,
        "payload_cipher_hash": cipher,
        "command_id": command_id,
        "base_version": base_version,
    }
    # Not validated yet: a value the signing hash cannot encode (an agent_key_id beyond
    # u32, a UUID given as text) fails there with the hash's own error, before schema
    # validation; and which fields are signed is said once, by signing_fields().
    signature = signer.sign(VesEventEnvelope.model_construct(**unsigned).signing_hash())
    try:
        return VesEventEnvelope.model_validate({**unsigned, "agent_signature": signature})
    except ValidationError as exc:
        raise EnvelopeInvalid("schema_validation", _first_error(exc)) from None


def sign_unsigned(obj: Mapping[str, Any], signer: Signer) -> VesEventEnvelope:
    """Complete and sign an envelope given without its hashes and signature.

    This is what ``sequencer-cli sign`` does. The object may carry ``recipients`` as
    ``[{"recipient_kid": n, "public_key": hex}]`` to have its payload encrypted. Its own
    ``ves_version`` (1 or 2) picks the signing hash; without one it is signed as
    :data:`DEFAULT_VES_VERSION`.
    """
    present = {"payload_plain_hash", "payload_cipher_hash", "agent_signature"} & set(obj)
    if present:
        raise EnvelopeInvalid(
            "schema_validation", f"unsigned event must not carry {', '.join(sorted(present))}"
        )
    stub = dict(obj)
    stub.setdefault("ves_version", DEFAULT_VES_VERSION)
    stub.setdefault("payload_kind", PAYLOAD_KIND_PLAINTEXT)
    stub.update(
        payload_plain_hash=hashing.ZERO_HASH,
        payload_cipher_hash=hashing.ZERO_HASH,
        agent_signature=bytes(64),
    )
    recipients_raw = stub.pop("recipients", None)
    stub.pop("payload_encrypted", None)
    if stub["payload_kind"] == PAYLOAD_KIND_ENCRYPTED and recipients_raw is None:
        raise EnvelopeInvalid(
            "schema_validation: recipients", "an encrypted event needs 'recipients' to seal to"
        )
    try:
        draft = VesEventEnvelope.model_validate(stub)
    except ValidationError as exc:
        raise EnvelopeInvalid("schema_validation", _first_error(exc)) from None
    check_version(draft)
    check_execution_controls(draft)
    recipients: list[tuple[int, bytes]] | None = None
    if draft.payload_kind == PAYLOAD_KIND_ENCRYPTED:
        if not isinstance(recipients_raw, list):
            raise EnvelopeInvalid("schema_validation: recipients", "recipients must be a list")
        recipients = []
        for entry in recipients_raw:
            if not isinstance(entry, Mapping) or type(entry.get("recipient_kid")) is not int:
                raise EnvelopeInvalid(
                    "schema_validation: recipients",
                    "each recipient needs an integer recipient_kid and a public_key",
                )
            try:
                recipients.append((entry["recipient_kid"], parse_key_text(entry["public_key"])))
            except (KeyError, VesError) as exc:
                raise EnvelopeInvalid("schema_validation: recipients", str(exc)) from None
    check_lengths(draft)
    if draft.payload_kind == PAYLOAD_KIND_PLAINTEXT and draft.payload is None:
        raise EnvelopeInvalid("schema_validation: payload", "payload is required")
    return sign_event(
        signer=signer,
        tenant_id=draft.tenant_id,
        store_id=draft.store_id,
        source_agent_id=draft.source_agent_id,
        entity_type=draft.entity_type,
        entity_id=draft.entity_id,
        event_type=draft.event_type,
        created_at=draft.created_at,
        payload=draft.payload,
        agent_key_id=draft.agent_key_id,
        event_id=draft.event_id,
        command_id=draft.command_id,
        base_version=draft.base_version,
        recipients=recipients,
        ves_version=draft.ves_version,
    )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "event"
    return f"{where}: {err.get('msg', 'invalid')}"


__all__ = [
    "EncryptedPayload",
    "EnvelopeInvalid",
    "Validated",
    "VesEventEnvelope",
    "check_created_at",
    "check_execution_controls",
    "check_lengths",
    "check_payload_hash",
    "check_payload_kind",
    "check_version",
    "cipher_hash",
    "encrypted_parts",
    "parse_envelope",
    "parse_envelope_json",
    "sign_event",
    "sign_unsigned",
    "validate",
    "validate_parts",
    "verify_signature",
]

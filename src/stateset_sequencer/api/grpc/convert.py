"""Protobuf messages to domain values and back, in one place, by the reference's rules
(its ``grpc/service_v2/convert.rs``).

Into the domain (``envelope_from_proto``):

- ``payload_kind`` 1 is plaintext and 2 encrypted (the domain's 0 and 1); 0 is refused;
- ``ves_version`` 0 reads as 1, the reference's default; any other unknown version goes
  on to ingest, which rejects that one event (``unsupported_version``);
- an empty ``payload_plain_hash`` or ``payload_cipher_hash`` is computed here, with the
  ``ves/`` functions ingest checks them with (an encrypted event's plain hash is salted
  and cannot be);
- ``created_at`` becomes the text chrono's ``to_rfc3339()`` prints for it (``+00:00``,
  0, 3, 6 or 9 fraction digits): the agent must have signed exactly that text;
- ``base_version`` 0 and an empty ``command_id`` are absent (proto3 has no null).

A malformed field refuses the whole call (:class:`~.errors.GrpcError`,
INVALID_ARGUMENT), as the reference's conversion does; what ingest judges per event
(hashes, signatures, keys, lengths) is left to ingest.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from ...proto import sequencer_pb2 as v1
from ...proto import sequencer_v2_pb2 as pb
from ...sequencer.outcomes import IngestResult, Rejection
from ...store.records import AgentKey, CommitmentRow, StoredEvent, StreamKey
from ...ves import envelope as ves_envelope
from ...ves import hashing, jcs
from ...ves.codec import (
    b64url_decode,
    b64url_encode,
    format_rfc3339_nanos,
    parse_rfc3339,
    parse_uuid,
)
from ...ves.envelope import PAYLOAD_KIND_ENCRYPTED, PAYLOAD_KIND_PLAINTEXT, VesEventEnvelope
from ...ves.errors import VesError
from ...ves.jsontext import encrypted_text, payload_text
from .errors import INTERNAL_MESSAGE, GrpcError, invalid

NANOS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ENC_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
SIGNATURE_BYTES = 64
HASH_BYTES = 32
# The fraction of an RFC 3339 text, to carry nanoseconds that a datetime cannot hold.
_FRACTION = re.compile(r"[Tt ]\d{2}:\d{2}:\d{2}\.(\d+)")


# --- identifiers ----------------------------------------------------------------------------


def uuid_field(text: str, name: str) -> uuid.UUID:
    try:
        return parse_uuid(text)
    except VesError as exc:
        raise invalid(f"invalid {name}: {exc}") from None


def stream_of(tenant_id: str, store_id: str) -> StreamKey:
    return StreamKey(uuid_field(tenant_id, "tenant_id"), uuid_field(store_id, "store_id"))


# --- time -----------------------------------------------------------------------------------


def timestamp_datetime(ts: Timestamp, name: str) -> datetime:
    """A Timestamp as an aware UTC datetime (microseconds: what a datetime holds)."""
    if not 0 <= ts.nanos < NANOS:
        raise invalid(f"invalid {name} nanos")
    try:
        return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    except OverflowError:
        raise invalid(f"invalid {name} timestamp") from None


def timestamp_text(ts: Timestamp, name: str = "created_at") -> str:
    """chrono's ``to_rfc3339()`` of a Timestamp, nanoseconds exact."""
    if not 0 <= ts.nanos < NANOS:
        raise invalid(f"invalid {name} nanos")
    whole = timestamp_datetime(Timestamp(seconds=ts.seconds), name)
    return format_rfc3339_nanos(whole, ts.nanos)


def datetime_timestamp(moment: datetime) -> Timestamp:
    delta = moment.astimezone(UTC) - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)


def text_timestamp(text: str) -> Timestamp:
    """A stored ``created_at`` text as a Timestamp, nanoseconds kept (digits past the
    ninth dropped, as chrono parses them)."""
    try:
        moment = parse_rfc3339(text)
    except VesError:
        # Stored events passed the same parse at ingest: a fault of the data.
        raise GrpcError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE) from None
    ts = datetime_timestamp(moment.replace(microsecond=0))
    match = _FRACTION.search(text)
    if match is not None:
        # Offsets are whole minutes, so the fraction is the instant's own.
        ts.nanos = int((match.group(1) + "000000000")[:9])
    return ts


def now_timestamp() -> Timestamp:
    return datetime_timestamp(datetime.now(UTC))


# --- events into the domain ---------------------------------------------------------------


def _hash(value: bytes, name: str) -> bytes | None:
    if not value:
        return None
    if len(value) != HASH_BYTES:
        raise invalid(f"{name} must be {HASH_BYTES} bytes")
    return bytes(value)


def _encrypted_from_proto(p: pb.EncryptedPayload) -> dict[str, Any]:
    enc_version = p.enc_version or ENC_VERSION
    if enc_version != ENC_VERSION:
        raise invalid(f"enc_version must be {ENC_VERSION}")
    if len(p.nonce) != NONCE_BYTES:
        raise invalid(f"nonce must be {NONCE_BYTES} bytes")
    if len(p.tag) != TAG_BYTES:
        raise invalid(f"tag must be {TAG_BYTES} bytes")
    hpke = p.hpke
    return {
        "enc_version": enc_version,
        "aead": p.aead,
        "nonce_b64u": b64url_encode(p.nonce),
        "ciphertext_b64u": b64url_encode(p.ciphertext),
        "tag_b64u": b64url_encode(p.tag),
        "hpke": {"mode": hpke.mode, "kem": hpke.kem, "kdf": hpke.kdf, "aead": hpke.aead},
        "recipients": [
            {
                "recipient_kid": r.recipient_kid,
                "enc_b64u": b64url_encode(r.ephemeral_public_key),
                "ct_b64u": b64url_encode(r.wrapped_dek),
            }
            for r in p.recipients
        ],
    }


def _bundle_from_proto(p: pb.EventEnvelope) -> dict[str, Any] | None:
    """The reference's ``ParsedSignatureBundle`` as serde writes it: byte arrays as lists
    of integers, an empty one absent (null)."""
    if not p.HasField("agent_signature_bundle"):
        return None
    bundle = p.agent_signature_bundle
    return {
        "ed25519_signature": list(bundle.ed25519_signature) or None,
        "ml_dsa_65_signature": list(bundle.ml_dsa_65_signature) or None,
    }


def envelope_from_proto(p: pb.EventEnvelope, *, strict_format: bool = False) -> VesEventEnvelope:
    """One pushed event as the domain's envelope (module docstring: the rules)."""
    ves_version = p.ves_version or ves_envelope.VES_VERSION_V1
    event_id = uuid_field(p.event_id, "event_id")
    tenant_id = uuid_field(p.tenant_id, "tenant_id")
    store_id = uuid_field(p.store_id, "store_id")
    source_agent = uuid_field(p.source_agent, "source_agent")
    if p.payload_kind == pb.PAYLOAD_KIND_PLAINTEXT:
        kind = PAYLOAD_KIND_PLAINTEXT
    elif p.payload_kind == pb.PAYLOAD_KIND_ENCRYPTED:
        kind = PAYLOAD_KIND_ENCRYPTED
    else:
        raise invalid("payload_kind must be PAYLOAD_KIND_PLAINTEXT or PAYLOAD_KIND_ENCRYPTED")
    if not p.HasField("created_at"):
        raise invalid("created_at is required")
    created_at = timestamp_text(p.created_at)
    command_id = uuid_field(p.command_id, "command_id") if p.command_id else None

    payload: Any = None
    encrypted: dict[str, Any] | None = None
    if kind == PAYLOAD_KIND_PLAINTEXT:
        if p.HasField("payload_encrypted"):
            raise invalid("payload_encrypted must be omitted for plaintext events")
        try:
            payload = jcs.loads(p.payload)
        except VesError as exc:
            raise invalid(f"invalid payload JSON: {exc}") from None
    else:
        if p.payload:
            raise invalid("payload must be omitted for encrypted events")
        if not p.HasField("payload_encrypted"):
            raise invalid("payload_encrypted is required for encrypted events")
        encrypted = _encrypted_from_proto(p.payload_encrypted)

    plain_hash = _hash(p.payload_plain_hash, "payload_plain_hash")
    if plain_hash is None:
        if kind == PAYLOAD_KIND_ENCRYPTED:
            raise invalid("payload_plain_hash is required for encrypted events")
        try:
            plain_hash = hashing.payload_plain_hash(payload)
        except VesError as exc:
            raise invalid(f"invalid payload: {exc}") from None
    cipher_hash = _hash(p.payload_cipher_hash, "payload_cipher_hash")

    scheme = p.agent_signature_scheme
    signature = bytes(p.agent_signature)
    if scheme == pb.SIGNATURE_SCHEME_ML_DSA_65 and not signature:
        signature = bytes(SIGNATURE_BYTES)  # ML-DSA-only: the Ed25519 field may be empty
    if len(signature) != SIGNATURE_BYTES:
        raise invalid(f"agent_signature must be {SIGNATURE_BYTES} bytes")

    fields: dict[str, Any] = {
        "ves_version": ves_version,
        "event_id": event_id,
        "tenant_id": tenant_id,
        "store_id": store_id,
        "source_agent_id": source_agent,
        "agent_key_id": p.agent_key_id,
        "entity_type": p.entity_type,
        "entity_id": p.entity_id,
        "event_type": p.event_type,
        "created_at": created_at,
        "payload_kind": kind,
        "payload": payload,
        "payload_encrypted": encrypted,
        "payload_plain_hash": plain_hash,
        "payload_cipher_hash": cipher_hash if cipher_hash is not None else hashing.ZERO_HASH,
        "agent_signature": signature,
        "agent_signature_scheme": scheme or None,
        "agent_signature_bundle": _bundle_from_proto(p),
        "command_id": command_id,
        "base_version": p.base_version or None,
    }
    try:
        env = ves_envelope.parse_envelope(fields, strict_format=strict_format)
    except ValidationError as exc:
        raise invalid(f"event {event_id}: {_first_error(exc)}") from None
    if cipher_hash is None and kind == PAYLOAD_KIND_ENCRYPTED:
        try:
            computed = ves_envelope.cipher_hash(env, strict_format=strict_format)
        except VesError as exc:
            raise invalid(f"invalid payload_encrypted: {exc}") from None
        env = env.model_copy(update={"payload_cipher_hash": computed})
    return env


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "event"
    return f"{where}: {err.get('msg', 'invalid')}"


# --- events out of the domain -------------------------------------------------------------


def _encrypted_to_proto(encrypted: ves_envelope.EncryptedPayload) -> pb.EncryptedPayload:
    try:
        return pb.EncryptedPayload(
            enc_version=encrypted.enc_version,
            aead=encrypted.aead,
            nonce=b64url_decode(encrypted.nonce_b64u),
            ciphertext=b64url_decode(encrypted.ciphertext_b64u),
            tag=b64url_decode(encrypted.tag_b64u),
            hpke=pb.HpkeParams(
                mode=encrypted.hpke.mode,
                kem=encrypted.hpke.kem,
                kdf=encrypted.hpke.kdf,
                aead=encrypted.hpke.aead,
            ),
            recipients=[
                pb.RecipientKey(
                    recipient_kid=r.recipient_kid,
                    ephemeral_public_key=b64url_decode(r.enc_b64u),
                    wrapped_dek=b64url_decode(r.ct_b64u),
                )
                for r in encrypted.recipients
            ],
        )
    except VesError:
        # Stored encrypted payloads passed the same structure checks at ingest.
        raise GrpcError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE) from None


def _bundle_bytes(value: Any) -> bytes:
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in value):
        return bytes(value)
    if isinstance(value, str):
        try:
            return bytes.fromhex(value.removeprefix("0x"))
        except ValueError:
            return b""
    return b""


def _bundle_to_proto(bundle: Mapping[str, Any] | None) -> pb.SignatureBundle | None:
    if bundle is None:
        return None
    return pb.SignatureBundle(
        ed25519_signature=_bundle_bytes(bundle.get("ed25519_signature")),
        ml_dsa_65_signature=_bundle_bytes(bundle.get("ml_dsa_65_signature")),
    )


def envelope_to_proto(env: VesEventEnvelope) -> pb.EventEnvelope:
    plaintext = env.payload_kind == PAYLOAD_KIND_PLAINTEXT
    text = payload_text(env) if plaintext else None
    message = pb.EventEnvelope(
        event_id=str(env.event_id),
        command_id="" if env.command_id is None else str(env.command_id),
        tenant_id=str(env.tenant_id),
        store_id=str(env.store_id),
        entity_type=env.entity_type,
        entity_id=env.entity_id,
        event_type=env.event_type,
        source_agent=str(env.source_agent_id),
        ves_version=env.ves_version,
        payload_kind=pb.PAYLOAD_KIND_PLAINTEXT if plaintext else pb.PAYLOAD_KIND_ENCRYPTED,
        payload=b"" if text is None else text.encode("utf-8"),
        payload_plain_hash=env.payload_plain_hash,
        payload_cipher_hash=env.payload_cipher_hash,
        agent_key_id=env.agent_key_id,
        agent_signature=env.agent_signature,
        base_version=env.base_version or 0,
        created_at=text_timestamp(env.created_at),
        agent_signature_scheme=env.agent_signature_scheme or 0,  # type: ignore[arg-type]
    )
    if env.payload_encrypted is not None:
        message.payload_encrypted.CopyFrom(_encrypted_to_proto(env.payload_encrypted))
    bundle = _bundle_to_proto(env.agent_signature_bundle)
    if bundle is not None:
        message.agent_signature_bundle.CopyFrom(bundle)
    return message


def sequenced_event(event: StoredEvent) -> pb.SequencedEvent:
    """A stored event with its sequence, time and receipt hash (recomputed, as the
    reference does; the receipt's signature stays with ``GET /api/v1/ves/events/{id}``)."""
    env = event.envelope
    return pb.SequencedEvent(
        envelope=envelope_to_proto(env),
        sequence_number=event.sequence_number,
        sequenced_at=datetime_timestamp(event.sequenced_at),
        receipt_hash=hashing.receipt_hash(
            env.tenant_id,
            env.store_id,
            env.event_id,
            event.sequence_number,
            event.event_signing_hash,
        ),
    )


def heartbeat_event(position: int, at: datetime) -> pb.SequencedEvent:
    """A heartbeat on an event stream: only the position read so far and the time."""
    return pb.SequencedEvent(sequence_number=position, sequenced_at=datetime_timestamp(at))


def commitment_to_proto(row: CommitmentRow) -> pb.BatchCommitment:
    previous = bytes(row.prev_state_root)
    return pb.BatchCommitment(
        batch_id=str(row.batch_id),
        merkle_root=bytes(row.merkle_root),
        start_sequence=row.sequence_start,
        end_sequence=row.sequence_end,
        event_count=row.leaf_count,
        committed_at=datetime_timestamp(row.committed_at),
        previous_root=b"" if previous == hashing.ZERO_HASH else previous,
    )


# --- ingest results -------------------------------------------------------------------------

_REASONS: dict[str, int] = {
    "duplicate_event_id": pb.REJECTION_REASON_DUPLICATE_EVENT,
    "duplicate_command_id": pb.REJECTION_REASON_DUPLICATE_COMMAND,
    "invalid_payload_hash": pb.REJECTION_REASON_INVALID_HASH,
    "invalid_cipher_hash": pb.REJECTION_REASON_INVALID_HASH,
    "invalid_signature": pb.REJECTION_REASON_INVALID_SIGNATURE,
    "unsupported_version": pb.REJECTION_REASON_INVALID_FORMAT,
    "schema_validation": pb.REJECTION_REASON_INVALID_FORMAT,
    # ours: a ves_version 1 event where only signed execution controls are accepted
    "signed_execution_controls_required": pb.REJECTION_REASON_INVALID_FORMAT,
    "version_conflict": pb.REJECTION_REASON_VERSION_CONFLICT,
}


def rejection_reason(rejection: Rejection) -> int:
    """The reference's enum for a rejection's reason code (REFERENCE_MAP §2.2); a key
    problem is REVOKED_KEY when it says "revoked", else UNKNOWN_KEY (expired and
    not-yet-valid keys included). A reason the enum has no member for (an agent policy's
    refusal) is UNSPECIFIED, its message saying what it is."""
    code = rejection.reason.split(":", 1)[0].strip()
    if code == "agent_key_invalid":
        if "revoked" in rejection.reason.lower() or "revoked" in rejection.message.lower():
            return pb.REJECTION_REASON_REVOKED_KEY
        return pb.REJECTION_REASON_UNKNOWN_KEY
    return _REASONS.get(code, pb.REJECTION_REASON_UNSPECIFIED)


def push_response(result: IngestResult, request_id: str) -> pb.PushResponse:
    return pb.PushResponse(
        batch_id=str(result.batch_id),
        request_id=request_id,
        events_accepted=result.events_accepted,
        events_rejected=len(result.rejections),
        sequence_start=result.sequence_start or 0,
        sequence_end=result.sequence_end or 0,
        head_sequence=result.head_sequence,
        rejections=[
            pb.RejectedEvent(
                event_id=str(r.event_id),
                reason=rejection_reason(r),  # type: ignore[arg-type]
                message=r.message,
            )
            for r in result.rejections
        ],
    )


# --- agent keys -----------------------------------------------------------------------------


def agent_key_to_proto(key: AgentKey, status: int) -> pb.AgentKey:
    message = pb.AgentKey(
        key_id=key.key_id,
        key_type=pb.KEY_TYPE_SIGNING,
        public_key=key.public_key,
        status=status,  # type: ignore[arg-type]
        key_algorithm=key.key_algorithm,  # type: ignore[arg-type]
    )
    for name, moment in (
        ("created_at", key.created_at),
        ("valid_from", key.valid_from),
        ("valid_to", key.valid_to),
        ("revoked_at", key.revoked_at),
    ):
        if moment is not None:
            getattr(message, name).CopyFrom(datetime_timestamp(moment))
    return message


# --- version 1 ------------------------------------------------------------------------------


def v1_sequenced_event(event: StoredEvent) -> v1.SequencedEvent:
    """A stored event in the legacy shape: the payload's JSON text (or, for an encrypted
    event, its ``payload_encrypted`` text), the plain hash and the agent's signature."""
    env = event.envelope
    text = payload_text(env) if env.payload_kind == PAYLOAD_KIND_PLAINTEXT else encrypted_text(env)
    return v1.SequencedEvent(
        envelope=v1.EventEnvelope(
            event_id=str(env.event_id),
            command_id="" if env.command_id is None else str(env.command_id),
            tenant_id=str(env.tenant_id),
            store_id=str(env.store_id),
            entity_type=env.entity_type,
            entity_id=env.entity_id,
            event_type=env.event_type,
            payload=b"" if text is None else text.encode("utf-8"),
            payload_hash=env.payload_plain_hash,
            base_version=env.base_version or 0,
            created_at=text_timestamp(env.created_at),
            source_agent=str(env.source_agent_id),
            signature=env.agent_signature,
        ),
        sequence_number=event.sequence_number,
        sequenced_at=datetime_timestamp(event.sequenced_at),
    )


def v1_commitment(row: CommitmentRow) -> v1.BatchCommitment:
    return v1.BatchCommitment(
        batch_id=str(row.batch_id),
        merkle_root=bytes(row.merkle_root),
        start_sequence=row.sequence_start,
        end_sequence=row.sequence_end,
        event_count=row.leaf_count,
        committed_at=datetime_timestamp(row.committed_at),
    )

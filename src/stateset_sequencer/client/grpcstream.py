"""The gRPC transport of :meth:`~.stream.StreamRoutes.tail`: ``Sequencer/StreamEvents``
on grpc.aio with the generated stubs, and its messages read as the HTTP API's items."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
import httpx
from google.protobuf.timestamp_pb2 import Timestamp

from ..proto import sequencer_v2_pb2 as pb
from ..proto.sequencer_v2_pb2_grpc import SequencerStub
from ..ves import jcs
from ..ves.codec import b64url_encode, format_rfc3339_nanos, to_0x_hex
from ..ves.errors import VesError
from .core import ClientCore
from .errors import Attempt, SequencerError, UnexpectedResponse
from .retry import RETRY_STATUSES, retry_after
from .stream import Failed, Plan, TailEvent, TailHeartbeat, TailItem

GRPC_METHOD = "/stateset.sequencer.v2.Sequencer/StreamEvents"
# The trailer of a RESOURCE_EXHAUSTED that cut off a subscriber for not reading.
RESUME_TRAILER = "x-resume-from-sequence"

# A gRPC status as the HTTP status that says the same, so that one rule (RETRY_STATUSES)
# decides what is tried again and callers catch one SequencerError either way.
_STATUS_OF: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# The connection, not the call, failed: what httpx would call a transport error.
_TRANSPORT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


def grpc_target_for(base_url: str) -> str:
    """The gRPC address beside an HTTP base URL: its host, its port + 1 (the server's
    default ``GRPC_PORT``)."""
    url = httpx.URL(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{port + 1}"


class GrpcSource:
    method = "gRPC"
    path = GRPC_METHOD

    def __init__(self, core: ClientCore, plan: Plan, target: str | None) -> None:
        self._plan = plan
        urls = core.base_urls
        if target is not None:
            self.targets: tuple[str, ...] = (target,)
            self.first = 0
            secure = {target: core.base_url.startswith("https:")}
        else:
            self.targets = tuple(grpc_target_for(u) for u in urls)
            self.first = urls.index(core.base_url)
            secure = {grpc_target_for(u): u.startswith("https:") for u in urls}
        self._secure = secure
        self._channels: dict[str, grpc.aio.Channel] = {}
        auth = core._http.headers.get("authorization")
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", auth),) if auth else ()

    def _channel(self, target: str) -> grpc.aio.Channel:
        channel = self._channels.get(target)
        if channel is None:
            if self._secure.get(target):
                channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
            else:
                channel = grpc.aio.insecure_channel(target)
            self._channels[target] = channel
        return channel

    def _request(self, position: int) -> pb.StreamEventsRequest:
        plan = self._plan
        return pb.StreamEventsRequest(
            tenant_id=str(plan.tenant_id),
            store_id=str(plan.store_id),
            from_sequence=position + 1,
            include_history=True,
            heartbeat_interval_ms=plan.heartbeat_ms,
            entity_type_filter=list(plan.entity_types),
            event_type_filter=list(plan.event_types),
            agent_filter=[str(a) for a in plan.agents],
        )

    async def open(self, index: int, position: int) -> _GrpcConnection:
        target = self.targets[index]
        stub = SequencerStub(self._channel(target))
        call = stub.StreamEvents(self._request(position), metadata=self._metadata)
        return _GrpcConnection(target, call)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()


class _GrpcConnection:
    def __init__(self, target: str, call: grpc.aio.UnaryStreamCall[Any, pb.SequencedEvent]) -> None:
        self._target = target
        self._call = call
        self.opened = False  # a stream call says nothing until its first message

    async def next(self) -> TailItem | None:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            self._ended(exc)
            return None
        if message is grpc.aio.EOF:
            return None
        assert isinstance(message, pb.SequencedEvent)
        self.opened = True
        return _grpc_item(message)

    def _ended(self, exc: grpc.aio.AioRpcError) -> None:
        """Returns when the end is one to reopen after; raises otherwise."""
        code = exc.code()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _resume_from(exc) is not None:
            return  # cut off for reading too slowly: reopened after the position
        details = exc.details() or ""
        outcome = f"gRPC {code.name}: {' '.join(details.split())}"
        if code in _TRANSPORT_CODES:
            if self.opened:
                return  # the connection broke mid-stream
            raise Failed(Attempt(self._target, outcome, False)) from exc
        status = _STATUS_OF.get(code, 500)
        error = SequencerError(status, code.name, details, None)
        attempt = Attempt(self._target, outcome, True)
        # A rate limit says how long to wait, as HTTP's Retry-After does.
        asked = retry_after({"retry-after": _trailer(exc, "retry-after") or ""})
        raise Failed(attempt, error, wait=asked, fatal=status not in RETRY_STATUSES) from exc

    async def close(self) -> None:
        self._call.cancel()


def _trailer(exc: grpc.aio.AioRpcError, name: str) -> str | None:
    for key, value in exc.trailing_metadata() or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _resume_from(exc: grpc.aio.AioRpcError) -> int | None:
    text = _trailer(exc, RESUME_TRAILER)
    return int(text) if text is not None and text.isdigit() else None


def _time(stamp: Timestamp) -> str:
    """The text the server rebuilds ``created_at`` as (the text the agent signed, when it
    was in this form), and the form of ``sequenced_at``."""
    return format_rfc3339_nanos(datetime.fromtimestamp(stamp.seconds, UTC), stamp.nanos)


def _grpc_item(message: pb.SequencedEvent) -> TailItem:
    if not message.HasField("envelope"):
        at = _time(message.sequenced_at) if message.HasField("sequenced_at") else None
        return TailHeartbeat(message.sequence_number, at)
    envelope = wire_envelope(message)
    return TailEvent(message.sequence_number, envelope["sequenced_at"], envelope)


_KIND_OF = {pb.PAYLOAD_KIND_PLAINTEXT: 0, pb.PAYLOAD_KIND_ENCRYPTED: 1}


def wire_envelope(message: pb.SequencedEvent) -> dict[str, Any]:
    """A sequenced event of the gRPC API as the HTTP API's envelope: the same field names
    and encodings (``0x`` hex, base64url, RFC 3339 text), proto3's empty values read as
    absent. ``created_at`` is rebuilt from the timestamp as the server signs it over gRPC
    (PROTOCOL §10), so it is the agent's own text only when that was in this form."""
    env = message.envelope
    what = f"{GRPC_METHOD} event {message.sequence_number}"
    kind = _KIND_OF.get(env.payload_kind)
    if kind is None:
        raise UnexpectedResponse(what, f"payload_kind {env.payload_kind} is not a payload kind")
    wire: dict[str, Any] = {
        "event_id": env.event_id,
        "tenant_id": env.tenant_id,
        "store_id": env.store_id,
        "sequence_number": message.sequence_number,
        "sequenced_at": _time(message.sequenced_at),
        "agent_signature": to_0x_hex(env.agent_signature),
        "payload_plain_hash": to_0x_hex(env.payload_plain_hash),
        "payload_cipher_hash": to_0x_hex(env.payload_cipher_hash),
        "created_at": _time(env.created_at),
        "ves_version": env.ves_version,
        "source_agent_id": env.source_agent,
        "agent_key_id": env.agent_key_id,
        "entity_type": env.entity_type,
        "entity_id": env.entity_id,
        "event_type": env.event_type,
        "payload_kind": kind,
    }
    if kind == 0:
        try:
            wire["payload"] = jcs.loads(env.payload) if env.payload else None
        except VesError:
            raise UnexpectedResponse(what, "the payload is not JSON text") from None
    if env.HasField("payload_encrypted"):
        wire["payload_encrypted"] = _encrypted(env.payload_encrypted)
    if env.agent_signature_scheme:
        wire["agent_signature_scheme"] = int(env.agent_signature_scheme)
    if env.HasField("agent_signature_bundle"):
        # The reference's ParsedSignatureBundle as serde writes it, as the server keeps
        # one pushed over gRPC: byte arrays as lists of integers, an empty one null.
        bundle = env.agent_signature_bundle
        wire["agent_signature_bundle"] = {
            "ed25519_signature": list(bundle.ed25519_signature) or None,
            "ml_dsa_65_signature": list(bundle.ml_dsa_65_signature) or None,
        }
    if env.command_id:
        wire["command_id"] = env.command_id
    if env.base_version:
        wire["base_version"] = env.base_version
    return wire


def _encrypted(value: pb.EncryptedPayload) -> dict[str, Any]:
    return {
        "enc_version": value.enc_version,
        "aead": value.aead,
        "nonce_b64u": b64url_encode(value.nonce),
        "ciphertext_b64u": b64url_encode(value.ciphertext),
        "tag_b64u": b64url_encode(value.tag),
        "hpke": {
            "mode": value.hpke.mode,
            "kem": value.hpke.kem,
            "kdf": value.hpke.kdf,
            "aead": value.hpke.aead,
        },
        "recipients": [
            {
                "recipient_kid": r.recipient_kid,
                "enc_b64u": b64url_encode(r.ephemeral_public_key),
                "ct_b64u": b64url_encode(r.wrapped_dek),
            }
            for r in value.recipients
        ],
    }

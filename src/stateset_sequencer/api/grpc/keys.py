"""``stateset.sequencer.v2.KeyManagement``: agent signing keys, on the store and key cache
the HTTP agent-key routes use (``api/http/agent_keys.py``), with their audit rows.

As the reference: every method needs an admin of the key's tenant; only
``KEY_TYPE_SIGNING`` keys exist (others UNIMPLEMENTED); a public key is 32 bytes; a
proof of possession, when sent, must verify (an Ed25519 signature by the key over
``SHA-256("VES_POP_V1" ‖ public_key)``); a key id taken is ALREADY_EXISTS; revoking a key
that is not there is NOT_FOUND. Where we answer otherwise: the admin must be tenant-wide
(an agent key belongs to the tenant, not a store, as over HTTP), and only the Ed25519
profile's algorithms are taken (0 and 1, as over HTTP; the post-quantum ones need
verification this service does not have): others are INVALID_ARGUMENT.
"""

# The methods carry the proto's names: grpc calls them by those.
# ruff: noqa: N802

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

import grpc
import structlog

from ...proto import sequencer_v2_pb2 as pb
from ...proto import sequencer_v2_pb2_grpc as pb_grpc
from ...sequencer.auth import AuthContext, AuthError, ensure_admin, ensure_tenant_wide
from ...sequencer.keys import KeyVerdict, judge_key
from ...store.errors import IntegrityError
from ...store.records import AgentKey
from ...ves.errors import VesError
from ...ves.hashing import pop_challenge
from ...ves.signing import parse_public_key, verify
from ...ves.storable import make_storable
from ..http.agent_keys import ED25519_ALGORITHMS, key_audit
from .calls import Call, Gate, unary
from .convert import agent_key_to_proto, datetime_timestamp, timestamp_datetime, uuid_field
from .errors import GrpcError, Metadata, invalid, refusal

SERVICE = "stateset.sequencer.v2.KeyManagement"
PUBLIC_KEY_BYTES = 32
REASON_BYTES = 200  # what the log and the audit row keep of a revocation's reason

log = structlog.get_logger("stateset_sequencer.grpc")

_STATUS = {
    KeyVerdict.VALID: pb.KEY_STATUS_ACTIVE,
    KeyVerdict.EXPIRED: pb.KEY_STATUS_EXPIRED,
    KeyVerdict.REVOKED: pb.KEY_STATUS_REVOKED,
    KeyVerdict.NOT_YET_VALID: pb.KEY_STATUS_UNSPECIFIED,
}


def _tenant_admin(ctx: AuthContext, tenant_id: uuid.UUID) -> None:
    try:
        ensure_tenant_wide(ctx, tenant_id, admin=True)
    except AuthError as exc:
        raise refusal(exc) from None


def _admin(ctx: AuthContext) -> None:
    try:
        ensure_admin(ctx)
    except AuthError as exc:
        raise refusal(exc) from None


class KeyManagement(pb_grpc.KeyManagementServicer):
    service_name: ClassVar[str] = SERVICE
    initial_metadata: ClassVar[Metadata] = ()

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.services = gate.services

    @unary
    async def RegisterAgentKey(
        self, request: pb.RegisterKeyRequest, call: Call
    ) -> pb.RegisterKeyResponse:
        _admin(call.ctx)
        tenant_id = uuid_field(request.tenant_id, "tenant_id")
        agent_id = uuid_field(request.agent_id, "agent_id")
        call.fields["tenant_id"] = str(tenant_id)
        _tenant_admin(call.ctx, tenant_id)
        if request.key_type != pb.KEY_TYPE_SIGNING:
            raise GrpcError(grpc.StatusCode.UNIMPLEMENTED, "only signing keys are supported")
        algorithm = request.key_algorithm or pb.KEY_ALGORITHM_ED25519
        if algorithm not in ED25519_ALGORITHMS:
            raise invalid(f"key algorithm {algorithm} is not allowed by profile")
        if len(request.public_key) != PUBLIC_KEY_BYTES:
            raise invalid(f"public_key must be {PUBLIC_KEY_BYTES} bytes")
        try:
            public_key = parse_public_key(bytes(request.public_key))
        except VesError as exc:
            raise invalid(f"public_key: {exc}") from None
        proof = bytes(request.proof_of_possession)
        if not proof and request.HasField("proof_of_possession_bundle"):
            proof = bytes(request.proof_of_possession_bundle.ed25519_pop)
        if proof:
            try:
                verify(public_key, pop_challenge(public_key), proof)
            except VesError as exc:
                raise invalid(f"proof of possession verification failed: {exc}") from None
        valid_from = _moment(request, "valid_from")
        valid_to = _moment(request, "valid_to")
        if valid_from is not None and valid_to is not None and valid_from > valid_to:
            raise invalid("valid_from must be less than or equal to valid_to")
        key = AgentKey(
            tenant_id=tenant_id,
            agent_id=agent_id,
            key_id=request.key_id,
            public_key=public_key,
            valid_from=valid_from,
            valid_to=valid_to,
            key_algorithm=algorithm,
        )
        audit = key_audit(
            call.request_id,
            call.ctx,
            "agent_key.register",
            (tenant_id, agent_id, request.key_id),
            {"public_key": public_key.hex(), "key_algorithm": algorithm},
        )
        try:
            # The audit row commits with the key, or neither does.
            stored = await self.services.store.put_agent_key(key, audit)
        except IntegrityError:
            raise GrpcError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"key {request.key_id} of agent {agent_id} is already registered",
            ) from None
        self.services.sequencer.keys.invalidate(tenant_id, agent_id, request.key_id)
        registered = stored.created_at or self.services.sequencer.clock()
        return pb.RegisterKeyResponse(
            success=True,
            message="Agent key registered",
            registered_at=datetime_timestamp(registered),
        )

    @unary
    async def GetAgentKeys(
        self, request: pb.GetAgentKeysRequest, call: Call
    ) -> pb.GetAgentKeysResponse:
        """The agent's keys with their status at the server's clock (a key not valid yet
        is UNSPECIFIED, as the reference has no status for it)."""
        _admin(call.ctx)
        tenant_id = uuid_field(request.tenant_id, "tenant_id")
        agent_id = uuid_field(request.agent_id, "agent_id")
        call.fields["tenant_id"] = str(tenant_id)
        _tenant_admin(call.ctx, tenant_id)
        if request.key_type_filter == pb.KEY_TYPE_ENCRYPTION:
            return pb.GetAgentKeysResponse()
        now = self.services.sequencer.clock()
        answer = pb.GetAgentKeysResponse()
        for key in await self.services.store.list_agent_keys(tenant_id, agent_id):
            verdict = judge_key(key, now)
            if verdict is KeyVerdict.REVOKED and not request.include_revoked:
                continue
            answer.keys.append(agent_key_to_proto(key, _STATUS[verdict]))
        return answer

    @unary
    async def RevokeAgentKey(
        self, request: pb.RevokeKeyRequest, call: Call
    ) -> pb.RevokeKeyResponse:
        """Revoked at the server's clock; ``reason`` goes to the log and the audit row,
        ``authorization_signature`` is not read (as in the reference)."""
        _admin(call.ctx)
        tenant_id = uuid_field(request.tenant_id, "tenant_id")
        agent_id = uuid_field(request.agent_id, "agent_id")
        call.fields["tenant_id"] = str(tenant_id)
        _tenant_admin(call.ctx, tenant_id)
        reason = make_storable(request.reason, max_bytes=REASON_BYTES)
        if reason:
            call.fields["reason"] = reason
        revoked = await self.services.store.revoke_agent_key(
            tenant_id,
            agent_id,
            request.key_id,
            self.services.sequencer.clock(),
            key_audit(
                call.request_id,
                call.ctx,
                "agent_key.revoke",
                (tenant_id, agent_id, request.key_id),
                {"reason": reason} if reason else {},
            ),
        )
        if revoked is None:
            raise GrpcError(grpc.StatusCode.NOT_FOUND, "Agent key not found")
        self.services.sequencer.keys.invalidate(tenant_id, agent_id, request.key_id)
        answer = pb.RevokeKeyResponse(success=True)
        if revoked.revoked_at is not None:
            answer.revoked_at.CopyFrom(datetime_timestamp(revoked.revoked_at))
        return answer


def _moment(request: pb.RegisterKeyRequest, name: str) -> datetime | None:
    if not request.HasField(name):  # type: ignore[arg-type]
        return None
    moment: datetime = timestamp_datetime(getattr(request, name), name)
    return moment

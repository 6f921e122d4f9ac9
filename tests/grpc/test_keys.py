"""``stateset.sequencer.v2.KeyManagement`` on both backends: register (with a proof of
possession computed here, as the reference's challenge), list with statuses at the
server's clock, revoke; and every refusal with its status and nothing written."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from stateset_sequencer.testing import kit
from stateset_sequencer.ves.signing import Signer

from .conftest import Rig, metadata, rpc_error, signed

Code = grpc.StatusCode
TENANT = str(kit.TENANT)
TENANT_B = uuid.UUID("00000000-0000-0000-0000-0000000000a2")
SIGNER = Signer(bytes([3]) * 32)


def pop(signer: Signer) -> bytes:
    return signer.sign(hashlib.sha256(b"VES_POP_V1" + signer.public_key).digest())


def at(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def register(rig: Rig, agent: uuid.UUID, key_id: int, **fields: Any) -> Any:
    pb = rig.wire.v2
    fields.setdefault("key_type", pb.KEY_TYPE_SIGNING)
    fields.setdefault("public_key", SIGNER.public_key)
    return pb.RegisterKeyRequest(tenant_id=TENANT, agent_id=str(agent), key_id=key_id, **fields)


async def test_register_list_and_revoke(rig: Rig) -> None:
    pb = rig.wire.v2
    agent = uuid.uuid4()
    first = await rig.keys.RegisterAgentKey(
        register(rig, agent, 1, proof_of_possession=pop(SIGNER)), metadata=metadata()
    )
    assert first.success and first.registered_at.seconds > 0
    # The key signs for its agent at once.
    event = signed(1, agent_id=agent, signer=SIGNER)
    assert (await rig.push([event], agent_id=agent)).events_accepted == 1
    bundle = pb.ProofOfPossessionBundle(ed25519_pop=pop(SIGNER))
    await rig.keys.RegisterAgentKey(
        register(rig, agent, 2, valid_to=at(kit.past(1)), proof_of_possession_bundle=bundle),
        metadata=metadata(),
    )
    await rig.keys.RegisterAgentKey(
        register(rig, agent, 3, valid_from=at(kit.future(1)), key_algorithm=1),
        metadata=metadata(),
    )
    taken = await rpc_error(rig.keys.RegisterAgentKey(register(rig, agent, 1), metadata=metadata()))
    assert taken.code() == Code.ALREADY_EXISTS

    def listing(**fields: Any) -> Any:
        request = pb.GetAgentKeysRequest(tenant_id=TENANT, agent_id=str(agent), **fields)
        return rig.keys.GetAgentKeys(request, metadata=metadata())

    keys = {k.key_id: k for k in (await listing()).keys}
    assert {k: v.status for k, v in keys.items()} == {
        1: pb.KEY_STATUS_ACTIVE,
        2: pb.KEY_STATUS_EXPIRED,
        3: pb.KEY_STATUS_UNSPECIFIED,
    }
    assert keys[1].public_key == SIGNER.public_key and keys[1].key_type == pb.KEY_TYPE_SIGNING
    assert keys[1].created_at.seconds > 0 and keys[1].key_algorithm == pb.KEY_ALGORITHM_ED25519
    assert keys[2].HasField("valid_to") and not keys[1].HasField("revoked_at")
    assert list((await listing(key_type_filter=pb.KEY_TYPE_ENCRYPTION)).keys) == []

    revoked = await rig.keys.RevokeAgentKey(
        pb.RevokeKeyRequest(tenant_id=TENANT, agent_id=str(agent), key_id=1, reason="rotated"),
        metadata=metadata(),
    )
    assert revoked.success and revoked.revoked_at.seconds > 0
    assert 1 not in {k.key_id for k in (await listing()).keys}
    shown = {k.key_id: k for k in (await listing(include_revoked=True)).keys}
    assert shown[1].status == pb.KEY_STATUS_REVOKED and shown[1].HasField("revoked_at")
    # Revocation reaches ingest at once, and the HTTP routes see the same rows.
    later = await rig.push([signed(2, agent_id=agent, signer=SIGNER)], agent_id=agent)
    assert later.rejections[0].reason == pb.REJECTION_REASON_REVOKED_KEY
    http = await rig.api.client.get(
        "/api/v1/agents/keys",
        params={"tenant_id": TENANT, "agent_id": str(agent)},
        headers=rig.api.headers(),
    )
    assert {k["keyId"]: k["status"] for k in http.json()["keys"]}[1] == "revoked"
    missing = await rpc_error(
        rig.keys.RevokeAgentKey(
            pb.RevokeKeyRequest(tenant_id=TENANT, agent_id=str(agent), key_id=9),
            metadata=metadata(),
        )
    )
    assert missing.code() == Code.NOT_FOUND


async def test_refusals_write_nothing(sqlite_rig: Rig) -> None:
    rig = sqlite_rig
    pb = rig.wire.v2
    agent = uuid.uuid4()
    writer = await rig.api.key(write=True)
    other_admin = await rig.api.key(TENANT_B, admin=True)
    store_admin = await rig.api.key(admin=True, store_ids=(kit.STORE_ID,))
    small_order = bytes([1]) + bytes(31)  # the identity point: refused as a key
    cases = {
        "encryption key": (
            register(rig, agent, 1, key_type=pb.KEY_TYPE_ENCRYPTION),
            None,
            Code.UNIMPLEMENTED,
            "only signing keys are supported",
        ),
        "short key": (
            register(rig, agent, 1, public_key=b"\x01" * 31),
            None,
            Code.INVALID_ARGUMENT,
            "public_key must be 32 bytes",
        ),
        "small-order key": (
            register(rig, agent, 1, public_key=small_order),
            None,
            Code.INVALID_ARGUMENT,
            "public_key",
        ),
        "bad proof": (
            register(rig, agent, 1, proof_of_possession=pop(Signer(bytes([4]) * 32))),
            None,
            Code.INVALID_ARGUMENT,
            "proof of possession verification failed",
        ),
        "validity backwards": (
            register(rig, agent, 1, valid_from=at(kit.future(2)), valid_to=at(kit.future(1))),
            None,
            Code.INVALID_ARGUMENT,
            "valid_from",
        ),
        "post-quantum algorithm": (
            register(rig, agent, 1, key_algorithm=pb.KEY_ALGORITHM_ED25519_ML_DSA_65),
            None,
            Code.INVALID_ARGUMENT,
            "not allowed",
        ),
        "bad agent id": (
            pb.RegisterKeyRequest(tenant_id=TENANT, agent_id="x", key_type=pb.KEY_TYPE_SIGNING),
            None,
            Code.INVALID_ARGUMENT,
            "invalid agent_id",
        ),
        "not an admin": (
            register(rig, agent, 1),
            writer,
            Code.PERMISSION_DENIED,
            "admin permission required",
        ),
        "another tenant's admin": (
            register(rig, agent, 1),
            other_admin,
            Code.PERMISSION_DENIED,
            "tenant access denied",
        ),
        "a store's admin": (
            register(rig, agent, 1),
            store_admin,
            Code.PERMISSION_DENIED,
            "Tenant-wide admin required",
        ),
    }
    for name, (request, key, code, text) in cases.items():
        creds = metadata(key) if key else metadata()
        error = await rpc_error(rig.keys.RegisterAgentKey(request, metadata=creds))
        assert (error.code(), text in (error.details() or "")) == (code, True), (
            name,
            (error.details() or ""),
        )
    assert await rig.store.list_agent_keys(kit.TENANT) == []
    listing = pb.GetAgentKeysRequest(tenant_id=TENANT, agent_id=str(agent))
    denied = await rpc_error(rig.keys.GetAgentKeys(listing, metadata=metadata(writer)))
    assert denied.code() == Code.PERMISSION_DENIED
    revoke = pb.RevokeKeyRequest(tenant_id=TENANT, agent_id=str(agent), key_id=1)
    denied = await rpc_error(rig.keys.RevokeAgentKey(revoke, metadata=metadata(other_admin)))
    assert (denied.code(), (denied.details() or "")) == (
        Code.PERMISSION_DENIED,
        "tenant access denied",
    )

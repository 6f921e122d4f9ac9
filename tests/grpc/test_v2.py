"""``stateset.sequencer.v2.Sequencer``'s unary methods on both backends: Push through the
ingest pipeline (V1, V2 and encrypted events, hashes given or computed by the server,
nanosecond ``created_at``), every read against what HTTP answers, the rejection enum
case by case, and every bad input refused with its exact status and the store as it was.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from stateset_sequencer.testing import kit
from stateset_sequencer.ves import merkle
from stateset_sequencer.ves.signing import Signer
from tests.api.conftest import ADMIN_KEY

from .conftest import MakeRig, Rig, metadata, rpc_error, signed

VES = "/api/v1/ves"
TENANT_B = uuid.UUID("00000000-0000-0000-0000-0000000000a2")
STORE_2 = uuid.UUID("00000000-0000-0000-0000-0000000000b2")
STREAM_QUERY = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}
Code = grpc.StatusCode


def pull(rig: Rig, **fields: Any) -> Any:
    request = rig.wire.v2.PullEventsRequest(
        tenant_id=str(kit.TENANT), store_id=str(kit.STORE_ID), **fields
    )
    return rig.v2.PullEvents(request, metadata=metadata())


async def http_events(rig: Rig) -> list[dict[str, Any]]:
    response = await rig.api.client.get(
        f"{VES}/events", params=STREAM_QUERY, headers=rig.api.headers()
    )
    assert response.status_code == 200, response.text
    return [item["envelope"] for item in response.json()["events"]]


async def test_push_then_every_read(rig: Rig) -> None:
    pb = rig.wire.v2
    await rig.api.register_agent()
    plain = [signed(i, entity_id="ORD-A") for i in range(1, 5)]
    legacy = signed(5, ves_version=1, command_id=uuid.uuid4())
    sealed = signed(6, recipients=[(1, kit.X25519_PUBLIC)], command_id=uuid.uuid4())
    nanos = signed(7, created_at="2025-06-01T00:00:07.123456789+00:00")
    millis = signed(8, created_at="2025-06-01T00:00:08.120+00:00")

    first = await rig.push(plain[:2], request_id="req-1")
    assert (first.events_accepted, first.events_rejected) == (2, 0)
    assert (first.sequence_start, first.sequence_end, first.head_sequence) == (1, 2, 2)
    assert first.request_id == "req-1" and uuid.UUID(first.batch_id)
    assert not first.HasField("commitment")
    # Hashes left empty: the server computes them, as the reference does.
    rest = [*plain[2:], legacy, sealed, nanos, millis]
    second = await rig.push(rest, hashes=False)
    assert list(second.rejections) == []
    assert (second.events_accepted, second.sequence_start, second.sequence_end) == (6, 3, 8)
    # An exact replay is answered, not sequenced again and not rejected.
    replay = await rig.push(plain[:1])
    assert (replay.events_accepted, replay.events_rejected, replay.sequence_start) == (0, 0, 0)
    assert replay.head_sequence == 8

    # Stored exactly as signed: HTTP reads back the agents' envelopes, created_at texts
    # included.
    sent = [*plain[:2], *rest]
    stored = await http_events(rig)
    assert [e["event_id"] for e in stored] == [str(e.event_id) for e in sent]
    for env, back in zip(sent, stored, strict=True):
        assert back["created_at"] == env.created_at
        assert back["agent_signature"] == "0x" + env.agent_signature.hex()
        assert back["payload_cipher_hash"] == "0x" + env.payload_cipher_hash.hex()

    # PullEvents: the window, its filters and continuation.
    page = await pull(rig)
    assert [e.sequence_number for e in page.events] == list(range(1, 9))
    assert (page.next_sequence, page.has_more, page.head_sequence) == (9, False, 8)
    window = await pull(rig, from_sequence=2, limit=3)
    assert [e.sequence_number for e in window.events] == [2, 3, 4]
    assert (window.next_sequence, window.has_more) == (5, True)
    narrowed = await pull(rig, from_sequence=1, limit=4, event_type_filter=["nope"])
    assert list(narrowed.events) == [] and narrowed.next_sequence == 5 and narrowed.has_more
    by_entity = await pull(rig, entity_id_filter="ORD-A", entity_type_filter="order")
    assert [e.sequence_number for e in by_entity.events] == [1, 2, 3, 4]
    by_agent = await pull(rig, agent_filter=[str(kit.AGENT_ID)])
    assert len(by_agent.events) == 8
    assert list((await pull(rig, agent_filter=[str(uuid.uuid4())])).events) == []

    by_seq = {e.sequence_number: e for e in page.events}
    env6 = by_seq[6].envelope
    assert env6.payload_kind == pb.PAYLOAD_KIND_ENCRYPTED and env6.payload == b""
    assert env6.payload_encrypted.recipients[0].recipient_kid == 1
    assert env6.payload_cipher_hash == sealed.payload_cipher_hash
    env7 = by_seq[7].envelope
    assert (env7.created_at.seconds % 60, env7.created_at.nanos) == (7, 123456789)
    assert env7.base_version == 0 and env7.payload_kind == pb.PAYLOAD_KIND_PLAINTEXT
    assert by_seq[5].envelope.ves_version == 1 and by_seq[5].envelope.command_id
    receipt = await rig.api.client.get(
        f"{VES}/events/{plain[0].event_id}", headers=rig.api.headers()
    )
    assert by_seq[1].receipt_hash.hex() == receipt.json()["receipt"]["receiptHash"]
    assert by_seq[1].envelope.agent_signature == plain[0].agent_signature

    # GetSyncState before any commitment: no root; an admin key holds no cursor.
    sync_request = pb.GetSyncStateRequest(tenant_id=str(kit.TENANT), store_id=str(kit.STORE_ID))
    state = await rig.v2.GetSyncState(sync_request, metadata=metadata())
    assert (state.head_sequence, state.state_root, state.HasField("latest_commitment")) == (
        8,
        b"",
        False,
    )
    assert (state.acknowledged_sequence, state.lag) == (0, 0)

    made = await rig.api.client.post(
        f"{VES}/commitments",
        json={**STREAM_QUERY, "sequence_start": 1, "sequence_end": 8},
        headers=rig.api.headers(),
    )
    assert made.status_code == 200, made.text
    commitment = made.json()
    state = await rig.v2.GetSyncState(sync_request, metadata=metadata())
    assert state.state_root.hex() == commitment["new_state_root"]
    assert state.latest_commitment.batch_id == commitment["batch_id"]

    got = await rig.v2.GetCommitment(
        pb.GetCommitmentRequest(batch_id=commitment["batch_id"]), metadata=metadata()
    )
    assert (got.start_sequence, got.end_sequence, got.event_count) == (1, 8, 8)
    assert got.merkle_root.hex() == commitment["merkle_root"] and got.previous_root == b""
    store_key = await rig.api.key(store_ids=(kit.STORE_ID,))
    by_number = await rig.v2.GetCommitment(
        pb.GetCommitmentRequest(sequence_number=3), metadata=metadata(store_key)
    )
    assert by_number.batch_id == commitment["batch_id"]
    nil_scope = await rpc_error(
        rig.v2.GetCommitment(pb.GetCommitmentRequest(sequence_number=3), metadata=metadata())
    )
    assert nil_scope.code() == Code.INVALID_ARGUMENT
    missing = await rpc_error(
        rig.v2.GetCommitment(
            pb.GetCommitmentRequest(batch_id=str(uuid.uuid4())), metadata=metadata()
        )
    )
    assert (missing.code(), (missing.details() or "")) == (Code.NOT_FOUND, "commitment not found")

    for selector in ({"event_id": str(plain[1].event_id)}, {"sequence_number": 2}):
        proof = await rig.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(**STREAM_QUERY, **selector), metadata=metadata()
        )
        assert proof.included and proof.event.sequence_number == 2
        path = proof.proof
        assert (path.leaf_index, path.leaf_count) == (1, 8)
        assert path.merkle_root.hex() == commitment["merkle_root"]
        assert merkle.is_included(
            path.leaf_hash, path.merkle_root, list(path.proof_hashes), path.leaf_index
        )
        http_proof = await rig.api.client.get(
            f"{VES}/proofs/2", params=STREAM_QUERY, headers=rig.api.headers()
        )
        assert [p.hex() for p in path.proof_hashes] == http_proof.json()["proof_path"]
    good_root = bytes.fromhex(commitment["merkle_root"])
    kept = await rig.v2.GetInclusionProof(
        pb.GetInclusionProofRequest(**STREAM_QUERY, sequence_number=5, expected_root=good_root),
        metadata=metadata(),
    )
    assert kept.included
    wrong = await rpc_error(
        rig.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(**STREAM_QUERY, sequence_number=5, expected_root=b"x" * 32),
            metadata=metadata(),
        )
    )
    assert wrong.code() == Code.FAILED_PRECONDITION
    await rig.push([signed(9)])
    uncommitted = await rpc_error(
        rig.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(**STREAM_QUERY, sequence_number=9), metadata=metadata()
        )
    )
    assert uncommitted.code() == Code.NOT_FOUND
    absent = await rpc_error(
        rig.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(**STREAM_QUERY, event_id=str(uuid.uuid4())),
            metadata=metadata(),
        )
    )
    assert (absent.code(), (absent.details() or "")) == (Code.NOT_FOUND, "event not found")

    def history(**fields: Any) -> Any:
        request = pb.GetEntityHistoryRequest(
            **STREAM_QUERY, entity_type="order", entity_id="ORD-A", **fields
        )
        return rig.v2.GetEntityHistory(request, metadata=metadata())

    whole = await history()
    assert [e.sequence_number for e in whole.events] == [1, 2, 3, 4]
    assert whole.current_version == 4
    middle = await history(from_version=2, to_version=3)
    assert [e.sequence_number for e in middle.events] == [2, 3]
    assert [e.sequence_number for e in (await history(from_version=2, limit=1)).events] == [2]
    backwards = await rpc_error(history(from_version=3, to_version=2))
    assert backwards.code() == Code.INVALID_ARGUMENT

    health = await rig.v2.GetHealth(rig.wire.empty.Empty(), metadata=metadata())
    assert health.healthy and health.version == rig.services.version


async def test_rejections_map_to_the_reference_enum(rig: Rig) -> None:
    """REFERENCE_MAP §2.2, case by case, beside an event that is accepted."""
    pb = rig.wire.v2
    await rig.api.register_agent()
    await kit.register(rig.store, key_id=2)
    await kit.register(rig.store, key_id=3, valid_to=kit.past(1))
    revoked = await rig.api.client.delete(
        f"/api/v1/agents/keys/{kit.TENANT}/{kit.AGENT_ID}/2", headers=rig.api.headers()
    )
    assert revoked.status_code == 200, revoked.text
    command = uuid.uuid4()
    kept = signed(1)
    assert (await rig.push([kept, signed(2, command_id=command)])).events_accepted == 2

    bad_hash = kit.resign(signed(10), payload_plain_hash=bytes(32))
    bad_signature = signed(11).model_copy(update={"agent_signature": bytes(64)})
    over = kit.event(16, ves_version=1, base_version=2**60, created_at="2025-06-01T00:00:16+00:00")
    cases = {
        "duplicate_event": (
            kit.resign(kept, entity_id="other"),
            pb.REJECTION_REASON_DUPLICATE_EVENT,
        ),
        "duplicate_command": (signed(3, command_id=command), pb.REJECTION_REASON_DUPLICATE_COMMAND),
        "bad_hash": (bad_hash, pb.REJECTION_REASON_INVALID_HASH),
        "bad_signature": (bad_signature, pb.REJECTION_REASON_INVALID_SIGNATURE),
        "unknown_key": (signed(12, key_id=9), pb.REJECTION_REASON_UNKNOWN_KEY),
        "revoked_key": (signed(13, key_id=2), pb.REJECTION_REASON_REVOKED_KEY),
        "expired_key": (signed(14, key_id=3), pb.REJECTION_REASON_UNKNOWN_KEY),
        "version_conflict": (signed(15, base_version=5), pb.REJECTION_REASON_VERSION_CONFLICT),
        "unsupported_version": (signed(17), pb.REJECTION_REASON_INVALID_FORMAT),
        "schema": (over, pb.REJECTION_REASON_INVALID_FORMAT),
    }
    request = rig.push_request([env for env, _ in cases.values()])
    # Versions a signer cannot produce, set on the wire as a client could.
    request.events[8].ves_version = 3
    request.events[9].ves_version = 2
    before = await rig.snapshot()
    answer = await rig.v2.Push(request, metadata=metadata())
    assert answer.events_accepted == 0 and answer.events_rejected == len(cases)
    got = {r.event_id: r for r in answer.rejections}
    for name, (env, reason) in cases.items():
        rejection = got[str(env.event_id)]
        assert rejection.reason == reason, (name, rejection)
        assert rejection.message, name
    assert await rig.snapshot() == before


async def test_bad_input_is_refused_and_nothing_is_written(make_rig: MakeRig) -> None:
    rig = await make_rig(MAX_EVENTS_PER_BATCH=3, GRPC_MAX_MESSAGE_BYTES=64 * 1024)
    pb = rig.wire.v2
    await rig.api.register_agent()
    assert (await rig.push([signed(1)])).events_accepted == 1
    other_tenant = await rig.api.key(TENANT_B, write=True)
    other_store = await rig.api.key(write=True, store_ids=(STORE_2,))
    read_only = await rig.api.key()
    bound_elsewhere = await rig.api.key(write=True, agent_id=uuid.uuid4())

    def request(**change: Any) -> Any:
        message = rig.push_request([signed(2)])
        for name, value in change.items():
            target, _, field = name.rpartition("__")
            holder = message.events[0] if target == "event" else message
            if field == "ClearField":
                holder.ClearField(value)
            else:
                setattr(holder, field, value)
        return message

    def big() -> Any:
        return rig.push_request([signed(2, payload={"blob": "x" * 70_000})])

    nanos_bad = request()
    nanos_bad.events[0].created_at.nanos = -1
    bad_kind = request(event__payload_kind=pb.PAYLOAD_KIND_ENCRYPTED, event__payload=b"")
    cases: dict[str, tuple[Any, str, Code, str]] = {
        "payload_kind 0": (
            request(event__payload_kind=0),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "payload_kind",
        ),
        "oversized": (big(), ADMIN_KEY, Code.RESOURCE_EXHAUSTED, ""),
        "empty batch": (
            rig.push_request([]),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "events must not be empty",
        ),
        "batch over limit": (
            rig.push_request([signed(i) for i in range(2, 6)]),
            ADMIN_KEY,
            Code.RESOURCE_EXHAUSTED,
            "MAX_EVENTS_PER_BATCH",
        ),
        "event of another tenant": (
            request(event__tenant_id=str(TENANT_B)),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "tenant_id and store_id",
        ),
        "event of another store": (
            request(event__store_id=str(STORE_2)),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "tenant_id and store_id",
        ),
        "event of another agent": (
            request(event__source_agent=str(uuid.uuid4())),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "source_agent",
        ),
        "cross-tenant credential": (
            request(),
            other_tenant,
            Code.PERMISSION_DENIED,
            "tenant access denied",
        ),
        "other store's credential": (
            request(),
            other_store,
            Code.PERMISSION_DENIED,
            "store access denied",
        ),
        "read-only credential": (
            request(),
            read_only,
            Code.PERMISSION_DENIED,
            "write permission required",
        ),
        "credential of another agent": (
            request(),
            bound_elsewhere,
            Code.PERMISSION_DENIED,
            "Agent mismatch",
        ),
        "invalid tenant uuid": (
            request(tenant_id="not-a-uuid"),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "invalid tenant_id",
        ),
        "invalid agent uuid": (
            request(agent_id="nope"),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "invalid agent_id",
        ),
        "invalid event uuid": (
            request(event__event_id="x"),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "invalid event_id",
        ),
        "invalid command uuid": (
            request(event__command_id="x"),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "invalid command_id",
        ),
        "short hash": (
            request(event__payload_plain_hash=b"\x01" * 5),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "payload_plain_hash must be 32 bytes",
        ),
        "short signature": (
            request(event__agent_signature=b"\x01" * 5),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "agent_signature must be 64 bytes",
        ),
        "no created_at": (
            request(event__ClearField="created_at"),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "created_at is required",
        ),
        "bad nanos": (nanos_bad, ADMIN_KEY, Code.INVALID_ARGUMENT, "created_at nanos"),
        "payload not JSON": (
            request(event__payload=b"{nope"),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "invalid payload JSON",
        ),
        "entity_type too long": (
            request(event__entity_type="t" * 129),
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "entity_type",
        ),
        "encrypted without payload_encrypted": (
            bad_kind,
            ADMIN_KEY,
            Code.INVALID_ARGUMENT,
            "payload_encrypted is required",
        ),
    }
    before = await rig.snapshot()
    raw = rig.channel.unary_unary(
        "/stateset.sequencer.v2.Sequencer/Push",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    malformed = await rpc_error(raw(b"\xff\xff\xff", metadata=metadata()))
    assert malformed.code() == Code.INVALID_ARGUMENT
    assert (malformed.details() or "").startswith("malformed request"), malformed.details() or ""
    for name, (message, key, code, text) in cases.items():
        error = await rpc_error(rig.v2.Push(message, metadata=metadata(key)))
        assert error.code() == code, (name, error.code(), (error.details() or ""))
        assert text in (error.details() or ""), (name, (error.details() or ""))
        assert "Exception" not in (error.details() or ""), name
        assert await rig.snapshot() == before, name

    no_credential = await rpc_error(rig.v2.Push(request()))
    assert no_credential.code() == Code.UNAUTHENTICATED
    stream = rig.v2.StreamEvents(
        pb.StreamEventsRequest(tenant_id=str(kit.TENANT), store_id=str(kit.STORE_ID))
    )
    unauthenticated = await rpc_error(stream.read())
    assert unauthenticated.code() == Code.UNAUTHENTICATED
    assert await rig.snapshot() == before


async def test_reads_refuse_other_scopes_and_bad_ids(sqlite_rig: Rig) -> None:
    rig = sqlite_rig
    pb = rig.wire.v2
    other_tenant = await rig.api.key(TENANT_B)
    other_store = await rig.api.key(store_ids=(STORE_2,))
    for key, text in ((other_tenant, "tenant access denied"), (other_store, "store access denied")):
        error = await rpc_error(
            rig.v2.PullEvents(
                pb.PullEventsRequest(tenant_id=str(kit.TENANT), store_id=str(kit.STORE_ID)),
                metadata=metadata(key),
            )
        )
        assert (error.code(), (error.details() or "")) == (Code.PERMISSION_DENIED, text)
    for request in (
        pb.GetSyncStateRequest(tenant_id="x", store_id=str(kit.STORE_ID)),
        pb.GetSyncStateRequest(tenant_id=str(kit.TENANT), store_id=""),
    ):
        error = await rpc_error(rig.v2.GetSyncState(request, metadata=metadata()))
        assert error.code() == Code.INVALID_ARGUMENT and "invalid" in (error.details() or "")
    no_selector = await rpc_error(
        rig.v2.GetInclusionProof(
            pb.GetInclusionProofRequest(tenant_id=str(kit.TENANT), store_id=str(kit.STORE_ID)),
            metadata=metadata(),
        )
    )
    assert no_selector.code() == Code.INVALID_ARGUMENT
    too_many = await rpc_error(
        rig.v2.PullEvents(
            pb.PullEventsRequest(
                tenant_id=str(kit.TENANT),
                store_id=str(kit.STORE_ID),
                event_type_filter=["t"] * 101,
            ),
            metadata=metadata(),
        )
    )
    assert too_many.code() == Code.INVALID_ARGUMENT
    long_type = await rpc_error(
        rig.v2.GetEntityHistory(
            pb.GetEntityHistoryRequest(
                tenant_id=str(kit.TENANT),
                store_id=str(kit.STORE_ID),
                entity_type="t" * 129,
                entity_id="e",
            ),
            metadata=metadata(),
        )
    )
    assert long_type.code() == Code.INVALID_ARGUMENT
    # Text no store can hold matches no stored event: an empty history, not a fault.
    nul = await rig.v2.GetEntityHistory(
        pb.GetEntityHistoryRequest(
            tenant_id=str(kit.TENANT),
            store_id=str(kit.STORE_ID),
            entity_type="order",
            entity_id="a\x00b",
        ),
        metadata=metadata(),
    )
    assert list(nul.events) == [] and nul.current_version == 0


async def test_an_encrypted_event_needs_its_plain_hash(sqlite_rig: Rig) -> None:
    """An encrypted event's plain hash is salted: a client must send it."""
    rig = sqlite_rig
    await rig.api.register_agent()
    sealed = signed(1, recipients=[(1, kit.X25519_PUBLIC)])
    message = rig.push_request([sealed], hashes=False)
    message.events[0].payload_plain_hash = b""
    error = await rpc_error(rig.v2.Push(message, metadata=metadata()))
    assert error.code() == Code.INVALID_ARGUMENT and "payload_plain_hash" in (error.details() or "")
    stranger = Signer(bytes([5]) * 32)
    foreign = await rig.push([signed(2, signer=stranger)])
    assert foreign.rejections[0].reason == rig.wire.v2.REJECTION_REASON_INVALID_SIGNATURE
    ok = await rig.push([sealed], hashes=False)
    assert ok.events_accepted == 1

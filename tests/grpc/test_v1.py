"""The deprecated ``stateset.sequencer.v1.Sequencer`` on both backends: reads of the VES
store in the legacy shapes, ``Pull`` as chunks until caught up, ``Push`` refused
UNIMPLEMENTED towards v2, and the deprecation flag on every answer."""

from __future__ import annotations

import json
import uuid

import grpc

from stateset_sequencer.testing import kit

from .conftest import Rig, metadata, rpc_error, signed

Code = grpc.StatusCode
QUERY = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}
DEPRECATED = ("x-sequencer-v1-deprecated", "true")


async def test_legacy_reads(rig: Rig) -> None:
    v1 = rig.wire.v1
    await rig.api.register_agent()
    events = [signed(i, entity_id="ORD-L" if i % 2 else f"ORD-{i}") for i in range(1, 8)]
    assert (await rig.push(events)).events_accepted == 7

    head_call = rig.v1.GetHead(v1.GetHeadRequest(**QUERY), metadata=metadata())
    head = await head_call
    assert head.head_sequence == 7 and not head.HasField("latest_commitment")
    assert DEPRECATED in tuple(await head_call.initial_metadata() or ())

    pulled = rig.v1.Pull(
        v1.PullRequest(**QUERY, from_sequence=2, batch_size=3), metadata=metadata()
    )
    chunks = [chunk async for chunk in pulled]
    assert [[e.sequence_number for e in c.events] for c in chunks] == [[2, 3, 4], [5, 6, 7]]
    assert [(c.next_sequence, c.has_more, c.head_sequence) for c in chunks] == [
        (5, True, 7),
        (8, False, 7),
    ]
    assert DEPRECATED in tuple(await pulled.initial_metadata() or ())
    legacy = chunks[0].events[0].envelope
    assert legacy.event_id == str(events[1].event_id)
    assert json.loads(legacy.payload) == events[1].payload
    assert legacy.payload_hash == events[1].payload_plain_hash
    assert legacy.signature == events[1].agent_signature
    caught_up = [
        c async for c in rig.v1.Pull(v1.PullRequest(**QUERY, from_sequence=8), metadata=metadata())
    ]
    assert len(caught_up) == 1 and list(caught_up[0].events) == [] and not caught_up[0].has_more

    history = await rig.v1.GetEntityHistory(
        v1.GetEntityHistoryRequest(**QUERY, entity_type="order", entity_id="ORD-L", from_version=2),
        metadata=metadata(),
    )
    assert [e.sequence_number for e in history.events] == [3, 5, 7]
    assert history.current_version == 4

    made = await rig.api.client.post(
        "/api/v1/ves/commitments",
        json={**QUERY, "sequence_start": 1, "sequence_end": 7},
        headers=rig.api.headers(),
    )
    batch_id = made.json()["batch_id"]
    got = await rig.v1.GetCommitment(
        v1.GetCommitmentRequest(batch_id=batch_id), metadata=metadata()
    )
    assert (got.commitment.start_sequence, got.commitment.end_sequence) == (1, 7)
    proof = await rig.v1.GetInclusionProof(
        v1.GetInclusionProofRequest(batch_id=batch_id, event_id=str(events[3].event_id)),
        metadata=metadata(),
    )
    assert proof.event.sequence_number == 4 and proof.proof.leaf_index == 3
    assert proof.proof.merkle_root.hex() == made.json()["merkle_root"]
    assert proof.commitment.batch_id == batch_id
    head = await rig.v1.GetHead(v1.GetHeadRequest(**QUERY), metadata=metadata())
    assert head.latest_commitment.batch_id == batch_id

    missing = await rpc_error(
        rig.v1.GetCommitment(
            v1.GetCommitmentRequest(batch_id=str(uuid.uuid4())), metadata=metadata()
        )
    )
    assert missing.code() == Code.NOT_FOUND


async def test_push_points_at_v2(sqlite_rig: Rig) -> None:
    rig = sqlite_rig
    v1 = rig.wire.v1
    before = await rig.snapshot()
    request = v1.PushRequest(
        agent_id=str(kit.AGENT_ID),
        events=[v1.EventEnvelope(event_id=str(uuid.uuid4()), payload=b"{}")],
    )
    call = rig.v1.Push(request, metadata=metadata())
    error = await rpc_error(call)
    assert error.code() == Code.UNIMPLEMENTED
    assert "stateset.sequencer.v2.Sequencer/Push" in (error.details() or "")
    assert DEPRECATED in tuple(await call.initial_metadata() or ())
    assert await rig.snapshot() == before

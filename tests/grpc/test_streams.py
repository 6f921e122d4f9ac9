"""The live streams: history then live with no gap and no duplicate at the seam, events
ingested over HTTP reaching gRPC subscribers, heartbeats, a client that stops reading cut
off with where to resume (and resuming there losing nothing), subscriptions freed when a
client goes, the subscriber cap, shutdown, SubscribeEntity, and SyncStream's push, pull,
acknowledgements (read back over HTTP) and heartbeats."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc

from stateset_sequencer.testing import kit
from tests.api.conftest import ADMIN_KEY

from .conftest import WAIT_S, MakeRig, Rig, metadata, rpc_error, signed, trailing

Code = grpc.StatusCode
QUERY = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}
RESUME = "x-resume-from-sequence"


def stream_events(rig: Rig, key: str = ADMIN_KEY, **fields: Any) -> Any:
    request = rig.wire.v2.StreamEventsRequest(**QUERY, **fields)
    return rig.v2.StreamEvents(request, metadata=metadata(key))


async def read(call: Any) -> Any:
    message = await asyncio.wait_for(call.read(), WAIT_S)
    assert message is not grpc.aio.EOF, "the stream ended"
    return message


async def read_events(call: Any, count: int) -> list[int]:
    """The next ``count`` events' sequence numbers (heartbeats skipped)."""
    seen: list[int] = []
    while len(seen) < count:
        message = await read(call)
        if message.HasField("envelope"):
            seen.append(message.sequence_number)
    return seen


async def http_ingest(rig: Rig, events: list[Any]) -> None:
    response = await rig.api.ingest(events)
    assert response.status_code == 200 and response.json()["eventsAccepted"] == len(events)


async def subscribers(rig: Rig, count: int) -> None:
    await kit.until(lambda: rig.services.live.subscribers == count, f"{count} subscribers")


async def test_history_then_live_without_gap_or_duplicate(rig: Rig) -> None:
    await rig.api.register_agent()
    await rig.push([signed(i) for i in range(1, 6)])
    call = stream_events(rig, include_history=True, from_sequence=0)
    live = stream_events(rig)  # live only, from the head now
    filtered = stream_events(rig, include_history=True, event_type_filter=["order.shipped"])
    assert await read_events(call, 5) == [1, 2, 3, 4, 5]
    await subscribers(rig, 3)
    await rig.push([signed(i) for i in range(6, 9)])
    # Sequenced over HTTP, by the same process: the gRPC subscribers see it too.
    await http_ingest(rig, [signed(9), signed(10, event_type="order.shipped")])
    assert await read_events(call, 5) == [6, 7, 8, 9, 10]
    assert await read_events(live, 5) == [6, 7, 8, 9, 10]
    assert await read_events(filtered, 1) == [10]
    for open_call in (call, live, filtered):
        open_call.cancel()
    await subscribers(rig, 0)


async def test_heartbeats_carry_the_position(sqlite_rig: Rig) -> None:
    rig = sqlite_rig
    await rig.api.register_agent()
    await rig.push([signed(1), signed(2)])
    call = stream_events(
        rig, include_history=True, heartbeat_interval_ms=200, event_type_filter=["none"]
    )
    beats: list[Any] = []
    loop = asyncio.get_running_loop()
    until = loop.time() + 1.0
    while loop.time() < until:
        message = await read(call)
        assert not message.HasField("envelope")
        beats.append(message)
    # About five in a second; a loaded machine may give fewer, never none.
    assert len(beats) >= 2
    # Filtered events still move the position a heartbeat reports.
    assert {b.sequence_number for b in beats} == {2}
    assert all(b.sequenced_at.seconds > 0 for b in beats)
    call.cancel()
    await subscribers(rig, 0)


async def test_a_client_that_stops_reading_is_cut_off_and_resumes(make_rig: MakeRig) -> None:
    # bdp_probe off keeps the client's receive window at its 64 KiB start, so a handful
    # of 20 KiB events fills it; the server then cannot write and cuts the client off.
    rig = await make_rig(STREAM_STALL_TIMEOUT_MS=300, options=[("grpc.http2.bdp_probe", 0)])
    await rig.api.register_agent()
    total = 40
    blob = "x" * 20_000
    for start in range(1, total + 1, 10):
        events = [signed(i, payload={"blob": blob, "n": i}) for i in range(start, start + 10)]
        assert (await rig.push(events)).events_accepted == 10
    call = stream_events(rig, include_history=True, from_sequence=1)
    got = await read_events(call, 2)
    registry = rig.services.metrics.registry

    def cut_off() -> bool:
        value = registry.get_sample_value("sequencer_stream_cutoffs_total", {"transport": "grpc"})
        return bool(value)

    await kit.until(cut_off, "the server cut the stalled client off")
    error: grpc.aio.AioRpcError | None = None
    try:
        while True:
            message = await asyncio.wait_for(call.read(), WAIT_S)
            assert message is not grpc.aio.EOF
            got.append(message.sequence_number)
    except grpc.aio.AioRpcError as exc:
        error = exc
    assert error is not None and error.code() == Code.RESOURCE_EXHAUSTED
    resume = int(trailing(error)[RESUME])
    assert (error.details() or "") == f"subscriber_too_slow: resume from_sequence={resume}"
    assert got == list(range(1, len(got) + 1)) and len(got) < total
    # The stalled write may still have arrived: the resume point repeats, never skips.
    assert resume in (len(got), len(got) + 1)
    await subscribers(rig, 0)
    again = stream_events(rig, include_history=True, from_sequence=resume)
    rest = await read_events(again, total - resume + 1)
    assert rest == list(range(resume, total + 1))
    assert sorted(set(got) | set(rest)) == list(range(1, total + 1))
    again.cancel()
    await subscribers(rig, 0)


async def test_a_client_that_goes_frees_its_subscription(sqlite_rig: Rig) -> None:
    rig = sqlite_rig
    call = stream_events(rig, heartbeat_interval_ms=100)
    await read(call)
    await subscribers(rig, 1)
    call.cancel()
    await subscribers(rig, 0)
    # A whole connection dropped, not only the call.
    async with grpc.aio.insecure_channel(rig.target) as channel:
        stub = rig.wire.v2_grpc.SequencerStub(channel)
        dropped = stub.StreamEvents(
            rig.wire.v2.StreamEventsRequest(**QUERY, heartbeat_interval_ms=100),
            metadata=metadata(),
        )
        await read(dropped)
        await subscribers(rig, 1)
    await subscribers(rig, 0)


async def test_the_subscriber_cap_and_shutdown(make_rig: MakeRig) -> None:
    rig = await make_rig(STREAM_MAX_SUBSCRIBERS=1)
    await rig.api.register_agent()
    await rig.push([signed(1), signed(2)])
    first = stream_events(rig, include_history=True)
    assert await read_events(first, 2) == [1, 2]
    over = await rpc_error(read(stream_events(rig)))
    assert over.code() == Code.RESOURCE_EXHAUSTED
    await rig.server.stop(grace=1.0)
    ended = await rpc_error(read(first))
    assert ended.code() == Code.UNAVAILABLE
    assert trailing(ended)[RESUME] == "3" and "from_sequence=3" in (ended.details() or "")
    await subscribers(rig, 0)


async def test_subscribe_entity(rig: Rig) -> None:
    pb = rig.wire.v2
    await rig.api.register_agent()
    await rig.push([signed(1, entity_id="E"), signed(2), signed(3, entity_id="E")])
    request = pb.SubscribeEntityRequest(
        **QUERY, entity_type="order", entity_id="E", include_history=True
    )
    call = rig.v2.SubscribeEntity(request, metadata=metadata())
    assert await read_events(call, 2) == [1, 3]
    await subscribers(rig, 1)
    await rig.push([signed(4), signed(5, entity_id="E")])
    await http_ingest(rig, [signed(6, entity_id="E")])
    assert await read_events(call, 2) == [5, 6]
    call.cancel()
    too_long = pb.SubscribeEntityRequest(**QUERY, entity_type="t" * 129, entity_id="E")
    error = await rpc_error(read(rig.v2.SubscribeEntity(too_long, metadata=metadata())))
    assert error.code() == Code.INVALID_ARGUMENT
    await subscribers(rig, 0)


async def next_of(call: Any, kind: str, others: list[Any]) -> Any:
    """The next message of ``kind``; what comes before it goes to ``others``."""
    while True:
        message = await read(call)
        if message.WhichOneof("message") == kind:
            return getattr(message, kind)
        others.append(message)


async def test_sync_stream(rig: Rig) -> None:
    pb = rig.wire.v2
    await rig.api.register_agent()
    agent_key = await rig.api.key(write=True, agent_id=kit.AGENT_ID)
    call = rig.v2.SyncStream(metadata=metadata(agent_key))
    seen: list[Any] = []

    await call.write(pb.SyncMessage(heartbeat=pb.Heartbeat(last_seen_sequence=7)))
    echo = await next_of(call, "server_heartbeat", seen)
    assert echo.last_seen_sequence == 7 and echo.timestamp.seconds > 0

    # The first push names the session's stream: its own events come back as events.
    await call.write(pb.SyncMessage(push=rig.push_request([signed(1), signed(2)], request_id="s1")))
    pushed = await next_of(call, "push_response", seen)
    assert (pushed.events_accepted, pushed.sequence_end, pushed.request_id) == (2, 2, "s1")
    await call.write(pb.SyncMessage(pull=pb.PullEventsRequest(**QUERY, from_sequence=1)))
    pulled = await next_of(call, "pull_response", seen)
    assert [e.sequence_number for e in pulled.events] == [1, 2]
    await http_ingest(rig, [signed(3)])

    def forwarded() -> list[int]:
        return [m.event.sequence_number for m in seen if m.WhichOneof("message") == "event"]

    while forwarded() != [1, 2, 3]:
        seen.append(await read(call))
        assert len(forwarded()) <= 3, forwarded()

    # Acknowledged: the highest contiguous sequence, never past a gap.
    await call.write(pb.SyncMessage(ack=pb.EventAck(agent_head_sequence=2, sequence_numbers=[3])))
    state = await next_of(call, "sync_state", seen)
    assert (state.acknowledged_sequence, state.head_sequence, state.lag) == (2, 3, 1)
    cursor = await rig.api.client.get(
        f"/api/v1/ves/cursors/{kit.AGENT_ID}", params=QUERY, headers=rig.api.headers()
    )
    assert cursor.json()["acknowledgedSequence"] == 2
    sync = await rig.v2.GetSyncState(pb.GetSyncStateRequest(**QUERY), metadata=metadata(agent_key))
    assert (sync.acknowledged_sequence, sync.lag) == (2, 1)

    before = await rig.snapshot()
    await call.write(pb.SyncMessage(ack=pb.EventAck(**QUERY, agent_head_sequence=9)))
    refused = await rpc_error(next_of(call, "sync_state", seen))
    assert refused.code() == Code.INVALID_ARGUMENT
    assert (refused.details() or "") == "acknowledged sequences cannot exceed the stream head"
    assert await rig.snapshot() == before
    await subscribers(rig, 0)


async def test_sync_stream_refusals(sqlite_rig: Rig) -> None:
    rig = sqlite_rig
    pb = rig.wire.v2
    # An admin bound to no agent, in a session that names none: no cursor to move.
    call = rig.v2.SyncStream(metadata=metadata())
    await call.write(pb.SyncMessage(ack=pb.EventAck(**QUERY, agent_head_sequence=0)))
    error = await rpc_error(read(call))
    assert error.code() == Code.PERMISSION_DENIED
    assert "agent-scoped" in (error.details() or "")
    other = await rig.api.key(uuid.UUID(int=0xA2))
    call = rig.v2.SyncStream(metadata=metadata(other))
    await call.write(pb.SyncMessage(pull=pb.PullEventsRequest(**QUERY)))
    error = await rpc_error(read(call))
    assert (error.code(), (error.details() or "")) == (
        Code.PERMISSION_DENIED,
        "tenant access denied",
    )
    raw = rig.channel.stream_stream(
        "/stateset.sequencer.v2.Sequencer/SyncStream",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    call = raw(metadata=metadata())
    await call.write(b"\xff\xff\xff")
    error = await rpc_error(call.read())
    assert error.code() == Code.INVALID_ARGUMENT and (error.details() or "").startswith("malformed")
    no_credential = rig.v2.SyncStream()
    error = await rpc_error(read(no_credential))
    assert error.code() == Code.UNAUTHENTICATED
    await subscribers(rig, 0)

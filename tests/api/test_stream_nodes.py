"""Live streams across server processes: two ``stateset-sequencer serve`` children on one
PostgreSQL database, events ingested over HTTP, subscribers on both processes.

Every acknowledged event reaches a gRPC ``StreamEvents`` subscriber and an SSE subscriber
on the other process, and an SSE subscriber on the process that sequenced it, in order,
none missing and none doubled. The gRPC subscriber drops its call mid-load and resumes
from the sequence after its last; when the ingesting process is killed mid-load, the
subscribers on the survivor keep receiving, and the one that lost its server reconnects
to the survivor with ``Last-Event-ID`` and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from stateset_sequencer.proto import sequencer_v2_pb2 as pb
from stateset_sequencer.proto import sequencer_v2_pb2_grpc as rpc
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.kit import until
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.testing.serverproc import ServerProcess

ADMIN_KEY = "ss_00000000" + "streamnodesadminkeyfortests00000"
AUTH = {"Authorization": f"ApiKey {ADMIN_KEY}"}
STREAM = "/api/v1/ves/events/stream"
QUERY = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID), "heartbeat_ms": "200"}
BATCHES = 24
BATCH = 10
WAIT_S = 60.0  # a bound on a wait, never an expectation of speed


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    name, dsn = pg.create_database("seqnodes")
    env = {
        "DATABASE_URL": dsn,
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "VES_SEQUENCER_ID": str(uuid.UUID(int=7)),
        "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
        "SEQUENCER_ENV": "test",
    }
    started: list[ServerProcess] = []
    try:
        for label in ("a", "b"):
            folder = tmp_path / label
            folder.mkdir()
            child = ServerProcess(folder, {**env, "GRPC_PORT": str(free_port())})
            child.start()
            started.append(child)
        yield started[0], started[1]
    finally:
        for child in started:
            child.stop()
        pg.drop_database(name)


class Follower:
    """An SSE subscriber that reconnects, to the next URL when its server is gone, with
    ``Last-Event-ID`` set to the last event it saw."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.seen: list[int] = []
        self.connections = 0

    async def run(self) -> None:
        attempt = 0
        while True:
            url = self.urls[min(attempt, len(self.urls) - 1)]
            headers = dict(AUTH)
            params = dict(QUERY)
            if self.seen:
                headers["Last-Event-ID"] = str(self.seen[-1])
            else:
                params["from"] = "1"
            try:
                async with (
                    httpx.AsyncClient(base_url=url, timeout=WAIT_S) as client,
                    client.stream("GET", STREAM, params=params, headers=headers) as response,
                ):
                    assert response.status_code == 200
                    self.connections += 1
                    event = ""
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "event":
                            item = json.loads(line[6:])
                            self.seen.append(item["envelope"]["sequence_number"])
            except (httpx.TransportError, httpx.RemoteProtocolError):
                pass
            attempt += 1
            await asyncio.sleep(0.1)


class GrpcFollower(Follower):
    """A ``StreamEvents`` subscriber that hangs up after ``drop_after`` events and calls
    again from the sequence after its last, as a client resumes."""

    def __init__(self, target: str, drop_after: int) -> None:
        super().__init__([])
        self.target = target
        self.drop_after = drop_after

    async def run(self) -> None:
        auth = (("authorization", f"ApiKey {ADMIN_KEY}"),)
        while True:
            start = self.seen[-1] + 1 if self.seen else 1
            request = pb.StreamEventsRequest(
                tenant_id=str(kit.TENANT),
                store_id=str(kit.STORE_ID),
                from_sequence=start,
                include_history=True,
                heartbeat_interval_ms=200,
            )
            try:
                async with grpc.aio.insecure_channel(self.target) as channel:
                    call = rpc.SequencerStub(channel).StreamEvents(request, metadata=auth)
                    self.connections += 1
                    async for event in call:
                        if event.HasField("envelope"):
                            self.seen.append(event.sequence_number)
                            if len(self.seen) == self.drop_after:
                                call.cancel()
                                break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def following(urls: list[str], follower: Follower | None = None) -> AsyncIterator[Follower]:
    follower = follower or Follower(urls)
    task = asyncio.create_task(follower.run())
    try:
        yield follower
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def ingest(url: str, first: int) -> int | None:
    """One batch; its head, or None when the server is gone (the caller retries it)."""
    events = [kit.event(i) for i in range(first, first + BATCH)]
    body = {"agentId": str(kit.AGENT_ID), "events": [e.to_wire() for e in events]}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as client:
            response = await client.post("/api/v1/ves/events/ingest", json=body, headers=AUTH)
    except httpx.TransportError:
        return None
    assert response.status_code == 200, response.text
    return int(response.json()["headSequence"])


async def test_events_reach_subscribers_on_both_processes_across_a_kill(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    async with httpx.AsyncClient(base_url=a.url) as client:
        response = await client.post(
            "/api/v1/agents/keys",
            json={
                "tenantId": str(kit.TENANT),
                "agentId": str(kit.AGENT_ID),
                "keyId": 1,
                "publicKey": "0x" + kit.AGENT.public_key.hex(),
            },
            headers=AUTH,
        )
        assert response.status_code == 200, response.text
    async with (
        following([b.url]) as on_b,
        following([a.url, b.url]) as on_a,
        following([], GrpcFollower(b.grpc_target, drop_after=BATCHES * BATCH // 3)) as grpc_b,
    ):
        await until(
            lambda: min(on_a.connections, on_b.connections, grpc_b.connections) > 0,
            "every subscriber connected",
            WAIT_S,
        )
        head = 0
        target = a.url
        for n in range(BATCHES):
            if n == BATCHES // 2:
                # Mid-load, with the subscriber on A reading: SIGKILL, nothing graceful.
                a.kill()
                target = b.url
            while (got := await ingest(target, n * BATCH)) is None:
                target = b.url
            head = max(head, got)
        assert head == BATCHES * BATCH
        await until(lambda: len(on_b.seen) >= head, "the survivor's subscriber caught up", WAIT_S)
        await until(lambda: len(on_a.seen) >= head, "the moved subscriber caught up", WAIT_S)
        await until(lambda: len(grpc_b.seen) >= head, "the gRPC subscriber caught up", WAIT_S)
    expected = list(range(1, head + 1))
    assert on_b.seen == expected
    assert on_a.seen == expected
    assert grpc_b.seen == expected
    assert grpc_b.connections >= 2  # it hung up and resumed
    assert on_b.connections == 1  # never cut: notices from A, then B's own
    assert on_a.connections >= 2  # it lost A and came back on B

"""``GET /api/v1/ves/events/stream``: Server-Sent Events over a real socket.

httpx's ASGI transport collects a whole body before it answers, so these tests serve the
app with uvicorn on a loopback port in the test's own loop and read the stream as a
client does: history, then live events, heartbeats, ``Last-Event-ID`` resumes, refusals
before the stream starts, a client that goes away, and one that stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn

from stateset_sequencer.api.http.app import create_app
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.kit import until
from tests.api.conftest import ADMIN_KEY, Api, MakeApi

STREAM = "/api/v1/ves/events/stream"
QUERY = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}
AUTH = {"Authorization": f"ApiKey {ADMIN_KEY}"}
READ_LIMIT_S = 20.0  # a bound on a wait, never an expectation of speed


@dataclass
class Served:
    api: Api
    url: str
    server: uvicorn.Server
    task: asyncio.Task[None]

    async def ingest(self, first: int, count: int, **kwargs: Any) -> None:
        events = [kit.event(i, **kwargs) for i in range(first, first + count)]
        response = await self.api.ingest(events)
        assert response.status_code == 200, response.text
        assert response.json()["eventsAccepted"] == count


async def serve(api: Api) -> Served:
    config = uvicorn.Config(
        create_app(api.services), host="127.0.0.1", port=0, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, "uvicorn started")
    port = server.servers[0].sockets[0].getsockname()[1]
    return Served(api, f"http://127.0.0.1:{port}", server, task)


@pytest.fixture
async def served_for(make_api: MakeApi) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    running: list[Served] = []

    async def make(backend: str = "sqlite", **settings: Any) -> Served:
        api = await make_api(backend, **settings)
        await api.register_agent()
        served = await serve(api)
        running.append(served)
        return served

    yield make
    for served in running:
        served.server.should_exit = True
        await served.task


@dataclass
class Message:
    event: str
    data: Any
    id: str | None


@dataclass
class Reader:
    """Messages off an open SSE response, parsed line by line."""

    lines: AsyncIterator[str]
    retry: int | None = None
    _pending: dict[str, list[str]] = field(default_factory=dict)

    async def next(self) -> Message:
        async with asyncio.timeout(READ_LIMIT_S):
            fields: dict[str, list[str]] = {}
            async for line in self.lines:
                if line == "":
                    if "retry" in fields:
                        self.retry = int(fields.pop("retry")[0])
                    if "data" in fields:
                        return Message(
                            fields.get("event", ["message"])[0],
                            json.loads("\n".join(fields["data"])),
                            fields.get("id", [None])[0],
                        )
                    fields = {}
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))
        raise AssertionError("the stream ended")

    async def events(self, count: int) -> list[Message]:
        got: list[Message] = []
        while len(got) < count:
            message = await self.next()
            if message.event == "event":
                got.append(message)
        return got


@contextlib.asynccontextmanager
async def open_stream(
    served: Served,
    headers: dict[str, str] | None = None,
    *,
    from_: int | None = None,
    **params: Any,
) -> AsyncIterator[Reader]:
    if from_ is not None:
        params["from"] = from_
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=READ_LIMIT_S) as client,
        client.stream(
            "GET", STREAM, params=QUERY | params, headers=AUTH | (headers or {})
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Reader(response.aiter_lines())


def sequences(messages: list[Message]) -> list[int]:
    return [m.data["envelope"]["sequence_number"] for m in messages]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_history_then_live_events_with_no_gap_or_duplicate(
    served_for: Callable[..., Awaitable[Served]], backend: str
) -> None:
    served = await served_for(backend)
    await served.ingest(0, 5)
    async with open_stream(served, from_=1) as reader:
        history = await reader.events(5)
        assert reader.retry == 2000
        await served.ingest(5, 3)
        live = await reader.events(3)
    assert sequences(history + live) == list(range(1, 9))
    assert [m.id for m in history + live] == [str(n) for n in range(1, 9)]
    # Each item is exactly an item of the paged read.
    page = await served.api.client.get("/api/v1/ves/events", params=QUERY, headers=AUTH)
    assert [m.data for m in history + live] == page.json()["events"]
    await until(lambda: served.api.services.live.subscribers == 0, "subscription freed")


async def test_last_event_id_resumes_after_it_and_wins_over_from(
    served_for: Callable[..., Awaitable[Served]],
) -> None:
    served = await served_for()
    await served.ingest(0, 6)
    async with open_stream(served, headers={"Last-Event-ID": "3"}, from_=1) as reader:
        assert sequences(await reader.events(3)) == [4, 5, 6]


async def test_without_from_only_live_events_arrive(
    served_for: Callable[..., Awaitable[Served]],
) -> None:
    served = await served_for()
    await served.ingest(0, 4)
    async with open_stream(served, heartbeat_ms=50) as reader:
        # The first heartbeat proves the subscription is in place, at the head.
        first = await reader.next()
        assert first.event == "heartbeat" and first.data["position"] == 4
        await served.ingest(4, 1)
        assert sequences(await reader.events(1)) == [5]


async def test_heartbeats_carry_the_position_past_filtered_events(
    served_for: Callable[..., Awaitable[Served]],
) -> None:
    served = await served_for()
    await served.ingest(0, 3, event_type="order.created")
    await served.ingest(3, 2, event_type="order.shipped")
    async with open_stream(served, heartbeat_ms=100, event_type="order.shipped", from_=1) as reader:
        shipped = await reader.events(2)
        beats = [await reader.next() for _ in range(2)]
    assert sequences(shipped) == [4, 5]
    assert {m.event for m in beats} == {"heartbeat"}
    assert [m.data["position"] for m in beats] == [5, 5]
    assert [m.id for m in beats] == ["5", "5"]


async def test_refusals_come_before_the_stream_and_in_our_words(
    served_for: Callable[..., Awaitable[Served]],
) -> None:
    served = await served_for()
    other_tenant = await served.api.key(uuid.UUID(int=99))
    async with httpx.AsyncClient(base_url=served.url, timeout=READ_LIMIT_S) as client:
        cases: list[tuple[dict[str, Any], dict[str, str], int, str]] = [
            (QUERY, {}, 401, "missing_auth"),
            (QUERY, {"Authorization": f"ApiKey {other_tenant}"}, 403, ""),
            (
                {"tenant_id": "not-a-uuid", "store_id": str(kit.STORE_ID)},
                AUTH,
                400,
                "INVALID_FIELD_VALUE",
            ),
            ({"store_id": str(kit.STORE_ID)}, AUTH, 400, ""),
            (QUERY | {"heartbeat_ms": "-1"}, AUTH, 400, "INVALID_FIELD_VALUE"),
            (QUERY | {"from": "x"}, AUTH, 400, "INVALID_FIELD_VALUE"),
            (QUERY | {"agent_id": "nope"}, AUTH, 400, "INVALID_FIELD_VALUE"),
            (QUERY, AUTH | {"Last-Event-ID": "seven"}, 400, "INVALID_FIELD_VALUE"),
            (QUERY, AUTH | {"Last-Event-ID": str(2**64)}, 400, "INVALID_FIELD_VALUE"),
            (QUERY | {"event_type": [f"t{i}" for i in range(65)]}, AUTH, 400, ""),
        ]
        for params, headers, status, code in cases:
            response = await client.get(STREAM, params=params, headers=headers)
            assert response.status_code == status, (params, headers, response.text)
            assert not response.headers["content-type"].startswith("text/event-stream")
            if code:
                assert code in response.text
    assert served.api.services.live.subscribers == 0


async def test_a_client_that_goes_away_frees_its_subscription(
    served_for: Callable[..., Awaitable[Served]],
) -> None:
    served = await served_for()
    async with open_stream(served, heartbeat_ms=0):
        await until(lambda: served.api.services.live.subscribers == 1, "subscribed")
    # No event and no heartbeat will ever be written: only the disconnect can end it.
    await until(lambda: served.api.services.live.subscribers == 0, "subscription freed")


async def test_a_client_that_stops_reading_is_cut_off_and_resumes_losing_nothing(
    served_for: Callable[..., Awaitable[Served]],
) -> None:
    served = await served_for(STREAM_STALL_TIMEOUT_MS=300)
    big = {"pad": "x" * 4000}
    # About 6.6 MB of SSE: more than both sockets' buffers can ever hold. The server's
    # send buffer autotunes up to tcp_wmem's maximum (4 MB here): at 2.5 MB, a run that
    # got the whole of it never stalled, and the client was never cut off.
    total = 1600
    for first in range(0, total, 100):
        await served.ingest(first, 100, payload=big)
    host, port = served.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    query = f"tenant_id={kit.TENANT}&store_id={kit.STORE_ID}&from=1&heartbeat_ms=0"
    sock.sendall(
        f"GET {STREAM}?{query} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: ApiKey {ADMIN_KEY}\r\n\r\n".encode()
    )
    try:
        await until(lambda: served.api.services.live.subscribers == 1, "subscribed")
        # Never read: the server's writes stall, and it gives up on this client.
        await until(lambda: served.api.services.live.subscribers == 0, "slow client cut off")
        # Read what was sent before the cut-off, off the loop the server runs on.
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        received = b""
        async with asyncio.timeout(READ_LIMIT_S):
            while chunk := await loop.sock_recv(sock, 65536):
                received += chunk
    finally:
        sock.close()
    ids = [int(line[4:]) for line in received.decode(errors="replace").splitlines()
           if line.startswith("id: ")]  # fmt: skip
    assert ids and ids == list(range(1, len(ids) + 1))
    assert ids[-1] < total  # cut off before the end
    async with open_stream(served, headers={"Last-Event-ID": str(ids[-1])}) as reader:
        rest = await reader.events(total - ids[-1])
    assert sequences(rest) == list(range(ids[-1] + 1, total + 1))

"""``SequencerClient.tail`` and ``sequencer-cli tail``: a live stream followed across its
connections, with no event yielded twice and none skipped.

Three kinds of server: stand-ins on loopback that answer from a script (SSE over a real
socket, and a real grpc.aio server), for the drops, cut-offs and refusals the real one
gives only by chance; and a real ``serve`` process on SQLite and PostgreSQL, killed and
started again under a tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from stateset_sequencer.api.grpc import convert
from stateset_sequencer.api.http.events import ves_envelope
from stateset_sequencer.cli import app
from stateset_sequencer.client import (
    Agent,
    RetryPolicy,
    SequencerClient,
    SequencerError,
    SequencerUnavailable,
    StreamError,
    SyncSequencerClient,
    TailEvent,
    TailHeartbeat,
    TailItem,
    UnexpectedResponse,
)
from stateset_sequencer.client.grpcstream import grpc_target_for, wire_envelope
from stateset_sequencer.proto import sequencer_v2_pb2 as pb
from stateset_sequencer.proto import sequencer_v2_pb2_grpc as pb_grpc
from stateset_sequencer.store.records import StoredEvent
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.testing.serverproc import ServerProcess
from stateset_sequencer.ves import signing
from stateset_sequencer.ves.codec import parse_rfc3339
from stateset_sequencer.ves.envelope import VesEventEnvelope
from tests.client.scripted import Sleeps, dead_url

ADMIN_KEY = "ss_00000000" + "tailtestsadminkey000000000000000"
WAIT_S = 20.0  # a bound on a wait, never an expectation of speed


def policy(sleeps: Sleeps, attempts: int = 5) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, sleep=sleeps, jitter=lambda: 1.0)


async def take(items: AsyncIterator[TailItem], n: int, *, events: bool = False) -> list[TailItem]:
    """The next ``n`` items (events only, with ``events``)."""
    out: list[TailItem] = []
    async with asyncio.timeout(WAIT_S):
        while len(out) < n:
            item = await anext(items)
            if not events or isinstance(item, TailEvent):
                out.append(item)
    return out


def numbers(items: list[TailItem]) -> list[int]:
    return [i.sequence_number for i in items if isinstance(i, TailEvent)]


# --- an SSE stand-in ------------------------------------------------------------------


def sse_event(n: int) -> bytes:
    item = {"envelope": {"sequence_number": n, "sequenced_at": f"2026-01-01T00:00:{n:02d}+00:00"}}
    return f"id: {n}\nevent: event\ndata: {json.dumps(item)}\n\n".encode()


def sse_heartbeat(position: int) -> bytes:
    data = json.dumps({"position": position, "at": "2026-01-01T00:00:00+00:00"})
    return f"id: {position}\nevent: heartbeat\ndata: {data}\n\n".encode()


def sse_error(code: str, resume_from: int) -> bytes:
    data = json.dumps({"code": code, "message": "scripted", "resume_from": resume_from})
    return f"event: error\ndata: {data}\n\n".encode()


RETRY = b"retry: 2000\n\n"


@dataclass(frozen=True)
class Answer:
    """One connection's answer: a status, the chunks of the body, then the connection
    closed (or held open until the stand-in stops, with ``hold``)."""

    status: int = 200
    chunks: tuple[bytes, ...] = (RETRY,)
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False


def stream_of(*chunks: bytes, hold: bool = False) -> Answer:
    return Answer(chunks=(RETRY, *chunks), hold=hold)


def refusal(status: int, retry_after: str | None = None) -> Answer:
    body = json.dumps({"error": f"scripted {status}", "code": "SCRIPTED"}).encode()
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return Answer(status, (body,), "application/json", headers)


HOLD = Answer(hold=True)


@dataclass(frozen=True)
class Asked:
    query: dict[str, list[str]]
    last_event_id: str | None
    authorization: str | None

    @property
    def start(self) -> int:
        return int(self.query["from"][0])


class SseStandIn:
    def __init__(self, answers: list[Answer], then: Answer, head: int) -> None:
        self._answers = list(answers)
        self._then = then
        self.head = head
        self.asked: list[Asked] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.url = ""

    def next(self, asked: Asked) -> Answer:
        with self._lock:
            self.asked.append(asked)
            return self._answers.pop(0) if self._answers else self._then


@contextlib.contextmanager
def sse_stand_in(*answers: Answer, then: Answer = HOLD, head: int = 0) -> Iterator[SseStandIn]:
    script = SseStandIn(list(answers), then, head)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/api/v1/ves/head":
                body = json.dumps({"head_sequence": script.head}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            asked = Asked(
                parse_qs(parts.query),
                self.headers.get("last-event-id"),
                self.headers.get("authorization"),
            )
            answer = script.next(asked)
            self.close_connection = True
            try:
                self.send_response(answer.status)
                self.send_header("content-type", answer.content_type)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.status != 200:
                    self.send_header("content-length", str(sum(map(len, answer.chunks))))
                self.end_headers()
                for chunk in answer.chunks:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                if answer.hold:
                    script.stopping.wait(WAIT_S)
            except OSError:
                pass  # the client went first

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    script.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield script
    finally:
        script.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextlib.asynccontextmanager
async def tailing(
    urls: str | list[str], sleeps: Sleeps, attempts: int = 5, **options: Any
) -> AsyncIterator[AsyncGenerator[TailItem, None]]:
    async with SequencerClient(urls, "ss_key", retry=policy(sleeps, attempts)) as client:
        items = client.tail(kit.TENANT, kit.STORE_ID, **options)
        async with contextlib.aclosing(items):
            yield items


async def test_a_drop_resumes_after_the_last_event_and_a_replay_is_not_yielded_twice() -> None:
    sleeps = Sleeps()
    first = stream_of(sse_event(1), sse_event(2))
    second = stream_of(sse_event(2), sse_event(3), hold=True)  # 2 again: a replay
    with sse_stand_in(first, second) as server:
        async with tailing(server.url, sleeps, from_sequence=1, heartbeat_ms=0) as items:
            assert numbers(await take(items, 3)) == [1, 2, 3]
    assert [(a.start, a.last_event_id) for a in server.asked] == [(1, "0"), (3, "2")]
    assert server.asked[0].authorization == "ApiKey ss_key"
    assert server.asked[0].query["heartbeat_ms"] == ["0"]
    assert sleeps.asked == []  # it worked until it dropped: straight back


async def test_a_heartbeat_moves_the_resume_point_past_what_the_filters_skipped() -> None:
    sleeps = Sleeps()
    first = stream_of(sse_event(1), sse_heartbeat(7))
    with sse_stand_in(first, stream_of(sse_event(9), hold=True)) as server:
        async with tailing(
            server.url, sleeps, from_sequence=1, event_types=["a", "b"], agents=[kit.AGENT_ID]
        ) as items:
            got = await take(items, 3)
    assert numbers(got) == [1, 9] and got[1] == TailHeartbeat(7, "2026-01-01T00:00:00+00:00")
    assert [(a.start, a.last_event_id) for a in server.asked] == [(1, "0"), (8, "7")]
    assert server.asked[1].query["event_type"] == ["a", "b"]
    assert server.asked[1].query["agent_id"] == [str(kit.AGENT_ID)]


async def test_cut_off_for_reading_too_slowly_reopens_at_once_after_its_own_position() -> None:
    sleeps = Sleeps()
    # The server names a resume point; the client's own position is what it trusts.
    first = stream_of(sse_event(4), sse_event(5), sse_error("subscriber_too_slow", 5))
    with sse_stand_in(first, stream_of(sse_event(6), hold=True)) as server:
        async with tailing(server.url, sleeps, from_sequence=4) as items:
            assert numbers(await take(items, 3)) == [4, 5, 6]
    assert [a.start for a in server.asked] == [4, 6]
    assert sleeps.asked == []


async def test_a_dead_url_and_a_busy_node_are_tried_again_with_the_policys_waits() -> None:
    sleeps = Sleeps()
    down = dead_url()
    with sse_stand_in(refusal(503, retry_after="0.5"), stream_of(sse_event(1), hold=True)) as up:
        async with tailing([down, up.url], sleeps, from_sequence=1) as items:
            assert numbers(await take(items, 1)) == [1]
    # refused (down) → next URL: 503 with Retry-After → next URL: refused → next: the stream.
    assert sleeps.asked == [0.2, 0.5, 0.8]
    assert len(up.asked) == 2


@pytest.mark.parametrize("status", [401, 403, 400, 404])
async def test_a_refusal_is_raised_at_once(status: int) -> None:
    sleeps = Sleeps()
    with sse_stand_in(refusal(status)) as server:
        async with tailing(server.url, sleeps, from_sequence=1) as items:
            with pytest.raises(SequencerError) as refused:
                await anext(items)
    assert refused.value.status == status and refused.value.code == "SCRIPTED"
    assert len(server.asked) == 1 and sleeps.asked == []


async def test_a_stream_error_that_persists_is_raised_once_the_policy_is_spent() -> None:
    sleeps = Sleeps()
    with sse_stand_in(then=stream_of(sse_error("internal", 1))) as server:
        async with tailing(server.url, sleeps, attempts=3, from_sequence=1) as items:
            with pytest.raises(StreamError) as failed:
                await anext(items)
    assert failed.value.code == "internal" and failed.value.resume_from == 1
    assert len(failed.value.attempts) == 3 and len(server.asked) == 3
    assert sleeps.asked == [0.2, 0.4]


async def test_connections_that_end_with_nothing_back_off_and_are_never_raised() -> None:
    sleeps = Sleeps()
    quiet = stream_of()
    with sse_stand_in(quiet, quiet, quiet, stream_of(sse_event(1), hold=True)) as server:
        # One attempt only: a quiet end is not a failed attempt.
        async with tailing(server.url, sleeps, attempts=1, from_sequence=1) as items:
            assert numbers(await take(items, 1)) == [1]
    assert sleeps.asked == [0.2, 0.4, 0.8]
    assert [a.start for a in server.asked] == [1, 1, 1, 1]


async def test_unreachable_everywhere_is_unavailable_naming_every_attempt() -> None:
    sleeps = Sleeps()
    a, b = dead_url(), dead_url()
    async with tailing([a, b], sleeps, attempts=3, from_sequence=1) as items:
        with pytest.raises(SequencerUnavailable) as unavailable:
            await anext(items)
    assert [t.url for t in unavailable.value.attempts] == [a, b, a]
    assert "GET /api/v1/ves/events/stream" in str(unavailable.value)


async def test_an_answer_that_is_not_an_event_stream_is_unexpected() -> None:
    sleeps = Sleeps()
    with sse_stand_in(Answer(chunks=(b"{}",), content_type="application/json")) as server:
        async with tailing(server.url, sleeps, from_sequence=1) as items:
            with pytest.raises(UnexpectedResponse, match="not an event stream"):
                await anext(items)
    with sse_stand_in(stream_of(b"event: event\ndata: [1]\n\n")) as server:
        async with tailing(server.url, sleeps, from_sequence=1) as items:
            with pytest.raises(UnexpectedResponse, match="expected a JSON object"):
                await anext(items)


async def test_without_from_the_tail_starts_just_after_the_head() -> None:
    sleeps = Sleeps()
    with sse_stand_in(stream_of(sse_event(42), hold=True), head=41) as server:
        async with tailing(server.url, sleeps) as items:
            assert numbers(await take(items, 1)) == [42]
    assert [(a.start, a.last_event_id) for a in server.asked] == [(42, "41")]


async def test_arguments_are_checked() -> None:
    async with SequencerClient("http://127.0.0.1:9") as client:
        for options in (
            {"from_sequence": 0},
            {"heartbeat_ms": -1},
            {"transport": "carrier-pigeon"},
            {"grpc_target": "127.0.0.1:1"},
        ):
            with pytest.raises(ValueError):  # noqa: PT011 - each names its own fault
                await anext(client.tail(kit.TENANT, kit.STORE_ID, **options))


def test_the_blocking_tail_is_a_generator_that_closes_its_connection() -> None:
    answer = stream_of(sse_event(1), sse_event(2), hold=True)
    with (
        sse_stand_in(answer, head=2) as server,
        SyncSequencerClient(server.url, "ss_key") as client,
    ):
        items = client.tail(kit.TENANT, kit.STORE_ID, from_sequence=1)
        got = [next(items), next(items)]
        items.close()
        assert numbers(got) == [1, 2]
        assert client.head(kit.TENANT, kit.STORE_ID) == 2  # the client works on
    assert len(server.asked) == 1


# --- a gRPC stand-in ------------------------------------------------------------------


def stamp(text: str) -> Timestamp:
    """An RFC 3339 text as a Timestamp, its nanoseconds kept."""
    whole, _, rest = text.partition(".")
    moment = Timestamp()
    moment.FromDatetime(parse_rfc3339(whole + "+00:00" if rest else text))
    moment.nanos = int((rest.split("+")[0] + "000000000")[:9]) if rest else 0
    return moment


def proto_event(env: VesEventEnvelope, sequence: int, at: str) -> pb.SequencedEvent:
    """What a gRPC server sends for a stored event (the inverse of wire_envelope)."""
    created, sequenced = stamp(env.created_at), stamp(at)
    return pb.SequencedEvent(
        envelope=pb.EventEnvelope(
            event_id=str(env.event_id),
            command_id=str(env.command_id) if env.command_id else "",
            tenant_id=str(env.tenant_id),
            store_id=str(env.store_id),
            entity_type=env.entity_type,
            entity_id=env.entity_id,
            event_type=env.event_type,
            source_agent=str(env.source_agent_id),
            ves_version=env.ves_version,
            payload_kind=pb.PAYLOAD_KIND_PLAINTEXT,
            payload=json.dumps(env.payload).encode(),
            payload_plain_hash=env.payload_plain_hash,
            payload_cipher_hash=env.payload_cipher_hash,
            agent_key_id=env.agent_key_id,
            agent_signature=env.agent_signature,
            base_version=env.base_version or 0,
            created_at=created,
        ),
        sequence_number=sequence,
        sequenced_at=sequenced,
    )


def grpc_event(n: int) -> pb.SequencedEvent:
    env = kit.event(n, created_at=f"2025-06-01T00:00:{n:02d}+00:00")
    return proto_event(env, n, f"2026-01-01T00:00:{n:02d}+00:00")


def grpc_heartbeat(position: int) -> pb.SequencedEvent:
    at = Timestamp()
    at.FromDatetime(parse_rfc3339("2026-01-01T00:00:00+00:00"))
    return pb.SequencedEvent(sequence_number=position, sequenced_at=at)


@dataclass(frozen=True)
class Call:
    """One StreamEvents call's answer: messages, then a status (none: held open)."""

    messages: tuple[pb.SequencedEvent, ...] = ()
    code: grpc.StatusCode | None = None
    details: str = "scripted"
    trailers: tuple[tuple[str, str], ...] = ()


HELD = Call()


class FakeSequencer(pb_grpc.SequencerServicer):
    def __init__(self, calls: list[Call], then: Call) -> None:
        self._calls = calls
        self._then = then
        self.requests: list[pb.StreamEventsRequest] = []
        self.metadata: list[dict[str, str | bytes]] = []

    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.SequencedEvent]:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata() or ()))
        call = self._calls.pop(0) if self._calls else self._then
        for message in call.messages:
            yield message
        if call.code is None:
            await asyncio.sleep(WAIT_S)
            return
        if call.trailers:
            context.set_trailing_metadata(call.trailers)
        await context.abort(call.code, call.details)


@contextlib.asynccontextmanager
async def grpc_stand_in(
    *calls: Call, then: Call = HELD
) -> AsyncIterator[tuple[str, FakeSequencer]]:
    server = grpc.aio.server()
    fake = FakeSequencer(list(calls), then)  # type: ignore[abstract]  # one RPC is enough
    pb_grpc.add_SequencerServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", fake
    finally:
        await server.stop(grace=None)


@contextlib.asynccontextmanager
async def grpc_tailing(
    target: str, sleeps: Sleeps, attempts: int = 5, **options: Any
) -> AsyncIterator[AsyncGenerator[TailItem, None]]:
    async with SequencerClient(dead_url(), "ss_key", retry=policy(sleeps, attempts)) as client:
        items = client.tail(
            kit.TENANT, kit.STORE_ID, transport="grpc", grpc_target=target, **options
        )
        async with contextlib.aclosing(items):
            yield items


async def test_grpc_history_heartbeats_and_a_drop_resumed_without_a_repeat() -> None:
    sleeps = Sleeps()
    first = Call((grpc_event(1), grpc_event(2), grpc_heartbeat(5)), grpc.StatusCode.UNAVAILABLE)
    second = Call((grpc_event(5), grpc_event(6)))  # 5: at the position already, dropped
    async with (
        grpc_stand_in(first, second) as (target, fake),
        grpc_tailing(target, sleeps, from_sequence=1, heartbeat_ms=250) as items,
    ):
        got = await take(items, 4)
    assert numbers(got) == [1, 2, 6] and got[2] == TailHeartbeat(5, "2026-01-01T00:00:00+00:00")
    assert [(r.from_sequence, r.include_history) for r in fake.requests] == [(1, True), (6, True)]
    first_request = fake.requests[0]
    assert first_request.heartbeat_interval_ms == 250
    assert (first_request.tenant_id, first_request.store_id) == (str(kit.TENANT), str(kit.STORE_ID))
    assert fake.metadata[0]["authorization"] == "ApiKey ss_key"
    assert sleeps.asked == []
    event = got[0]
    assert isinstance(event, TailEvent) and event.sequenced_at == "2026-01-01T00:00:01+00:00"


async def test_grpc_cut_off_reopens_at_once_and_resource_exhausted_alone_is_retried() -> None:
    sleeps = Sleeps()
    slow = Call(
        (grpc_event(1),),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        trailers=(("x-resume-from-sequence", "2"),),
    )
    # No resume trailer: a limit, tried again after the wait it names.
    quota = Call((), grpc.StatusCode.RESOURCE_EXHAUSTED, trailers=(("retry-after", "0.7"),))
    async with (
        grpc_stand_in(slow, quota, Call((grpc_event(2),))) as (target, fake),
        grpc_tailing(target, sleeps, from_sequence=1) as items,
    ):
        assert numbers(await take(items, 2)) == [1, 2]
    assert [r.from_sequence for r in fake.requests] == [1, 2, 2]
    assert sleeps.asked == [0.7]


@pytest.mark.parametrize(
    ("code", "status"),
    [(grpc.StatusCode.UNAUTHENTICATED, 401), (grpc.StatusCode.PERMISSION_DENIED, 403)],
)
async def test_grpc_auth_refusals_are_raised_at_once(code: grpc.StatusCode, status: int) -> None:
    sleeps = Sleeps()
    async with (
        grpc_stand_in(Call((), code, "no such key")) as (target, fake),
        grpc_tailing(target, sleeps, from_sequence=1) as items,
    ):
        with pytest.raises(SequencerError) as refused:
            await anext(items)
    assert (refused.value.status, refused.value.code) == (status, code.name)
    assert refused.value.message == "no such key"
    assert len(fake.requests) == 1 and sleeps.asked == []


async def test_grpc_unreachable_is_unavailable_after_the_policy() -> None:
    sleeps = Sleeps()
    target = f"127.0.0.1:{free_port()}"
    async with grpc_tailing(target, sleeps, attempts=2, from_sequence=1) as items:
        with pytest.raises(SequencerUnavailable) as unavailable:
            await anext(items)
    assert [a.url for a in unavailable.value.attempts] == [target, target]
    assert "UNAVAILABLE" in str(unavailable.value)


@pytest.mark.parametrize(
    "created_at",
    [
        "2025-06-01T00:00:03+00:00",
        "2025-06-01T00:00:03.250+00:00",
        "2025-06-01T00:00:03.123456789+00:00",
    ],
)
def test_a_grpc_event_reads_as_the_http_envelope_and_still_verifies(created_at: str) -> None:
    env = kit.event(3, created_at=created_at, base_version=2, command_id=uuid.uuid4())
    message = proto_event(env, 9, "2026-01-01T00:00:09.5+00:00")
    wire = wire_envelope(message)
    assert wire == {
        **env.to_wire(),
        "sequence_number": 9,
        "sequenced_at": "2026-01-01T00:00:09.500+00:00",
    }
    parsed = TailEvent(9, wire["sequenced_at"], wire).parsed()
    signing.verify(kit.AGENT.public_key, parsed.signing_hash(), parsed.agent_signature)
    message.envelope.agent_signature_scheme = pb.SIGNATURE_SCHEME_ED25519_ML_DSA_65
    message.envelope.agent_signature_bundle.ed25519_signature = b"\x01\x02"
    assert wire_envelope(message)["agent_signature_scheme"] == 3
    assert wire_envelope(message)["agent_signature_bundle"] == {
        "ed25519_signature": [1, 2],
        "ml_dsa_65_signature": None,
    }


def test_the_server_and_the_client_read_a_stored_event_alike() -> None:
    """The server's converter (api/grpc/convert.py) against the client's reading of its
    message: the HTTP item, field for field."""
    at = parse_rfc3339("2026-01-01T00:00:12.345678+00:00")
    env = kit.event(5, created_at="2025-06-01T00:00:05.500+00:00", command_id=uuid.uuid4())
    stored = StoredEvent(env, 12, at, env.signing_hash())
    assert wire_envelope(convert.sequenced_event(stored)) == ves_envelope(stored)
    # Another form of the same instant comes back in the one form gRPC has (PROTOCOL §10).
    other = kit.event(5, created_at="2025-06-01T00:00:05.5Z")
    rebuilt = wire_envelope(
        convert.sequenced_event(StoredEvent(other, 12, at, other.signing_hash()))
    )
    assert rebuilt["created_at"] == "2025-06-01T00:00:05.500+00:00"


def test_the_grpc_address_beside_a_base_url() -> None:
    assert grpc_target_for("http://127.0.0.1:8080") == "127.0.0.1:8081"
    assert grpc_target_for("https://sequencer.example/prefix") == "sequencer.example:444"
    assert grpc_target_for("http://[::1]:9000") == "[::1]:9001"


# --- a real server, on SQLite and on PostgreSQL ---------------------------------------


def server_env(database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "SEQUENCER_ENV": "test",
        "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
        "GRPC_PORT": str(free_port()),
        "COMMIT_WORKER_ENABLED": "false",
    }


@dataclass
class Stream:
    """A fresh stream on a real server, and an agent that writes to it."""

    url: str
    agent: Agent

    @property
    def ids(self) -> tuple[uuid.UUID, uuid.UUID]:
        return self.agent.tenant_id, self.agent.store_id

    @classmethod
    def on(cls, url: str) -> Stream:
        signer = signing.Signer(os.urandom(32))
        agent = Agent(signer, uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
        with SyncSequencerClient(url, ADMIN_KEY) as client:
            client.register_agent_key(agent.tenant_id, agent.agent_id, 1, signer.public_key)
        return cls(url, agent)

    def add(self, count: int, event_type: str = "order.created") -> list[int]:
        events = [
            self.agent.event("order", f"o-{uuid.uuid4().hex[:8]}", event_type, {"n": n})
            for n in range(count)
        ]
        with SyncSequencerClient(self.url, ADMIN_KEY) as client:
            outcome = client.ingest(self.agent.agent_id, events)
        assert outcome.events_accepted == count
        return [r.sequence_number for r in outcome.receipts]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("tail")
    child = ServerProcess(tmp, server_env(f"sqlite:///{tmp / 'tail.db'}"))
    child.start()
    try:
        yield child
    finally:
        child.stop()


@pytest.fixture
def live_url(live_server: ServerProcess) -> str:
    return live_server.url


@pytest.fixture(params=["sqlite", "postgres"])
async def restartable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ServerProcess]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'tail.db'}"
        else:
            url = await stack.enter_async_context(pg.scratch_database("seqtail"))
        child = ServerProcess(tmp_path, server_env(url))
        await asyncio.to_thread(child.start)
        try:
            yield child
        finally:
            await asyncio.to_thread(child.stop)


PATIENT = RetryPolicy(attempts=1000, base_delay=0.05, max_delay=0.25, deadline=60)


async def _follow_through_a_restart(server: ServerProcess, **options: Any) -> None:
    stream = await asyncio.to_thread(Stream.on, server.url)
    assert await asyncio.to_thread(stream.add, 3) == [1, 2, 3]
    queue: asyncio.Queue[TailItem] = asyncio.Queue()

    async def follow() -> None:
        async with SequencerClient(server.url, ADMIN_KEY, retry=PATIENT) as client:
            items = client.tail(*stream.ids, from_sequence=1, heartbeat_ms=200, **options)
            async with contextlib.aclosing(items):
                async for item in items:
                    await queue.put(item)

    async def events(n: int) -> list[int]:
        got: list[int] = []
        async with asyncio.timeout(WAIT_S):
            while len(got) < n:
                item = await queue.get()
                if isinstance(item, TailEvent):
                    got.append(item.sequence_number)
        return got

    task = asyncio.create_task(follow())
    try:
        assert await events(3) == [1, 2, 3]  # history
        await asyncio.to_thread(stream.add, 2)
        assert await events(2) == [4, 5]  # live
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(stream.add, 3)
        assert await events(3) == [6, 7, 8]  # after the restart: no gap, no repeat
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    rest = [queue.get_nowait() for _ in range(queue.qsize())]
    assert numbers(rest) == []  # nothing after 8: no event came twice


async def test_history_then_live_then_a_killed_server_restarted(restartable: ServerProcess) -> None:
    await _follow_through_a_restart(restartable)


async def test_over_grpc_history_then_live_then_a_killed_server_restarted(
    restartable: ServerProcess,
) -> None:
    target = f"127.0.0.1:{restartable.env['GRPC_PORT']}"
    await _follow_through_a_restart(restartable, transport="grpc", grpc_target=target)


async def test_filters_narrow_the_events_and_heartbeats_carry_the_position(live_url: str) -> None:
    stream = await asyncio.to_thread(Stream.on, live_url)
    await asyncio.to_thread(stream.add, 2, "order.created")
    await asyncio.to_thread(stream.add, 1, "order.paid")
    await asyncio.to_thread(stream.add, 2, "order.created")
    async with SequencerClient(live_url, ADMIN_KEY) as client:
        items = client.tail(
            *stream.ids, from_sequence=1, heartbeat_ms=100, event_types=["order.paid"]
        )
        async with contextlib.aclosing(items):
            got = await take(items, 2)
    assert isinstance(got[0], TailEvent) and got[0].sequence_number == 3
    assert got[0].envelope["event_type"] == "order.paid"
    assert got[0].parsed().source_agent_id == stream.agent.agent_id
    beat = got[1]
    assert isinstance(beat, TailHeartbeat) and beat.position == 5  # past two filtered out


async def test_without_from_only_what_comes_after_the_head(live_url: str) -> None:
    stream = await asyncio.to_thread(Stream.on, live_url)
    await asyncio.to_thread(stream.add, 2)
    async with SequencerClient(live_url, ADMIN_KEY) as client:
        items = client.tail(*stream.ids, heartbeat_ms=100)
        async with contextlib.aclosing(items):
            (first,) = await take(items, 1)
            assert isinstance(first, TailHeartbeat) and first.position == 2  # no history
            await asyncio.to_thread(stream.add, 1)
            assert numbers(await take(items, 1, events=True)) == [3]


async def test_unauthorized_and_forbidden_are_raised_not_retried(live_url: str) -> None:
    stream = await asyncio.to_thread(Stream.on, live_url)
    sleeps = Sleeps()
    async with SequencerClient(live_url, "ss_00000000" + "0" * 32, retry=policy(sleeps)) as client:
        with pytest.raises(SequencerError) as unauthorized:
            await anext(client.tail(*stream.ids, from_sequence=1))
    assert unauthorized.value.status == 401
    async with SequencerClient(live_url, ADMIN_KEY) as admin:
        other = await admin.create_api_key(uuid.uuid4())
    async with SequencerClient(live_url, other, retry=policy(sleeps)) as client:
        with pytest.raises(SequencerError) as forbidden:
            await anext(client.tail(*stream.ids, from_sequence=1))
    assert forbidden.value.status == 403
    assert sleeps.asked == []


def test_the_blocking_client_follows_the_real_stream(live_url: str) -> None:
    stream = Stream.on(live_url)
    stream.add(3)
    with SyncSequencerClient(live_url, ADMIN_KEY) as client:
        items = client.tail(*stream.ids, from_sequence=2)
        got = [next(items), next(items)]
        items.close()
        assert numbers(got) == [2, 3]
        assert client.head(*stream.ids) == 3  # the client works on after the tail closed


# --- sequencer-cli tail -----------------------------------------------------------------


def cli(*args: str) -> Any:
    env: dict[str, str | None] = {"SEQUENCER_URL": None, "SEQUENCER_API_KEY": None}
    return CliRunner().invoke(app, ["tail", *args], env=env)


def test_cli_prints_one_json_line_per_event_and_stops_at_count(
    live_server: ServerProcess,
) -> None:
    live_url = live_server.url
    stream = Stream.on(live_url)
    stream.add(3)
    tenant, store = (str(i) for i in stream.ids)
    base = ["--url", live_url, "--api-key", ADMIN_KEY, "--tenant", tenant, "--store", store]
    done = cli(*base, "--from", "2", "--count", "2")
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["envelope"]["sequence_number"] for line in lines] == [2, 3]
    with SyncSequencerClient(live_url, ADMIN_KEY) as client:
        assert [{"envelope": e} for e in client.events(*stream.ids, 2, 2)] == lines

    beats = cli(*base, "--from", "4", "--heartbeats", "--heartbeat-ms", "50", "--timeout", "1")
    assert beats.exit_code == 0, beats.output
    assert {json.loads(line)["heartbeat"]["position"] for line in beats.stdout.splitlines()} == {3}

    target = f"127.0.0.1:{live_server.env['GRPC_PORT']}"
    over_grpc = cli(*base, "--from", "2", "--count", "2", "--grpc", "--grpc-target", target)
    assert over_grpc.exit_code == 0, over_grpc.output
    got = [json.loads(line)["envelope"] for line in over_grpc.stdout.splitlines()]
    assert [e["event_id"] for e in got] == [line["envelope"]["event_id"] for line in lines]

    short = cli(*base, "--from", "1", "--count", "5", "--timeout", "1")
    assert short.exit_code == 1 and "timed out after" in short.stderr
    assert "3 of 5 events" in short.stderr and len(short.stdout.splitlines()) == 3


def test_cli_errors_are_one_line(live_url: str) -> None:
    ids = ["--tenant", str(kit.TENANT), "--store", str(kit.STORE_ID)]
    nowhere = f"127.0.0.1:{free_port()}"
    cases = [
        (["--url", live_url, "--api-key", "ss_00000000" + "0" * 32, *ids], 1, "401"),
        (["--url", dead_url(), *ids, "--from", "1"], 1, "cannot reach"),
        (["--url", live_url, *ids, "--from", "1", "--grpc", "--grpc-target", nowhere], 1, "gRPC"),
        (["--url", live_url, *ids, "--grpc-target", "127.0.0.1:1"], 2, "--grpc"),
        (["--url", live_url, *ids, "--from", "0"], 2, "--from"),
        (["--url", "ftp://nowhere", *ids], 2, "--url"),
    ]
    for args, code, needle in cases:
        done = cli(*args)
        assert done.exit_code == code, (args, done.output)
        assert needle in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        if code == 1:  # ours; a usage error is typer's box, as for every command
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr

"""gRPC beside HTTP, and live delivery across processes (``make bench-streams``).

Two ``stateset-sequencer serve`` processes, A and B, on one scratch PostgreSQL database,
every body and message signed and encoded before any clock starts:

1. **Push throughput**, on A, in the same run: HTTP ingest and gRPC ``Push``, single
   events with ``--concurrency`` in flight over ``--streams`` streams, and 100-event
   batches with ``--batch-concurrency`` in flight; the ratio gRPC ÷ HTTP.
2. **Delivery latency**: single events ingested over HTTP on A at a fixed ``--rate`` for
   ``--duration`` seconds, while three subscribers follow the stream live: gRPC
   ``StreamEvents`` on B, SSE on B (the other process: the notice went through
   PostgreSQL) and SSE on A (the process that sequenced it). Each delivery's latency runs
   from the event's ``sequenced_at`` (the sequencer's clock inside the append, before
   the commit; both processes share this machine's clock) to its arrival, so it holds the
   commit, the notice, the store read and the transport.

The client shares the machine's cores with both servers; ratios carry over, absolute
figures are a lower bound. Nothing asserts on time. Servers are stopped and the database
dropped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

import aiohttp
import grpc

from bench_http import (
    HOST,
    REQUEST_TIMEOUT_S,
    Result,
    Send,
    bodies,
    closed_loop,
    ingest_sender,
    open_loop,
    register_agent_key,
    start_server,
    stop_server,
    streams,
    wait_healthy,
)
from hostile_http import Sampler
from stateset_sequencer.api.grpc.convert import envelope_to_proto
from stateset_sequencer.proto import sequencer_v2_pb2 as pb
from stateset_sequencer.proto import sequencer_v2_pb2_grpc as rpc
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.ports import free_port

STREAM_PATH = "/api/v1/ves/events/stream"


def push_messages(first: int, requests: int, batch: int, keys: list[StreamKey]) -> list[bytes]:
    """Serialized ``PushRequest``s: the gRPC twins of ``bench_http.bodies``."""
    out: list[bytes] = []
    for r in range(requests):
        stream = keys[r % len(keys)]
        # Signed over created_at as the server rebuilds it from the Timestamp (RFC 3339
        # with "+00:00", docs/GRPC.md), or every signature would fail.
        events = [
            kit.event(n, stream=stream, created_at=f"2025-06-01T00:00:{n % 60:02d}+00:00")
            for n in range(first + r * batch, first + (r + 1) * batch)
        ]
        request = pb.PushRequest(
            agent_id=str(kit.AGENT_ID),
            tenant_id=str(stream.tenant_id),
            store_id=str(stream.store_id),
            events=[envelope_to_proto(e) for e in events],
        )
        out.append(request.SerializeToString())
    return out


def push_sender(channel: grpc.aio.Channel, messages: list[bytes], batch: int, key: str) -> Send:
    # Pre-serialized requests: the client's encoding stays out of the measured loop, as
    # the HTTP case sends pre-encoded bodies.
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, pb.PushResponse] = channel.unary_unary(
        "/stateset.sequencer.v2.Sequencer/Push",
        request_serializer=None,
        response_deserializer=pb.PushResponse.FromString,
    )
    metadata = (("authorization", f"ApiKey {key}"),)

    async def send(i: int) -> tuple[int, str]:
        try:
            response = await call(messages[i], metadata=metadata, timeout=REQUEST_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return 0, f"{exc.code().name}: {exc.details()}"
        accepted = int(response.events_accepted)
        return accepted, "" if accepted == batch else f"accepted {accepted} of {batch}"

    return send


@dataclass
class Follower:
    name: str
    latencies: list[float] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def arrived(self, sequence: int, sequenced_at: str) -> None:
        at = datetime.fromisoformat(sequenced_at.replace("Z", "+00:00")).timestamp()
        self.latencies.append(time.time() - at)
        self.sequences.append(sequence)

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def follow_sse(follower: Follower, base: str, key: str, stream: StreamKey) -> None:
    params = {"tenant_id": str(stream.tenant_id), "store_id": str(stream.store_id)}
    params["heartbeat_ms"] = "0"
    headers = {"Authorization": f"ApiKey {key}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with (
        aiohttp.ClientSession(base_url=base, timeout=timeout) as session,
        session.get(STREAM_PATH, params=params, headers=headers) as response,
    ):
        if response.status != 200:
            raise SystemExit(f"SSE {base}: {response.status} {await response.text()}")
        follower.ready.set()
        kind = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "event":
                envelope = json.loads(line[6:])["envelope"]
                follower.arrived(envelope["sequence_number"], envelope["sequenced_at"])


async def follow_grpc(follower: Follower, target: str, key: str, stream: StreamKey) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rpc.SequencerStub(channel)
        call = stub.StreamEvents(
            pb.StreamEventsRequest(tenant_id=str(stream.tenant_id), store_id=str(stream.store_id)),
            metadata=(("authorization", f"ApiKey {key}"),),
        )
        await call.wait_for_connection()
        follower.ready.set()
        async for event in call:
            if event.HasField("envelope"):
                at = event.sequenced_at.ToDatetime().timestamp()
                follower.latencies.append(time.time() - at)
                follower.sequences.append(event.sequence_number)


@contextlib.asynccontextmanager
async def running(*coroutines: object) -> AsyncIterator[None]:
    tasks = [asyncio.ensure_future(c) for c in coroutines]  # type: ignore[call-overload]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@dataclass
class Server:
    process: object
    port: int
    grpc_port: int
    data_dir: Path


async def run(args: argparse.Namespace, key: str, a: Server, b: Server) -> None:
    keys = streams(args.streams)
    single = bodies(0, args.events, 1, keys)
    batched = bodies(10_000_000, max(1, args.batch_events // 100), 100, keys)
    g_single = push_messages(20_000_000, args.events, 1, keys)
    g_batched = push_messages(30_000_000, max(1, args.batch_events // 100), 100, keys)
    paced_stream = StreamKey(kit.TENANT, uuid.UUID(int=0xC0FFEE))
    paced_requests = max(1, int(args.rate * args.duration))
    paced = bodies(40_000_000, paced_requests, 1, [paced_stream])
    warm = bodies(50_000_000, args.concurrency * 4, 1, keys)
    g_warm = push_messages(60_000_000, args.concurrency * 4, 1, keys)

    headers = {"Authorization": f"ApiKey {key}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=max(args.concurrency, args.batch_concurrency))
    async with (
        aiohttp.ClientSession(
            base_url=f"http://{HOST}:{a.port}",
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        ) as session,
        grpc.aio.insecure_channel(f"{HOST}:{a.grpc_port}") as channel,
    ):
        await wait_healthy(session, a.process, a.data_dir)  # type: ignore[arg-type]
        await register_agent_key(session)
        c, bc = args.concurrency, args.batch_concurrency
        warm_ups = [
            await closed_loop("warm-up", ingest_sender(session, warm, 1), len(warm), c),
            await closed_loop("warm-up", push_sender(channel, g_warm, 1, key), len(g_warm), c),
        ]
        pid = a.process.pid  # type: ignore[attr-defined]
        with Sampler(pid) as rss_a:
            results = [
                await closed_loop(
                    "HTTP batch=1", ingest_sender(session, single, 1), len(single), c
                ),
                await closed_loop(
                    "gRPC batch=1", push_sender(channel, g_single, 1, key), len(g_single), c
                ),
                await closed_loop(
                    "HTTP batch=100", ingest_sender(session, batched, 100), len(batched), bc
                ),
                await closed_loop(
                    "gRPC batch=100",
                    push_sender(channel, g_batched, 100, key),
                    len(g_batched),
                    bc,
                ),
            ]
        for result in warm_ups + results:
            if result.errors:
                raise SystemExit(f"{result.name}: {len(result.errors)} failed: {result.errors[0]}")

        async with aiohttp.ClientSession(base_url=f"http://{HOST}:{b.port}") as on_b:
            await wait_healthy(on_b, b.process, b.data_dir)  # type: ignore[arg-type]
        followers = [
            Follower("gRPC StreamEvents on B"),
            Follower("SSE on B"),
            Follower("SSE on A (same process)"),
        ]
        async with running(
            follow_grpc(followers[0], f"{HOST}:{b.grpc_port}", key, paced_stream),
            follow_sse(followers[1], f"http://{HOST}:{b.port}", key, paced_stream),
            follow_sse(followers[2], f"http://{HOST}:{a.port}", key, paced_stream),
        ):
            for follower in followers:
                await asyncio.wait_for(follower.ready.wait(), 30)
            await asyncio.sleep(0.5)  # every subscription in place before the first event
            sent = await open_loop(
                f"HTTP at {args.rate:g}/s",
                ingest_sender(session, paced, 1),
                paced_requests,
                args.rate,
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                len(f.sequences) < paced_requests for f in followers
            ):
                await asyncio.sleep(0.05)
        if sent.errors:
            raise SystemExit(f"paced ingest: {len(sent.errors)} failed: {sent.errors[0]}")
    report(args, results, sent, followers, rss_a.peak, paced_requests)


def report(
    args: argparse.Namespace,
    results: list[Result],
    sent: Result,
    followers: list[Follower],
    rss_peak: float,
    expected: int,
) -> None:
    http1, grpc1, http100, grpc100 = results
    print()
    print(
        f"push throughput on A; in flight: {args.concurrency} "
        f"(batch=100: {args.batch_concurrency}); {args.streams} streams"
    )
    print(f"{'case':<16}{'requests':>9}{'events/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for r in results:
        print(
            f"{r.name:<16}{r.requests:>9}{r.eps:>11,.0f}{r.pct(0.5):>9.2f}{r.pct(0.95):>9.2f}"
            f"{r.pct(0.99):>9.2f}"
        )
    print(
        f"gRPC ÷ HTTP, batch=1: {grpc1.eps / http1.eps:.2f}; "
        f"batch=100: {grpc100.eps / http100.eps:.2f}"
    )
    print(f"server A RSS peak during the push cases: {rss_peak:.0f} MB")
    print()
    print(
        f"delivery latency, sequenced_at → arrival; {sent.requests} events over HTTP on A at "
        f"{sent.rps:,.1f}/s (ingest p50 {sent.pct(0.5):.2f} ms, p99 {sent.pct(0.99):.2f} ms)"
    )
    print(f"{'subscriber':<26}{'events':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for f in followers:
        complete = f.sequences == sorted(set(f.sequences)) and len(f.sequences) == expected
        print(
            f"{f.name:<26}{len(f.sequences):>8}{f.pct(0.5):>9.2f}{f.pct(0.95):>9.2f}"
            f"{f.pct(0.99):>9.2f}{f.pct(1.0):>9.2f}"
            + ("" if complete else "   INCOMPLETE OR OUT OF ORDER")
        )
    print()
    print("Latency includes the commit (sequenced_at is stamped inside the append);")
    print("on B the notice crossed PostgreSQL (NOTIFY sequencer_heads), then B read the store.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--events", type=int, default=3000, help="single-event pushes per transport"
    )
    parser.add_argument("--batch-events", type=int, default=20000, help="events in batch=100 cases")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-concurrency", type=int, default=8)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s in the latency case")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the latency case")
    args = parser.parse_args()
    if min(args.events, args.batch_events, args.concurrency, args.streams) < 1 or args.rate <= 0:
        parser.error("counts and rate must be positive")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    key = "ss_" + secrets.token_urlsafe(32)
    seed = secrets.token_bytes(32).hex()
    name, dsn = pg.create_database("seqbenchstreams")
    started: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        try:
            for label in ("a", "b"):
                data_dir = Path(tmp) / label
                data_dir.mkdir()
                port, grpc_port = free_port(), free_port()
                process = start_server(
                    dsn,
                    key,
                    data_dir,
                    port,
                    {"GRPC_PORT": str(grpc_port), "VES_SEQUENCER_SIGNING_KEY": seed},
                    workers=1,  # A and B are one process each: "same process" means it
                )
                started.append(Server(process, port, grpc_port, data_dir))
            print(
                f"bench-streams: A on {started[0].port} (gRPC {started[0].grpc_port}), "
                f"B on {started[1].port} (gRPC {started[1].grpc_port}), database {name}"
            )
            asyncio.run(run(args, key, started[0], started[1]))
        finally:
            for server in started:
                stop_server(server.process)  # type: ignore[arg-type]
            pg.drop_database(name)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)

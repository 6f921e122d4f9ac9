"""Ingest over real HTTP against a real server process (``make bench-http``).

Starts ``python -m stateset_sequencer serve`` on loopback over a scratch PostgreSQL
database, registers the agent key through the API, signs and encodes every request body
before any clock starts, then drives the server with aiohttp:

1. closed loop, as fast as it answers: single-event batches with ``--concurrency``
   requests in flight, and 100-event batches with ``--batch-concurrency`` in flight;
2. open loop at a fixed ``--rate`` of single-event requests for ``--duration`` seconds:
   each request is sent at its scheduled time whether or not earlier ones have answered,
   and its latency is counted from that time (so a stall is not hidden by the client
   waiting for it: no coordinated omission);
3. the floor, measured against the same server in the same run: ``GET /health``, a route
   with no auth, no body and no database, closed loop at ``--concurrency`` and open loop
   at ``--rate``. It is the price of uvicorn, the middleware and the client alone.

The client shares the machine (and its cores) with the server, so absolute figures are a
lower bound; the ratios to the floor are what carries over. Nothing asserts on time. The
server is stopped and the scratch database dropped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import aiohttp

from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, pg

HOST = "127.0.0.1"
INGEST = "/api/v1/ves/events/ingest"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0


@dataclass
class Result:
    """One case: what was sent, what came back, and each request's latency."""

    name: str
    requests: int = 0
    events: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    @property
    def eps(self) -> float:
        return self.events / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


# --- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    dsn: str, admin_key: str, data_dir: Path, port: int, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "DATA_DIR": str(data_dir),
        "BOOTSTRAP_ADMIN_API_KEY": admin_key,
        "VES_SEQUENCER_SIGNING_KEY": secrets.token_bytes(32).hex(),
        "LOG_LEVEL": "warning",
        "SEQUENCER_ENV": "bench",
    }
    # Settings read from the environment: a variable inherited from the shell (a rate
    # limit, a read replica) would change what is measured.
    for name in ("READ_DATABASE_URL", "RATE_LIMIT_PER_MINUTE", "ADMIN_IP_ALLOWLIST", "HOST"):
        env.pop(name, None)
    env.update(extra or {})
    command = [sys.executable, "-m", "stateset_sequencer", "serve", "--host", HOST]
    log = (data_dir / "server.log").open("wb")
    try:
        return subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()  # the child holds its own descriptor


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def server_log(data_dir: Path) -> str:
    try:
        return (data_dir / "server.log").read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


async def wait_healthy(
    session: aiohttp.ClientSession, process: subprocess.Popen[bytes], data_dir: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}:\n{server_log(data_dir)}")
        try:
            async with session.get("/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"server not healthy after {START_TIMEOUT_S:g} s:\n{server_log(data_dir)}")


# --- the load -----------------------------------------------------------------------------


def streams(count: int) -> list[StreamKey]:
    return [StreamKey(kit.TENANT, uuid.UUID(int=0xB000 + s)) for s in range(count)]


def bodies(first: int, requests: int, batch: int, keys: list[StreamKey]) -> list[bytes]:
    """Signed, encoded ingest bodies; each batch on one stream (the API refuses mixed
    batches), consecutive batches round-robin over the streams, no event sent twice."""
    out: list[bytes] = []
    for r in range(requests):
        stream = keys[r % len(keys)]
        events = [kit.event(first + r * batch + i, stream=stream) for i in range(batch)]
        body = {"agentId": str(kit.AGENT_ID), "events": [e.to_wire() for e in events]}
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


Send = Callable[[int], Awaitable[tuple[int, str]]]


def ingest_sender(session: aiohttp.ClientSession, payloads: list[bytes], batch: int) -> Send:
    async def send(i: int) -> tuple[int, str]:
        async with session.post(INGEST, data=payloads[i]) as response:
            if response.status != 200:
                return 0, f"{response.status}: {(await response.text())[:200]}"
            accepted = int((await response.json())["eventsAccepted"])
            return accepted, "" if accepted == batch else f"accepted {accepted} of {batch}"

    return send


def health_sender(session: aiohttp.ClientSession) -> Send:
    async def send(i: int) -> tuple[int, str]:
        async with session.get("/health") as response:
            await response.read()
            return 0, "" if response.status == 200 else f"{response.status}"

    return send


async def closed_loop(name: str, send: Send, requests: int, concurrency: int) -> Result:
    """``concurrency`` workers, each sending its next request when the last one answers."""
    result = Result(name)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < requests:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            events, error = await send(i)
            result.latencies.append(time.perf_counter() - t0)
            result.requests += 1
            result.events += events
            if error:
                result.errors.append(error)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


async def open_loop(name: str, send: Send, requests: int, rate: float) -> Result:
    """Request ``i`` leaves at ``start + i / rate``; its latency runs from then."""
    result = Result(name)
    start = time.perf_counter()
    last_done = start

    async def one(i: int, due: float) -> None:
        nonlocal last_done
        events, error = await send(i)
        done = time.perf_counter()
        result.latencies.append(done - due)
        result.requests += 1
        result.events += events
        last_done = max(last_done, done)
        if error:
            result.errors.append(error)

    tasks: list[asyncio.Task[None]] = []
    for i in range(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    result.elapsed = last_done - start
    return result


# --- the run ------------------------------------------------------------------------------


async def run(
    args: argparse.Namespace,
    admin_key: str,
    port: int,
    process: subprocess.Popen[bytes],
    data_dir: Path,
) -> list[Result]:
    keys = streams(args.streams)
    single_requests = args.events
    batch_requests = max(1, args.batch_events // 100)
    paced_requests = max(1, int(args.rate * args.duration))
    print(
        f"signing {single_requests + batch_requests * 100 + paced_requests} events "
        f"over {len(keys)} streams before timing…",
        flush=True,
    )
    single = bodies(0, single_requests, 1, keys)
    batched = bodies(10_000_000, batch_requests, 100, keys)
    paced = bodies(20_000_000, paced_requests, 1, keys)

    connector = aiohttp.TCPConnector(limit=max(args.concurrency, args.batch_concurrency))
    headers = {"Authorization": f"ApiKey {admin_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        base_url=f"http://{HOST}:{port}",
        connector=connector,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    ) as session:
        await wait_healthy(session, process, data_dir)
        async with session.post(
            "/api/v1/agents/keys",
            json={
                "tenantId": str(kit.TENANT),
                "agentId": str(kit.AGENT_ID),
                "keyId": 1,
                "publicKey": "0x" + kit.AGENT.public_key.hex(),
            },
        ) as response:
            if response.status != 200:
                detail = await response.text()
                raise SystemExit(f"agent key registration: {response.status} {detail}")
        # Warm-up: connections opened, code paths and the agent-key cache hot, on events
        # of their own so that no measured event is a replay.
        warm = bodies(30_000_000, args.concurrency * 4, 1, keys)
        warm_ups = [
            await closed_loop(
                "warm-up", ingest_sender(session, warm, 1), len(warm), args.concurrency
            ),
            await closed_loop("warm-up", health_sender(session), len(warm), args.concurrency),
        ]

        health = health_sender(session)
        results = [
            await closed_loop("GET /health", health, single_requests, args.concurrency),
            await closed_loop(
                "ingest batch=1",
                ingest_sender(session, single, 1),
                single_requests,
                args.concurrency,
            ),
            await closed_loop(
                "ingest batch=100",
                ingest_sender(session, batched, 100),
                batch_requests,
                args.batch_concurrency,
            ),
            await open_loop("GET /health", health, paced_requests, args.rate),
            await open_loop(
                "ingest batch=1", ingest_sender(session, paced, 1), paced_requests, args.rate
            ),
        ]
    for result in warm_ups + results:
        if result.errors:
            raise SystemExit(
                f"bench sanity: {result.name}: {len(result.errors)} failed requests, "
                f"first: {result.errors[0]}"
            )
    return results


def report(args: argparse.Namespace, results: list[Result]) -> None:
    floor_closed, single, batched, floor_open, paced = results
    print()
    print(
        f"closed loop (max throughput); in flight: {args.concurrency} "
        f"(batch=100: {args.batch_concurrency})"
    )
    print(
        f"{'case':<20}{'requests':>9}{'req/s':>10}{'events/s':>11}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'req/s ÷ floor':>15}"
    )
    for r in (floor_closed, single, batched):
        print(
            f"{r.name:<20}{r.requests:>9}{r.rps:>10,.0f}{r.eps:>11,.0f}{r.pct(0.5):>9.2f}"
            f"{r.pct(0.95):>9.2f}{r.pct(0.99):>9.2f}{r.rps / floor_closed.rps:>15.2f}"
        )
    print()
    print(f"open loop at {args.rate:g} req/s for {args.duration:g} s (latency from scheduled send)")
    print(
        f"{'case':<20}{'requests':>9}{'achieved':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'p50 ÷ floor':>13}"
    )
    for r in (floor_open, paced):
        print(
            f"{r.name:<20}{r.requests:>9}{r.rps:>10,.1f}{r.pct(0.5):>9.2f}{r.pct(0.95):>9.2f}"
            f"{r.pct(0.99):>9.2f}{r.pct(0.5) / floor_open.pct(0.5):>13.2f}"
        )
    if paced.rps < 0.95 * args.rate:
        print(
            f"note: ingest fell behind the offered {args.rate:g} req/s (closed-loop capacity "
            f"{single.rps:,.0f} req/s): its latencies above are mostly queueing."
        )
    print()
    print("floor = GET /health on the same server in the same run (HTTP stack, no auth, no DB);")
    print("req/s ÷ floor: share of the bare stack's request rate that ingest keeps (1.0 = free);")
    print("p50 ÷ floor: how many times the bare stack's median latency one ingest takes.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--events",
        type=int,
        default=3000,
        help="single-event requests in the closed-loop case (and floor)",
    )
    parser.add_argument(
        "--batch-events", type=int, default=20000, help="events in the batch=100 closed-loop case"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of the fixed-rate case"
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="requests per second in the fixed-rate case"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="in-flight single-event requests"
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=8, help="in-flight batch=100 requests"
    )
    parser.add_argument(
        "--streams", type=int, default=16, help="streams (store ids) the batches are spread over"
    )
    args = parser.parse_args()
    if (
        min(args.events, args.batch_events, args.concurrency, args.batch_concurrency, args.streams)
        < 1
        or args.duration <= 0
        or args.rate <= 0
    ):
        parser.error("counts, duration and rate must be positive")

    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so the finally below still stops the
    # server and drops the database.
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    admin_key = "ss_" + secrets.token_urlsafe(32)
    name, dsn = pg.create_database("seqbenchhttp")
    process: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        data_dir = Path(tmp)
        try:
            port = free_port()
            process = start_server(dsn, admin_key, data_dir, port)
            print(f"bench-http: server pid {process.pid} on {HOST}:{port}, database {name}")
            results = asyncio.run(run(args, admin_key, port, process, data_dir))
            report(args, results)
        finally:
            if process is not None:
                stop_server(process)
            pg.drop_database(name)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # cleaned up already, by main's finally

"""Ingest over real HTTP against a real server process (``make bench-http``).

Starts ``python -m stateset_sequencer serve`` on loopback over a scratch PostgreSQL
database, registers the agent key through the API, signs and encodes every request body
before any clock starts, then drives the server with aiohttp:

1. closed loop, as fast as it answers: single-event batches with ``--concurrency``
   requests in flight over ``--streams`` streams and again over ``--wide-streams``, and
   100-event batches with ``--batch-concurrency`` in flight;
2. open loop at a fixed ``--rate`` of single-event requests for ``--duration`` seconds,
   and again at ``--fast-rate``: each request is sent at its scheduled time whether or
   not earlier ones have answered, and its latency is counted from that time (so a stall
   is not hidden by the client waiting for it: no coordinated omission);
3. the floor, measured against the same server in the same run: ``GET /health``, a route
   with no auth, no body and no database, closed loop at ``--concurrency`` and open loop
   at each rate. It is the price of uvicorn, the middleware and the client alone;
4. the signature floor: the batch=100 events' agent signatures verified with PyNaCl on
   two threads of this process (cffi releases the GIL), the rate no server process of
   two cores can beat, to set the batch=100 case against;
5. the server's memory: the resident size of the server's processes (the supervisor and
   its workers with ``--workers N``), sampled through the run, and each one's peak.

``--workers N`` is passed to ``serve`` (default: the server's own, one per CPU on
PostgreSQL); the run waits until every worker listens before any clock starts.

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
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import aiohttp
from nacl.signing import VerifyKey

from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.testing.serverproc import children, listening_sockets
from stateset_sequencer.ves.envelope import parse_envelope

HOST = "127.0.0.1"
INGEST = "/api/v1/ves/events/ingest"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0
# An open-loop request still unanswered this long after its scheduled time is counted as
# timed out: at a rate beyond the server's capacity the queue would otherwise grow for
# the whole run and the case would last as long as the backlog.
OPEN_LOOP_TIMEOUT_S = 10.0
TIMED_OUT = "timed out"


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


def start_server(
    dsn: str,
    admin_key: str,
    data_dir: Path,
    port: int,
    extra: dict[str, str] | None = None,
    *,
    workers: int | None = None,
) -> subprocess.Popen[bytes]:
    """``serve`` on ``port`` (gRPC on ``port + 1``); ``workers`` for ``--workers``, None
    for the server's default."""
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
    if workers is not None:
        command += ["--workers", str(workers)]
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


async def wait_workers(
    process: subprocess.Popen[bytes], port: int, workers: int, data_dir: Path
) -> None:
    """Until each of ``workers`` worker processes listens (its own gRPC socket on
    ``port + 1``): /health answers as soon as the first one does."""
    if workers < 2:
        return
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(children(process.pid)) < workers or listening_sockets(port + 1) < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{workers} workers did not start:\n{server_log(data_dir)}")
        await asyncio.sleep(0.1)


def vm_kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of a process, KiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Memory:
    """Samples the resident size of the server's processes (the supervisor or single
    process and its children) every 0.2 s on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self.peaks: dict[int, int] = {}  # VmHWM of each process seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tree(self) -> list[int]:
        return [self.pid, *children(self.pid)]

    def _sample(self) -> None:
        pids = self.tree()
        self.peak_kib = max(self.peak_kib, sum(vm_kib(pid, "VmRSS") for pid in pids))
        for pid in pids:
            self.peaks[pid] = max(self.peaks.get(pid, 0), vm_kib(pid, "VmHWM"))

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def verify_floor(payloads: list[bytes]) -> Result:
    """The agent signatures of ``payloads``' events verified with PyNaCl on two threads,
    nothing else: what the server does per event at the least."""
    work = []
    for payload in payloads:
        for wire in json.loads(payload)["events"]:
            event = parse_envelope(wire)
            work.append((event.signing_hash(), bytes(event.agent_signature)))
    key = VerifyKey(kit.AGENT.public_key)
    half = len(work) // 2

    def verify(items: list[tuple[bytes, bytes]]) -> None:
        for message, signature in items:
            key.verify(message, signature)

    result = Result("Ed25519 verify ×2")
    with ThreadPoolExecutor(2) as pool:
        start = time.perf_counter()
        list(pool.map(verify, (work[:half], work[half:])))
        result.elapsed = time.perf_counter() - start
    result.requests = result.events = len(work)
    return result


# --- the load -----------------------------------------------------------------------------


async def register_agent_key(session: aiohttp.ClientSession) -> None:
    """The benchmark agent's key, registered through the API as an operator would."""
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
        try:
            events, error = await asyncio.wait_for(send(i), OPEN_LOOP_TIMEOUT_S)
        except TimeoutError:
            events, error = 0, TIMED_OUT
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


@dataclass
class Run:
    """Every case's result, and the server's memory."""

    results: dict[str, Result]
    verify: Result
    memory: Memory
    workers: int


async def run(
    args: argparse.Namespace,
    admin_key: str,
    port: int,
    process: subprocess.Popen[bytes],
    data_dir: Path,
) -> Run:
    keys = streams(args.streams)
    wide_keys = streams(args.wide_streams)
    single_requests = args.events
    batch_requests = max(1, args.batch_events // 100)
    paced_requests = max(1, int(args.rate * args.duration))
    fast_requests = max(1, int(args.fast_rate * args.duration))
    print(
        f"signing {2 * single_requests + batch_requests * 100 + paced_requests + fast_requests}"
        f" events over {len(wide_keys)} streams before timing…",
        flush=True,
    )
    single = bodies(0, single_requests, 1, keys)
    wide = bodies(40_000_000, single_requests, 1, wide_keys)
    batched = bodies(10_000_000, batch_requests, 100, keys)
    paced = bodies(20_000_000, paced_requests, 1, keys)
    fast = bodies(50_000_000, fast_requests, 1, keys)
    verify = verify_floor(batched)

    connector = aiohttp.TCPConnector(limit=max(args.concurrency, args.batch_concurrency))
    headers = {"Authorization": f"ApiKey {admin_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        base_url=f"http://{HOST}:{port}",
        connector=connector,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    ) as session:
        await wait_healthy(session, process, data_dir)
        await wait_workers(process, port, args.expected_workers, data_dir)
        workers = max(1, len(children(process.pid)))
        await register_agent_key(session)
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
        with Memory(process.pid) as memory:
            results = {
                "floor": await closed_loop(
                    "GET /health", health, single_requests, args.concurrency
                ),
                "single": await closed_loop(
                    "ingest batch=1",
                    ingest_sender(session, single, 1),
                    single_requests,
                    args.concurrency,
                ),
                "wide": await closed_loop(
                    f"batch=1 ×{args.wide_streams} str",
                    ingest_sender(session, wide, 1),
                    single_requests,
                    args.concurrency,
                ),
                "batched": await closed_loop(
                    "ingest batch=100",
                    ingest_sender(session, batched, 100),
                    batch_requests,
                    args.batch_concurrency,
                ),
                "floor_open": await open_loop("GET /health", health, paced_requests, args.rate),
                "paced": await open_loop(
                    "ingest batch=1", ingest_sender(session, paced, 1), paced_requests, args.rate
                ),
                "floor_fast": await open_loop("GET /health", health, fast_requests, args.fast_rate),
                "fast": await open_loop(
                    "ingest batch=1",
                    ingest_sender(session, fast, 1),
                    fast_requests,
                    args.fast_rate,
                ),
            }
    for result in warm_ups + list(results.values()):
        # An open loop beyond capacity times out (reported); anything else is a fault.
        faults = [e for e in result.errors if e != TIMED_OUT]
        if faults:
            raise SystemExit(
                f"bench sanity: {result.name}: {len(faults)} failed requests, first: {faults[0]}"
            )
    return Run(results, verify, memory, workers)


def report(args: argparse.Namespace, done: Run) -> None:
    r = done.results
    floor_closed, single, wide, batched = r["floor"], r["single"], r["wide"], r["batched"]
    print()
    print(
        f"closed loop (max throughput); in flight: {args.concurrency} "
        f"(batch=100: {args.batch_concurrency}); streams: {args.streams} "
        f"(×{args.wide_streams} str: {args.wide_streams})"
    )
    print(
        f"{'case':<20}{'requests':>9}{'req/s':>10}{'events/s':>11}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'req/s ÷ floor':>15}"
    )
    for c in (floor_closed, single, wide, batched):
        print(
            f"{c.name:<20}{c.requests:>9}{c.rps:>10,.0f}{c.eps:>11,.0f}{c.pct(0.5):>9.2f}"
            f"{c.pct(0.95):>9.2f}{c.pct(0.99):>9.2f}{c.rps / floor_closed.rps:>15.2f}"
        )
    v = done.verify
    print(
        f"{'Ed25519 verify ×2':<20}{v.events:>9}{'':>10}{v.eps:>11,.0f}   "
        f"(PyNaCl, 2 threads, the batch=100 events; batch=100 events/s ÷ it: "
        f"{batched.eps / v.eps:.2f})"
    )
    for rate, floor_open, paced in (
        (args.rate, r["floor_open"], r["paced"]),
        (args.fast_rate, r["floor_fast"], r["fast"]),
    ):
        print()
        print(f"open loop at {rate:g} req/s for {args.duration:g} s (latency from scheduled send)")
        print(
            f"{'case':<20}{'requests':>9}{'achieved':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
            f"{'p50 ÷ floor':>13}{'p99 ÷ floor':>13}"
        )
        for c in (floor_open, paced):
            print(
                f"{c.name:<20}{c.requests:>9}{c.rps:>10,.1f}{c.pct(0.5):>9.2f}"
                f"{c.pct(0.95):>9.2f}{c.pct(0.99):>9.2f}{c.pct(0.5) / floor_open.pct(0.5):>13.2f}"
                f"{c.pct(0.99) / floor_open.pct(0.99):>13.2f}"
            )
        if paced.rps < 0.95 * rate:
            print(
                f"note: ingest fell behind the offered {rate:g} req/s (closed-loop capacity "
                f"{single.rps:,.0f} req/s): its latencies above are mostly queueing."
            )
        for c in (floor_open, paced):
            late = c.errors.count(TIMED_OUT)
            if late:
                print(
                    f"note: {c.name}: {late} of {c.requests} requests unanswered after "
                    f"{OPEN_LOOP_TIMEOUT_S:g} s, counted at {OPEN_LOOP_TIMEOUT_S:g} s"
                )
    m = done.memory
    print()
    workers = sorted(pid for pid in m.peaks if pid != m.pid)
    print(
        f"server memory: peak RSS {m.peak_kib / 1024:,.1f} MiB summed over "
        f"{1 + len(workers)} process(es) (sampled every 0.2 s)"
    )
    role = "supervisor" if workers else "server"
    print(f"  {role} pid {m.pid}: VmHWM {m.peaks.get(m.pid, 0) / 1024:,.1f} MiB")
    for pid in workers:
        print(f"  worker pid {pid}: VmHWM {m.peaks[pid] / 1024:,.1f} MiB")
    print()
    print("floor = GET /health on the same server in the same run (HTTP stack, no auth, no DB);")
    print("req/s ÷ floor: share of the bare stack's request rate that ingest keeps (1.0 = free);")
    print("p50 (p99) ÷ floor: how many times the bare stack's median (p99) one ingest takes;")
    print("batch=100 ÷ it: share of the bare signature checks' rate on 2 threads that")
    print("  HTTP ingest of 100-event batches keeps (the floor no server on 2 cores can beat).")


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
    parser.add_argument(
        "--wide-streams",
        type=int,
        default=64,
        help="streams of the second single-event closed-loop case",
    )
    parser.add_argument(
        "--fast-rate", type=float, default=1000.0, help="requests per second, second fixed rate"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="serve --workers (default: the server's own)"
    )
    args = parser.parse_args()
    if (
        min(
            args.events,
            args.batch_events,
            args.concurrency,
            args.batch_concurrency,
            args.streams,
            args.wide_streams,
            args.workers or 1,
        )
        < 1
        or args.duration <= 0
        or args.rate <= 0
        or args.fast_rate <= 0
    ):
        parser.error("counts, duration and rates must be positive")
    # The server's default on PostgreSQL, to know how many workers to wait for.
    args.expected_workers = args.workers or os.cpu_count() or 1

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
            process = start_server(dsn, admin_key, data_dir, port, workers=args.workers)
            print(
                f"bench-http: server pid {process.pid} on {HOST}:{port}, database {name}, "
                f"--workers {args.workers or 'default'}"
            )
            done = asyncio.run(run(args, admin_key, port, process, data_dir))
            print(
                f"workers: {done.workers} server process(es) serving"
                f"{'' if done.workers == 1 else ' under a supervisor'}"
            )
            report(args, done)
        finally:
            if process is not None:
                stop_server(process)
            pg.drop_database(name)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # cleaned up already, by main's finally

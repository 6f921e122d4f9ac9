"""A peer side by side with our ingest, in one process and one run (``make bench-peers``).

On one machine and one PostgreSQL server (scratch databases, dropped at the end, on
failure too), over the same signed events, one after another:

1. ``eventsourcing``'s PostgreSQL application recorder (``PostgresApplicationRecorder``
   on a ``PostgresDatastore``, psycopg 3): ``insert_events`` with 100 ``StoredEvent``s a
   call, 16 writer threads (the recorder is synchronous), each writer on an aggregate of
   its own, each event's state the JSON payload bytes of one of ours. It verifies
   nothing: the "store only" peer;
2. our service layer, ``Sequencer.ingest`` on our PostgreSQL store: batches of 100, 16
   concurrent writers over 64 streams (a case of ``make bench-ingest``);
3. our HTTP ingest against a real server process on loopback: batches of 100 over 16
   streams, 8 requests in flight (the batch case of ``make bench-http``);
4. the floors: a bare COPY of the same rows into an unindexed table, and bare PyNaCl
   verification of the same events' signatures on 2 threads (and on 1, for reference).

Every case gets a short warm-up on events of its own first. Prints one table with
events/s, per-call latency percentiles and the ratios of ours to the peer and to the
floors, the issue's targets beside them, and the peak RSS of this process and of the
server. Figures only; nothing asserts on time. The client shares the machine with the
server and with PostgreSQL, so absolute figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib.metadata
import ipaddress
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit

import aiohttp
import asyncpg
import nacl.signing
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

from bench_http import (
    HOST,
    REQUEST_TIMEOUT_S,
    bodies,
    closed_loop,
    ingest_sender,
    register_agent_key,
    start_server,
    stop_server,
    streams,
    wait_healthy,
)
from bench_ingest import WRITERS, build, floor_copy_pg, floor_verify, rows_of, run_case
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.testing.serverproc import children
from stateset_sequencer.ves.envelope import VesEventEnvelope
from stateset_sequencer.ves.jsontext import payload_text

BATCH = 100
STREAMS = 64  # the service-layer case: 16 writers over 64 streams
HTTP_STREAMS = 16
HTTP_IN_FLIGHT = 8
VERIFY_THREADS = 2
VERIFY_CHUNK = 256  # signatures per task handed to the verify pool
CASE_TIMEOUT_S = 300.0  # any one case, warm-up included
STATEMENT_TIMEOUT_S = 30  # the peer's connections: statements and table-lock waits
CONNECT_TIMEOUT_S = 10.0
DEFAULT_TIMEOUT_S = 900  # the whole run
# The targets for our HTTP ingest at batch 100.
TARGET_OF_VERIFY = 0.35
TARGET_OF_PEER = 0.5


@dataclass
class Case:
    """One measured case: events, wall time and each call's latency (seconds)."""

    name: str
    events: int
    elapsed: float
    latencies: list[float] = field(default_factory=list)

    @property
    def eps(self) -> float:
        return self.events / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> str:
        if not self.latencies:
            return "—"
        ordered = sorted(self.latencies)
        return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


# --- the peer: eventsourcing's PostgreSQL application recorder ----------------------------


def stored_events(
    plan: list[list[list[VesEventEnvelope]]], aggregates: Sequence[uuid.UUID]
) -> list[list[list[StoredEvent]]]:
    """Writer ``w``'s batches as stored events of aggregate ``aggregates[w]``, versions
    1, 2, … in order; each state the JSON payload bytes of the event it stands for."""
    out: list[list[list[StoredEvent]]] = []
    for w, batches in enumerate(plan):
        version = 0
        converted: list[list[StoredEvent]] = []
        for batch in batches:
            items: list[StoredEvent] = []
            for e in batch:
                version += 1
                state = (payload_text(e) or "").encode()
                items.append(StoredEvent(aggregates[w], version, e.event_type, state))
            converted.append(items)
        out.append(converted)
    return out


def open_peer(dsn: str) -> PostgresDatastore:
    parts = urlsplit(dsn)
    return PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        connect_timeout=CONNECT_TIMEOUT_S,
        pool_size=WRITERS,
        lock_timeout=STATEMENT_TIMEOUT_S,
    )


def run_threads(
    name: str,
    recorder: PostgresApplicationRecorder,
    plan: list[list[list[StoredEvent]]],
    deadline: float,
) -> Case:
    """One thread per writer, each inserting its batches in order; a writer stops early
    once another has failed or the deadline has passed."""
    stop = threading.Event()
    latencies: list[float] = []  # list.append is atomic under the GIL

    def writer(batches: list[list[StoredEvent]]) -> int:
        done = 0
        for batch in batches:
            if stop.is_set() or time.monotonic() > deadline:
                raise TimeoutError(f"{name}: writer stopped early")
            t0 = time.perf_counter()
            ids = recorder.insert_events(batch)
            latencies.append(time.perf_counter() - t0)
            done += len(ids or ())
        return done

    pool = concurrent.futures.ThreadPoolExecutor(len(plan), thread_name_prefix="peer")
    try:
        start = time.perf_counter()
        futures = [pool.submit(writer, batches) for batches in plan]
        finished, pending = concurrent.futures.wait(
            futures,
            timeout=max(0.0, deadline - time.monotonic()),
            return_when=concurrent.futures.FIRST_EXCEPTION,
        )
        elapsed = time.perf_counter() - start
        if pending:
            failed = [f for f in finished if f.exception() is not None]
            if failed:
                raise RuntimeError(f"{name}: a writer failed") from failed[0].exception()
            raise TimeoutError(f"{name}: not done within {CASE_TIMEOUT_S:g} s")
        inserted = sum(f.result() for f in futures)
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
    expected = sum(len(b) for w in plan for b in w)
    if inserted != expected:
        raise SystemExit(f"bench sanity: {name}: inserted {inserted} of {expected}")
    return Case(name, expected, elapsed, latencies)


async def limit_statements(dsn: str, database: str) -> None:
    """Bound every statement of the peer's sessions (its client sets no timeout)."""
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(
            f"ALTER DATABASE \"{database}\" SET statement_timeout = '{STATEMENT_TIMEOUT_S}s'",
            timeout=CONNECT_TIMEOUT_S,
        )
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)


def peer_case(
    stack: ExitStack, database: str, dsn: str, plan: list[list[list[VesEventEnvelope]]]
) -> Case:
    asyncio.run(limit_statements(dsn, database))
    datastore = open_peer(dsn)
    stack.callback(datastore.close)
    recorder = PostgresApplicationRecorder(datastore)
    recorder.create_table()
    deadline = time.monotonic() + CASE_TIMEOUT_S
    # Warm-up: every pooled connection used and its statements prepared, one batch a
    # writer on aggregates of their own.
    warm = stored_events(
        [batches[:1] for batches in plan], [uuid.UUID(int=0xE000 + w) for w in range(len(plan))]
    )
    run_threads("peer warm-up", recorder, warm, deadline)
    aggregates = [uuid.UUID(int=0xA000 + w) for w in range(len(plan))]
    return run_threads(
        "eventsourcing recorder", recorder, stored_events(plan, aggregates), deadline
    )


# --- ours: the service layer and HTTP -------------------------------------------------------


def warm_plan(plan: list[list[list[VesEventEnvelope]]]) -> list[list[list[VesEventEnvelope]]]:
    """One batch a writer on the writer's own stream, of events not in ``plan``."""
    out: list[list[list[VesEventEnvelope]]] = []
    for w, batches in enumerate(plan):
        first = batches[0][0]
        stream = StreamKey(first.tenant_id, first.store_id)
        out.append([[kit.event(60_000_000 + w * BATCH + i, stream=stream) for i in range(BATCH)]])
    return out


async def service_case(
    dsn: str,
    data_dir: Path,
    plan: list[list[list[VesEventEnvelope]]],
    warm: list[list[list[VesEventEnvelope]]],
) -> Case:
    store = await open_store(parse_database_url(dsn, data_dir), max_connections=WRITERS)
    try:
        await store.migrate()
        await kit.register(store)
        await run_case(store, warm)
        rate, latencies = await run_case(store, plan)
        # The sequencers' last head announcements go out before the store closes.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=5.0)
    finally:
        await store.close()
    events = sum(len(b) for w in plan for b in w)
    return Case("ours: Sequencer.ingest", events, events / rate, latencies)


async def http_case(
    port: int,
    admin_key: str,
    process: subprocess.Popen[bytes],
    data_dir: Path,
    payloads: list[bytes],
    warm: list[bytes],
) -> Case:
    connector = aiohttp.TCPConnector(limit=HTTP_IN_FLIGHT)
    headers = {"Authorization": f"ApiKey {admin_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        base_url=f"http://{HOST}:{port}",
        connector=connector,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    ) as session:
        await wait_healthy(session, process, data_dir)
        await register_agent_key(session)
        warm_up = await closed_loop(
            "HTTP warm-up", ingest_sender(session, warm, BATCH), len(warm), HTTP_IN_FLIGHT
        )
        measured = await closed_loop(
            "HTTP ingest",
            ingest_sender(session, payloads, BATCH),
            len(payloads),
            HTTP_IN_FLIGHT,
        )
    for result in (warm_up, measured):
        if result.errors:
            raise SystemExit(
                f"bench sanity: {result.name}: {len(result.errors)} failed requests, "
                f"first: {result.errors[0]}"
            )
    if measured.events != len(payloads) * BATCH:
        raise SystemExit(f"bench sanity: HTTP accepted {measured.events} events")
    return Case("ours: HTTP ingest", measured.events, measured.elapsed, measured.latencies)


# --- the floors ------------------------------------------------------------------------------


def floor_verify_threads(events: list[VesEventEnvelope], threads: int) -> float:
    """Bare PyNaCl verification on ``threads`` threads, in chunks (cffi releases the GIL
    around the C call); hashes computed before the clock starts."""
    key = nacl.signing.VerifyKey(kit.AGENT.public_key)
    pairs = [(e.signing_hash(), e.agent_signature) for e in events]
    chunks = [pairs[i : i + VERIFY_CHUNK] for i in range(0, len(pairs), VERIFY_CHUNK)]

    def work(chunk: list[tuple[bytes, bytes]]) -> int:
        for message, signature in chunk:
            key.verify(message, signature)
        return len(chunk)

    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="verify") as pool:
        list(pool.map(int, range(threads)))  # the threads started before the clock
        start = time.perf_counter()
        done = sum(pool.map(work, chunks, timeout=CASE_TIMEOUT_S))
        elapsed = time.perf_counter() - start
    if done != len(pairs):
        raise SystemExit(f"bench sanity: verified {done} of {len(pairs)}")
    return done / elapsed


# --- the run ----------------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a live process, in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its workers (a supervisor's children)."""
    return [pid, *children(pid)]


def own_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_loopback(dsn: str) -> None:
    host = urlsplit(dsn).hostname or ""
    if host == "localhost" or host.startswith("/"):
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"bench-peers runs on loopback only; the PostgreSQL server is at {host!r}")


def ratio(a: Case | None, b: Case | None) -> str:
    if not (a and b and b.eps):
        return "—"
    value = a.eps / b.eps
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


@dataclass
class Run:
    """What one run measured, for the report."""

    cases: dict[str, Case] = field(default_factory=dict)
    server_rss_mb: list[float] = field(default_factory=list)  # per process of the server
    postgres: str = "?"
    state_bytes: float = 0.0  # the peer's mean event state: our events' JSON payloads
    load_start: Sequence[float] = ()


def report(run: Run, skip_http: bool) -> None:
    cases = run.cases
    peer, copy, verify2 = cases["peer"], cases["copy"], cases["verify2"]
    print()
    print(
        f"{'case':<32}{'events':>7}{'events/s':>10}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
        f"{'÷ peer':>8}{'÷ verify×2':>11}{'÷ COPY':>8}"
    )
    for key in ("copy", "verify2", "verify1", "peer", "service", "http"):
        case = cases.get(key)
        if case is None:
            print(f"{'ours: HTTP ingest':<32}{'skipped (--skip-http)':>31}")
            continue
        mine = key in ("peer", "service", "http")
        print(
            f"{case.name:<32}{case.events:>7}{case.eps:>10,.0f}{case.pct(0.5):>8}"
            f"{case.pct(0.95):>8}{case.pct(0.99):>8}"
            f"{ratio(case, peer) if mine else '':>8}{ratio(case, verify2) if mine else '':>11}"
            f"{ratio(case, copy) if mine else '':>8}"
        )
    print()
    http = cases.get("http")
    print("targets (issue 16), our HTTP ingest at batch 100:")
    for label, floor, target in (
        ("bare 2-thread verify", verify2, TARGET_OF_VERIFY),
        ("eventsourcing's recorder", peer, TARGET_OF_PEER),
    ):
        if http is None:
            print(f"  ≥ {target:.2f} × {label}: not measured (--skip-http)")
            continue
        achieved = http.eps / floor.eps
        verdict = "met" if achieved >= target else "missed"
        print(f"  ≥ {target:.2f} × {label}: {achieved:.2f} ({verdict})")
    print()
    server = "not started (--skip-http)" if skip_http else "unknown (exited early)"
    if len(run.server_rss_mb) == 1:
        server = f"{run.server_rss_mb[0]:.0f} MB"
    elif run.server_rss_mb:
        each = " + ".join(f"{mb:.0f}" for mb in run.server_rss_mb)
        server = (
            f"{sum(run.server_rss_mb):.0f} MB in {len(run.server_rss_mb)} processes"
            f" ({each}: supervisor first; peaks summed)"
        )
    print(f"peak RSS: this process {own_peak_rss_mb():.0f} MB (client, peer, every signed event)")
    print(f"          server process {server}")
    start, end = (", ".join(f"{x:.2f}" for x in la) for la in (run.load_start, os.getloadavg()))
    print(f"load average (1, 5, 15 min): {start} at the start, {end} at the end")
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("eventsourcing", "psycopg", "psycopg-binary", "asyncpg", "PyNaCl")
    )
    print(f"PostgreSQL {run.postgres}; {versions}")
    print()
    print("per call: one insert_events of 100 (peer), one ingest of 100 (service layer), one")
    print("request of 100 (HTTP); COPY is one call of every row, verify has no calls.")
    print("peer = eventsourcing's PostgresApplicationRecorder: stores, verifies nothing; its")
    print(f"event state is our event's JSON payload ({run.state_bytes:.0f} bytes on average).")
    print("÷ columns: events/s over that case's events/s (higher is better).")


timed_out = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20000, help="events in each case")
    parser.add_argument("--skip-http", action="store_true", help="leave out the HTTP case")
    parser.add_argument(
        "--timeout", type=int, default=DEFAULT_TIMEOUT_S, help="seconds for the whole run"
    )
    args = parser.parse_args()
    if args.events < 1 or args.timeout < 1:
        parser.error("--events and --timeout must be positive")

    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, and so does our own deadline, so the
    # ExitStack below still stops the server and drops the databases.
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        global timed_out
        timed_out = True
        print(f"bench-peers: over --timeout {args.timeout} s, stopping", file=sys.stderr)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)
    run = Run(load_start=os.getloadavg())
    check_loopback(pg.server_dsn())

    plan = build(args.events, BATCH, STREAMS)
    total = sum(len(b) for w in plan for b in w)
    print(
        f"bench-peers: {total} events a case, batches of {BATCH}, {WRITERS} writers; "
        f"PostgreSQL: {pg.server_description()}",
        flush=True,
    )
    with ExitStack() as stack:
        try:
            measure(stack, args, plan, run)
        finally:
            signal.alarm(0)  # the cleanup (the ExitStack) is not cut short by the deadline
    report(run, args.skip_http)


async def server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        return str(await conn.fetchval("SHOW server_version", timeout=CONNECT_TIMEOUT_S))
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)


async def server_ready(port: int, process: subprocess.Popen[bytes], data_dir: Path) -> None:
    async with aiohttp.ClientSession(
        base_url=f"http://{HOST}:{port}", timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    ) as session:
        await wait_healthy(session, process, data_dir)


def measure(
    stack: ExitStack, args: argparse.Namespace, plan: list[list[list[VesEventEnvelope]]], run: Run
) -> None:
    """Every case, into ``run``; what to undo goes on ``stack``."""
    cases = run.cases
    events = [e for w in plan for b in w for e in b]
    total = len(events)
    run.state_bytes = sum(len((payload_text(e) or "").encode()) for e in events) / total
    data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peers-")))
    databases: dict[str, pg.ScratchDatabase] = {}
    for role in ("peer", "ours", *(() if args.skip_http else ("http",))):
        database = pg.create_database(f"seqbenchpeers_{role}")
        stack.callback(pg.drop_database, database.name)
        databases[role] = database
    run.postgres = asyncio.run(server_version(databases["ours"].dsn))
    process: subprocess.Popen[bytes] | None = None
    admin_key = "ss_" + secrets.token_urlsafe(32)
    port = free_port()
    if not args.skip_http:
        # Started first: its start-up overlaps the signing below, which is not timed.
        process = start_server(databases["http"].dsn, admin_key, data_dir, port)
        stack.callback(stop_server, process)  # before the databases are dropped
        print(f"server pid {process.pid} on {HOST}:{port}", flush=True)
    print("signing the warm-up and HTTP events before any clock starts…", flush=True)
    warm = warm_plan(plan)
    keys = streams(HTTP_STREAMS)
    payloads = [] if process is None else bodies(10_000_000, total // BATCH, BATCH, keys)
    warm_bodies = [] if process is None else bodies(30_000_000, HTTP_IN_FLIGHT, BATCH, keys)
    if process is not None:  # started and idle before any clock starts
        asyncio.run(server_ready(port, process, data_dir))
        print(f"server ready: {len(process_tree(process.pid))} process(es)", flush=True)

    print("floors…", flush=True)
    copy_rate = asyncio.run(
        asyncio.wait_for(floor_copy_pg(databases["ours"].dsn, rows_of(events)), CASE_TIMEOUT_S)
    )
    cases["copy"] = Case("bare COPY (unindexed)", total, total / copy_rate)
    verify2 = floor_verify_threads(events, VERIFY_THREADS)
    cases["verify2"] = Case(f"bare verify, {VERIFY_THREADS} threads", total, total / verify2)
    cases["verify1"] = Case("bare verify, 1 thread", total, total / floor_verify(events))
    print("eventsourcing…", flush=True)
    cases["peer"] = peer_case(stack, databases["peer"].name, databases["peer"].dsn, plan)
    print("service layer…", flush=True)
    cases["service"] = asyncio.run(
        asyncio.wait_for(service_case(databases["ours"].dsn, data_dir, plan, warm), CASE_TIMEOUT_S)
    )
    if process is None:
        return
    print("HTTP…", flush=True)
    cases["http"] = asyncio.run(
        asyncio.wait_for(
            http_case(port, admin_key, process, data_dir, payloads, warm_bodies), CASE_TIMEOUT_S
        )
    )
    peaks = (peak_rss_mb(pid) for pid in process_tree(process.pid))
    run.server_rss_mb = [mb for mb in peaks if mb is not None]


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(124 if timed_out else 130)  # cleaned up already, by main's ExitStack

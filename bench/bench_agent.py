"""The offline-first agent's push rate against the server's own ingest rate
(``make bench-agent``).

Starts ``python -m stateset_sequencer serve`` on loopback over a scratch PostgreSQL
database (``bench_http``'s helpers), then for each batch size (1, 100, 1000):

1. raw: the server's HTTP ingest rate. The events are signed with the SDK's ``Agent``
   and their request bodies encoded before the clock starts, then POSTed one after the
   other over one httpx connection (one request in flight), each answer checked for 200
   and ``eventsAccepted``;
2. agent: an ``AgentService`` with its own home, keystore key (registered through
   ``POST /api/v1/agents/keys``), pinned sequencer key and outbox. The same number of
   events is emitted into the durable outbox first (timed apart: the emit rate), then
   ``await service.push(batch_size=B)`` sends them all and is timed whole: outbox
   claims and acknowledgements, receipt checks, the cursor update at the end.

Each case has a stream (store id) of its own; both cases of a batch size sign with the
same agent key. agent ÷ raw is then the share of the server's ingest rate the agent's
bookkeeping leaves; the per-request latency of the agent is that of each ``ingest``
call of its client (receipt checks included), and "in ingest" the share of the push spent
inside those calls. The client shares the machine with the server and PostgreSQL, so
absolute figures are a lower bound. Nothing asserts on time. The server is stopped and the
database dropped at the end, on failure and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import httpx

from bench_http import (
    HOST,
    INGEST,
    REQUEST_TIMEOUT_S,
    Result,
    start_server,
    stop_server,
    wait_healthy,
)
from hostile_http import Sampler, rss_mb
from stateset_sequencer.agent.config import AgentConfig, AgentHome
from stateset_sequencer.agent.keystore import KeyStore
from stateset_sequencer.agent.outbox import Outbox, State
from stateset_sequencer.agent.service import AgentService, ClientFactory
from stateset_sequencer.client import Agent, IngestOutcome, SequencerClient
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.ves.envelope import VesEventEnvelope
from stateset_sequencer.ves.signing import Signer

BATCHES = (1, 100, 1000)
DEFAULT_EVENTS = {1: 800, 100: 6000, 1000: 12_000}
QUICK_EVENTS = {1: 30, 100: 300, 1000: 2000}
WARM_EVENTS = 200
MAX_EVENTS = 1_000_000
CASE_TIMEOUT_S = 900.0  # a bound on one case, not an expectation of speed
QUANTILES = (0.5, 0.95, 0.99)
MIN_REQUESTS_P95 = 20
MIN_REQUESTS_P99 = 100


@dataclass
class Case(Result):
    """One measured case (``Result``'s counts, latencies and percentiles) and the rest."""

    batch: int = 1
    rss_start_mb: float = 0.0  # when the clock starts: events signed, bodies encoded
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    emit_s: float = 0.0  # agent: appending the events to the outbox, before the push
    ingest_s: float = 0.0  # agent: the time spent inside the client's ingest calls

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """The clock, and the client's RSS before, during (sampled) and after."""
        self.rss_start_mb = rss_mb(os.getpid())
        with Sampler(os.getpid()) as sampler:
            start = time.perf_counter()
            yield
            self.elapsed = time.perf_counter() - start
        self.rss_after_mb = rss_mb(os.getpid())
        self.rss_peak_mb = max(sampler.peak, self.rss_start_mb, self.rss_after_mb)

    def quantile_ms(self, q: float) -> float | None:
        """None when there are too few requests for it to mean anything."""
        needed = 1 if q <= 0.5 else MIN_REQUESTS_P95 if q <= 0.95 else MIN_REQUESTS_P99
        return self.pct(q) if len(self.latencies) >= needed else None

    @property
    def emit_eps(self) -> float:
        return self.events / self.emit_s if self.emit_s else 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "batch": self.batch,
            "events": self.events,
            "requests": self.requests,
            "elapsed_s": round(self.elapsed, 4),
            "events_per_s": round(self.eps, 1),
            **{f"p{round(q * 100)}_ms": _rounded(self.quantile_ms(q), 3) for q in QUANTILES},
            "rss_start_mb": round(self.rss_start_mb, 1),
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "rss_after_mb": round(self.rss_after_mb, 1),
        }
        if self.emit_s:
            out["emit_s"] = round(self.emit_s, 4)
            out["emit_events_per_s"] = round(self.emit_eps, 1)
            out["ingest_share"] = round(self.ingest_s / self.elapsed, 4) if self.elapsed else 0
        return out


@dataclass(frozen=True)
class Identity:
    """One agent's home and registered key, shared by the two cases of a batch size."""

    home: Path
    agent_id: uuid.UUID
    key_id: int
    signer: Signer


class TimedClient(SequencerClient):
    """The agent's client, noting how long each ingest call took."""

    def __init__(self, *args: Any, latencies: list[float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.latencies = latencies

    async def ingest(
        self, agent_id: uuid.UUID, events: Sequence[VesEventEnvelope], *, check: bool = True
    ) -> IngestOutcome:
        t0 = time.perf_counter()
        try:
            return await super().ingest(agent_id, events, check=check)
        finally:
            self.latencies.append(time.perf_counter() - t0)


def timed_factory(pinned: bytes, latencies: list[float]) -> ClientFactory:
    """What ``agent.service.default_client`` builds for a config with a pinned key."""

    def make(config: AgentConfig, api_key: str | None) -> SequencerClient:
        return TimedClient(
            list(config.urls),
            api_key if api_key is not None else config.api_key,
            sequencer_public_key=pinned,
            allow_unsigned_receipts=config.allow_unsigned_receipts,
            latencies=latencies,
        )

    return make


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def event_args(i: int) -> tuple[str, str, str, dict[str, Any]]:
    return "order", f"ORD-{i}", "order.created", {"n": i, "total": 12.5}


# --- the cases ----------------------------------------------------------------------------


async def identity(url: str, admin_key: str, home: Path) -> Identity:
    agent_id = uuid.uuid4()
    keystore = KeyStore(home)
    key = keystore.create(agent_id)
    async with SequencerClient(url, admin_key) as admin:
        await admin.register_agent_key(kit.TENANT, agent_id, key.key_id, key.public_key)
    return Identity(home, agent_id, key.key_id, keystore.signer(agent_id, key.key_id))


async def check_head(url: str, admin_key: str, store: uuid.UUID, expected: int, what: str) -> None:
    async with SequencerClient(url, admin_key) as client:
        head = await client.head(kit.TENANT, store)
    if head != expected:
        raise SystemExit(f"bench sanity: {what}: stream head {head}, expected {expected}")


async def raw_case(
    url: str, admin_key: str, who: Identity, store: uuid.UUID, batch: int, count: int
) -> Case:
    agent = Agent(who.signer, kit.TENANT, store, who.agent_id, who.key_id)
    events = [agent.event(*event_args(i)) for i in range(count)]
    chunks = [events[i : i + batch] for i in range(0, count, batch)]
    payloads = [
        json.dumps(
            {"agentId": str(who.agent_id), "events": [e.to_wire() for e in chunk]},
            separators=(",", ":"),
        ).encode()
        for chunk in chunks
    ]
    case = Case(f"raw batch={batch}", batch=batch)
    headers = {"Authorization": f"ApiKey {admin_key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as http:
        with case.timed():
            for body, chunk in zip(payloads, chunks, strict=True):
                t0 = time.perf_counter()
                response = await http.post(INGEST, content=body)
                accepted = int(response.json()["eventsAccepted"]) if response.is_success else 0
                case.latencies.append(time.perf_counter() - t0)
                case.requests += 1
                case.events += accepted
                if response.status_code != 200:
                    case.errors.append(f"{response.status_code}: {response.text[:200]}")
                elif accepted != len(chunk):
                    case.errors.append(f"accepted {accepted} of {len(chunk)}")
    if case.errors:
        raise SystemExit(
            f"bench sanity: {case.name}: {len(case.errors)} failed requests, "
            f"first: {case.errors[0]}"
        )
    await check_head(url, admin_key, store, count, case.name)
    return case


async def agent_case(
    url: str,
    admin_key: str,
    pinned: bytes,
    who: Identity,
    store: uuid.UUID,
    batch: int,
    count: int,
) -> Case:
    config = AgentConfig(
        agent_id=who.agent_id,
        tenant_id=kit.TENANT,
        store_id=store,
        urls=(url,),
        api_key=admin_key,
        sequencer_public_key=pinned.hex(),
    )
    home = AgentHome(who.home / str(store))  # an outbox of its own; the keys stay shared
    home.save(config)
    case = Case(f"agent batch={batch}", batch=batch)
    factory = timed_factory(pinned, case.latencies)
    with Outbox(home.outbox_path()) as box:
        service = AgentService(config, box, KeyStore(who.home), client_factory=factory)
        t0 = time.perf_counter()
        for i in range(count):
            service.emit(*event_args(i))
        case.emit_s = time.perf_counter() - t0
        with case.timed():
            report = await service.push(batch_size=batch)
        acked = box.counts()[State.ACKED]
    case.requests = report.batches
    case.events = report.acked
    case.ingest_s = sum(case.latencies)
    problems = [
        f"{name} {value}"
        for name, value, want in (
            ("sent", report.sent, count),
            ("acked", report.acked, count),
            ("acked in the outbox", acked, count),
            ("replayed", report.replayed, 0),
            ("rejected", report.rejected, 0),
            ("conflicts", report.conflicts, 0),
        )
        if value != want
    ]
    if report.cursor_error:
        problems.append(f"cursor: {report.cursor_error}")
    if problems:
        raise SystemExit(f"bench sanity: {case.name} of {count} events: {', '.join(problems)}")
    await check_head(url, admin_key, store, count, case.name)
    return case


# --- the run ------------------------------------------------------------------------------


async def run(
    counts: dict[int, int],
    warm: int,
    admin_key: str,
    port: int,
    process: subprocess.Popen[bytes],
    data_dir: Path,
) -> list[tuple[Case, Case]]:
    url = f"http://{HOST}:{port}"
    async with aiohttp.ClientSession(base_url=url) as session:
        await wait_healthy(session, process, data_dir)
    async with SequencerClient(url, admin_key) as client:
        pinned = await client.use_sequencer_key()
    if pinned is None:
        raise SystemExit("the server publishes no receipt key")
    stores = iter(uuid.UUID(int=0xC000 + n) for n in range(2 * len(counts) + 2))

    # Warm-up on streams of their own: connections, the server's code paths and its
    # agent-key cache, PostgreSQL's plans.
    who = await identity(url, admin_key, data_dir / "agent-warm")
    await raw_case(url, admin_key, who, next(stores), 10, warm)
    await agent_case(url, admin_key, pinned, who, next(stores), 10, warm)

    results: list[tuple[Case, Case]] = []
    for batch, count in counts.items():
        print(f"batch={batch}: {count} events, raw then agent…", flush=True)
        who = await identity(url, admin_key, data_dir / f"agent-{batch}")
        async with asyncio.timeout(CASE_TIMEOUT_S):
            raw = await raw_case(url, admin_key, who, next(stores), batch, count)
        async with asyncio.timeout(CASE_TIMEOUT_S):
            agent = await agent_case(url, admin_key, pinned, who, next(stores), batch, count)
        results.append((raw, agent))
    return results


def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(results: list[tuple[Case, Case]], load_before: str) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    print()
    print("one request in flight, loopback, PostgreSQL; latency per ingest request")
    print(
        f"{'case':<19}{'events':>8}{'requests':>9}{'seconds':>9}{'events/s':>10}{'p50 ms':>9}"
        f"{'p95 ms':>9}{'p99 ms':>9}{'RSS MB start':>14}{'peak':>7}"
    )
    for pair in results:
        for c in pair:
            p50, p95, p99 = (ms(c.quantile_ms(q)) for q in QUANTILES)
            print(
                f"{c.name:<19}{c.events:>8}{c.requests:>9}{c.elapsed:>9.2f}{c.eps:>10,.0f}"
                f"{p50:>9}{p95:>9}{p99:>9}{c.rss_start_mb:>14.1f}{c.rss_peak_mb:>7.1f}"
            )
    print()
    print(
        f"{'batch':>6}{'agent ÷ raw':>13}{'agent in ingest':>17}{'emit events/s':>15}"
        f"{'emit ÷ push':>13}"
    )
    for raw, agent in results:
        ratio = agent.eps / raw.eps if raw.eps else 0.0
        share = agent.ingest_s / agent.elapsed if agent.elapsed else 0.0
        print(
            f"{raw.batch:>6}{ratio:>13.2f}{share:>16.0%} {agent.emit_eps:>15,.0f}"
            f"{agent.emit_eps / agent.eps if agent.eps else 0.0:>13.2f}"
        )
    print()
    print("raw: pre-signed, pre-encoded bodies over one httpx connection, answers checked;")
    print("agent: `await AgentService.push(batch_size=B)` over an outbox holding the events;")
    print("agent ÷ raw: share of the server's ingest rate the agent keeps (1.0 = free);")
    print("agent in ingest: share of the push spent inside the client's ingest calls")
    print("(HTTP, JSON, receipt checks); the rest is outbox bookkeeping and the cursor;")
    print("emit: `AgentService.emit` (sign, validate, durable append), before the push;")
    print(f"p95 needs {MIN_REQUESTS_P95} requests, p99 {MIN_REQUESTS_P99} ('-': fewer);")
    print("RSS: the client's, when the clock starts and at its peak during the case.")
    print(
        f"client max RSS over the run: {max_rss_mb():.0f} MB; "
        f"load average before: {load_before}, after: {load_text()}"
    )


def write_json(
    path: Path, counts: dict[int, int], results: list[tuple[Case, Case]], load_before: str
) -> None:
    data = {
        "bench": "agent",
        "events": {str(b): n for b, n in counts.items()},
        "cases": [c.to_json() for pair in results for c in pair],
        "ratio_agent_raw": {
            str(raw.batch): round(agent.eps / raw.eps, 4) if raw.eps else None
            for raw, agent in results
        },
        "client_max_rss_mb": round(max_rss_mb(), 1),
        "load_average_before": load_before,
        "load_average_after": load_text(),
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for batch in BATCHES:
        parser.add_argument(
            f"--events-batch{batch}",
            type=int,
            default=None,
            help=f"events in the batch={batch} cases (default {DEFAULT_EVENTS[batch]} × --scale)",
        )
    parser.add_argument("--scale", type=float, default=1.0, help="factor on the default counts")
    parser.add_argument("--quick", action="store_true", help="a tiny run, to smoke-test it")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    base = QUICK_EVENTS if args.quick else DEFAULT_EVENTS
    if args.scale <= 0:
        parser.error("--scale must be positive")
    counts: dict[int, int] = {}
    for batch in BATCHES:
        given = getattr(args, f"events_batch{batch}")
        counts[batch] = given if given is not None else max(1, round(base[batch] * args.scale))
        if not 1 <= counts[batch] <= MAX_EVENTS:
            parser.error(f"events per case must be 1..{MAX_EVENTS}")
    warm = min(WARM_EVENTS, QUICK_EVENTS[100]) if args.quick else WARM_EVENTS

    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so the finally below still stops the
    # server and drops the database.
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    admin_key = "ss_" + secrets.token_urlsafe(32)
    name, dsn = pg.create_database("seqbenchagent")
    process: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        data_dir = Path(tmp)
        try:
            port = free_port()
            process = start_server(dsn, admin_key, data_dir, port)
            print(f"bench-agent: server pid {process.pid} on {HOST}:{port}, database {name}")
            load_before = load_text()
            results = asyncio.run(run(counts, warm, admin_key, port, process, data_dir))
            report(results, load_before)
            if args.json is not None:
                write_json(args.json, counts, results, load_before)
                print(f"figures written to {args.json}")
        finally:
            if process is not None:
                stop_server(process)
            pg.drop_database(name)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # cleaned up already, by main's finally

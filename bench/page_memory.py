"""Server memory and ``/health`` latency while clients read pages of big events (issue 11,
item 11).

Starts ``python -m stateset_sequencer serve`` on loopback (SQLite in a scratch directory,
or a scratch PostgreSQL database), ingests ``--events`` events of ``--payload-kb`` KB
through the API, then lets ``--readers`` concurrent clients each read the whole stream
``--rounds`` times through ``GET /api/v1/ves/events`` (pages of ``--limit``, following
``next_from`` where a page was cut by ``MAX_PAGE_BYTES``), while ``GET /health`` is asked
every ``--health-every`` seconds. It prints, per backend:

* the server's RSS before the reads, and its peak during them (``VmHWM`` of
  ``/proc/PID/status``, reset through ``clear_refs`` once the ingest is done, and the
  highest ``VmRSS`` sampled every 10 ms);
* ``/health`` latency during the reads (p50, p99, max);
* pages read, how many were cut, the largest page in bytes, and that every reader got
  every event exactly once.

Nothing asserts on time; the run is bounded by its counts (and each request by a
timeout). To compare with another checkout, run it with that checkout's ``src`` first on
``PYTHONPATH`` (the server is started from the same interpreter and environment)::

    .venv/bin/python bench/page_memory.py [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stateset_sequencer.testing import kit, loadkit, pg, serverproc

ADMIN_KEY = "ss_00000000" + "pagememorybenchadminkey000000000"
EVENTS = "/api/v1/ves/events"
INGEST = "/api/v1/ves/events/ingest"
TIMEOUT_S = 120.0


@dataclass
class Figures:
    backend: str
    rss_before_mb: float = 0.0
    hwm_mb: float = 0.0
    sampled_peak_mb: float = 0.0
    health_ms: list[float] = field(default_factory=list)
    idle_health_ms: list[float] = field(default_factory=list)  # the same probe, no readers
    pages: int = 0
    cut_pages: int = 0
    largest_page_mb: float = 0.0
    complete: bool = True
    read_seconds: float = 0.0
    failures: dict[int, int] = field(default_factory=dict)  # status -> pages refused


def _status_kb(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{name} not in /proc/{pid}/status")


def _server_pid() -> int:
    """The serve process this run started: our child running ``stateset_sequencer serve``."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"stateset_sequencer" in cmdline and b"serve" in cmdline:
            return int(entry.name)
    raise RuntimeError("the server process was not found")


@contextmanager
def _database(backend: str) -> Iterator[dict[str, str]]:
    if backend == "sqlite":
        yield {}
        return
    name, dsn = pg.create_database("seqpages")
    try:
        yield {"DATABASE_URL": dsn}
    finally:
        pg.drop_database(name)


def _ingest(url: str, count: int, payload_kb: int) -> None:
    headers = {"X-API-Key": ADMIN_KEY}
    with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client:
        per_batch = max(1, (8 * 1024) // payload_kb)  # under the 10 MiB body limit
        for start in range(0, count, per_batch):
            events = [
                kit.event(i, payload={"n": i, "blob": "x" * (payload_kb * 1024)}).to_wire()
                for i in range(start, min(start + per_batch, count))
            ]
            body = {"agentId": str(kit.AGENT_ID), "events": events}
            response = client.post(INGEST, json=body)
            if response.status_code != 200 or response.json()["eventsAccepted"] != len(events):
                raise RuntimeError(f"ingest failed: {response.status_code} {response.text[:300]}")


async def _reader(
    client: httpx.AsyncClient, count: int, limit: int, rounds: int, figures: Figures
) -> None:
    params = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}
    for _ in range(rounds):
        seen: list[int] = []
        start = 1
        while start <= count:
            response = await client.get(EVENTS, params={**params, "from": start, "limit": limit})
            if response.status_code != 200:  # e.g. 504: the page took longer than allowed
                figures.failures[response.status_code] = (
                    figures.failures.get(response.status_code, 0) + 1
                )
                break
            body = response.json()
            figures.pages += 1
            figures.largest_page_mb = max(figures.largest_page_mb, len(response.content) / 2**20)
            numbers = [
                e.get("sequence_number") or e["envelope"]["sequence_number"] for e in body["events"]
            ]
            if not numbers:
                break
            seen += numbers
            if body.get("truncated") is True:
                figures.cut_pages += 1
                start = int(body["next_from"])
            else:
                start += limit
        figures.complete &= seen == list(range(1, count + 1))


async def _health(
    client: httpx.AsyncClient, every: float, stop: asyncio.Event, out: list[float]
) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        (await client.get("/health")).raise_for_status()
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(every)


async def _sample(pid: int, stop: asyncio.Event, figures: Figures) -> None:
    while not stop.is_set():
        figures.sampled_peak_mb = max(figures.sampled_peak_mb, _status_kb(pid, "VmRSS") / 1024)
        await asyncio.sleep(0.01)


async def _reads(url: str, pid: int, args: argparse.Namespace, figures: Figures) -> None:
    headers = {"X-API-Key": ADMIN_KEY}
    stop = asyncio.Event()
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=TIMEOUT_S) as readers,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as prober,
    ):
        idle = asyncio.Event()
        idle_probe = asyncio.create_task(
            _health(prober, args.health_every, idle, figures.idle_health_ms)
        )
        await asyncio.sleep(2.0)
        idle.set()
        await idle_probe
        sampler = asyncio.create_task(_sample(pid, stop, figures))
        health = asyncio.create_task(_health(prober, args.health_every, stop, figures.health_ms))
        started = time.perf_counter()
        try:
            await asyncio.gather(
                *(
                    _reader(readers, args.events, args.limit, args.rounds, figures)
                    for _ in range(args.readers)
                )
            )
        finally:
            figures.read_seconds = time.perf_counter() - started
            stop.set()
            await asyncio.gather(sampler, health)


def run(backend: str, args: argparse.Namespace) -> Figures:
    figures = Figures(backend)
    with tempfile.TemporaryDirectory(prefix="page-memory-") as scratch, _database(backend) as db:
        env = {
            **db,
            "DATA_DIR": str(Path(scratch) / "data"),
            "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
            "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
            "SEQUENCER_ENV": "test",
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "REQUEST_TIMEOUT_SECS": str(args.request_timeout),
        }
        with serverproc.server(Path(scratch), env) as (url, _log):
            pid = _server_pid()
            loadkit.register_agent(url, ADMIN_KEY)
            _ingest(url, args.events, args.payload_kb)
            time.sleep(0.5)
            figures.rss_before_mb = _status_kb(pid, "VmRSS") / 1024
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            asyncio.run(_reads(url, pid, args, figures))
            figures.hwm_mb = _status_kb(pid, "VmHWM") / 1024
    return figures


def _latency(ms: list[float]) -> str:
    ordered = sorted(ms)
    if not ordered:
        return "no probes"
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms "
        f"({len(ordered)} probes)"
    )


def report(f: Figures, args: argparse.Namespace) -> None:
    print(
        f"{f.backend}: {args.events} events of {args.payload_kb} KB, {args.readers} readers x "
        f"{args.rounds} round(s), limit {args.limit}, in {f.read_seconds:.1f} s"
    )
    print(f"  server RSS before reads  {f.rss_before_mb:8.1f} MB")
    print(
        f"  server RSS peak (VmHWM)  {f.hwm_mb:8.1f} MB   "
        f"(sampled VmRSS max {f.sampled_peak_mb:.1f} MB)"
    )
    print(f"  /health before reads     {_latency(f.idle_health_ms)}")
    print(f"  /health during reads     {_latency(f.health_ms)}")
    print(
        f"  pages {f.pages}, cut by bytes {f.cut_pages}, largest {f.largest_page_mb:.1f} MB; "
        f"every event exactly once per reader: {'yes' if f.complete else 'NO'}"
    )
    if f.failures:
        refused = ", ".join(f"{n} x HTTP {status}" for status, n in sorted(f.failures.items()))
        print(f"  pages refused            {refused}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--payload-kb", type=int, default=900)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--health-every", type=float, default=0.05)
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, help="the server's REQUEST_TIMEOUT_SECS"
    )
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        report(run(backend, args), args)


if __name__ == "__main__":
    main()

"""The recovery toolkit at scale on PostgreSQL (``make bench-recovery``).

Sequences ``--events`` events over ``--streams`` streams (1 in 50 encrypted) through the
real ingest pipeline into a scratch database, then times each tool as an operator runs it
(a ``python -m stateset_sequencer`` child process, start-up included):

- ``export-events --all-streams``;
- ``verify-events --all-streams`` and ``verify-events --all-streams --deep``;
- ``bulk-ingest`` of the export into an empty, migrated database behind a real server
  process on loopback (same sequencer identity, so receipts come out identical);
- ``backup`` of the source, then ``restore`` into a fresh database, its verify pass
  included (the restore time an operator waits for).

Floors are measured in the same run: the raw scan (one ``SELECT`` of every event column
joined with its receipt, decoded by asyncpg, nothing else); bare Ed25519 verification
(``ves.signing.verify`` on one core, and PyNaCl's ``VerifyKey.verify`` in a 2-thread
pool; every event needs two, agent and receipt, so the verify ceiling is the 2-thread
rate / 2); and HTTP ingest in batches of 100 (``--http-concurrency`` requests in
flight, bodies signed and encoded before the clock starts) against a server like the
one bulk-ingest sends to. Ratios are ours over the floor. verify-events is given twice:
the wall time of the child (start-up included) and its own rate (``--report``'s
``events_per_second``, the pass itself), which is what its ratio to the ceiling is of.
The database server, the children and this script share the machine's cores, so absolute
figures are lower bounds that move with the load (printed); nothing asserts on time.
Every child has a timeout; the servers and every scratch database are removed at the
end, on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import asyncpg
import nacl.signing

from stateset_sequencer.testing import kit, loadkit, pg
from stateset_sequencer.testing.serverproc import server
from stateset_sequencer.ves import signing

ADMIN_KEY = "ss_00000000" + "benchrecoveryadminkey00000000000"
CHILD_TIMEOUT_S = 1800.0
SEQUENCER_PK = signing.Signer(kit.SEQUENCER_SEED).public_key.hex()
_SCAN_SQL = (
    "SELECT e.*, r.sequencer_id, r.sequenced_at AS r_at, r.receipt_hash, r.signature_alg, "
    "r.sequencer_signature, r.sequencer_key_version FROM ves_events e "
    "LEFT JOIN ves_sequencer_receipts r ON r.event_id = e.event_id"
)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def cli(*args: str) -> float:
    """Run one sequencer-cli command; its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "stateset_sequencer", *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return elapsed


async def populate(dsn: str, events: int, streams: int) -> None:
    await loadkit.populate(dsn, loadkit.streams(streams, 0xBE4C0000), events // streams)


async def scan_floor(dsn: str) -> tuple[int, float]:
    conn = await asyncpg.connect(dsn)
    try:
        best = float("inf")
        count = 0
        for _ in range(2):  # the first pass also warms the cache the tools then read
            started = time.perf_counter()
            count = len(await conn.fetch(_SCAN_SQL))
            best = min(best, time.perf_counter() - started)
        return count, best
    finally:
        await conn.close()


def verify_floor(seconds: float = 2.0) -> float:
    signer = signing.Signer(kit.AGENT_SEED)
    items = [(h, signer.sign(h)) for h in (os.urandom(32) for _ in range(500))]
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for message, signature in items:
            signing.verify(signer.public_key, message, signature)
        done += len(items)
    return done / (time.perf_counter() - started)


def verify_floor_threads(seconds: float = 2.0, threads: int = 2) -> float:
    """PyNaCl ``VerifyKey.verify`` in a ``threads``-thread pool: signatures per second."""
    key = nacl.signing.SigningKey(kit.AGENT_SEED)
    verifier = key.verify_key
    signed = [key.sign(os.urandom(32)) for _ in range(500)]

    def work(deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            for message in signed:
                verifier.verify(message)
            done += len(signed)
        return done

    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        counts = list(pool.map(work, [started + seconds] * threads))
        return sum(counts) / (time.perf_counter() - started)


def http_bodies(events: int, streams: int) -> list[bytes]:
    """Signed ingest bodies of 100 events, round-robin over ``streams`` streams."""
    keys = loadkit.streams(streams, 0xBE4D0000)
    out = []
    for r in range(max(1, events // 100)):
        batch = [kit.event(r * 100 + i, stream=keys[r % len(keys)]) for i in range(100)]
        body = {"agentId": str(kit.AGENT_ID), "events": [e.to_wire() for e in batch]}
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


async def http_ingest(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Closed loop (aiohttp, as ``make bench-http``): ``concurrency`` clients, each sending
    its next body when the last one is answered; events per second."""
    queue = iter(bodies)
    async with aiohttp.ClientSession(
        base_url=url,
        headers={"X-API-Key": ADMIN_KEY, "Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=120),
        connector=aiohttp.TCPConnector(limit=concurrency),
    ) as session:

        async def one() -> int:
            done = 0
            for body in queue:
                async with session.post("/api/v1/ves/events/ingest", data=body) as response:
                    text = await response.text()
                    accepted = json.loads(text)["eventsAccepted"] if response.ok else 0
                if accepted != 100:
                    raise SystemExit(f"HTTP ingest: {response.status} {text[:300]}")
                done += int(accepted)
            return done

        started = time.perf_counter()
        total = sum(await asyncio.gather(*(one() for _ in range(concurrency))))
        return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument(
        "--http-events", type=int, default=20_000, help="events in the HTTP batch=100 floor"
    )
    parser.add_argument(
        "--http-concurrency", type=int, default=8, help="in-flight batch=100 requests"
    )
    args = parser.parse_args()
    events, cores = args.events, os.cpu_count() or 1
    print(f"bench-recovery: {events} events over {args.streams} streams, {cores} cores, {load()}")
    databases: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="bench-recovery-"))

    def database() -> str:
        made = pg.create_database("benchrec")
        databases.append(made.name)
        return made.dsn

    try:
        source = database()
        started = time.perf_counter()
        asyncio.run(populate(source, events, args.streams))
        print(f"setup (sign + ingest through the pipeline): {time.perf_counter() - started:.1f}s")

        rows, scan = asyncio.run(scan_floor(source))
        if rows != events:
            raise SystemExit(f"expected {events} rows, scanned {rows}")
        scan_rate = rows / scan
        ed_rate = verify_floor()
        ed_threads = verify_floor_threads()
        ceiling = ed_threads / 2
        figures: list[tuple[str, float, float, str]] = []
        own: list[tuple[str, float]] = []

        export = work / "events.ndjson"
        t = cli("export-events", "--all-streams", "--output", str(export), "--database-url", source)
        figures.append(("export-events", t, events / t, f"{events / t / scan_rate:.2f} x scan"))
        for extra in ([], ["--deep"]):
            report = work / "verify.json"
            t = cli("verify-events", "--all-streams", "--database-url", source,
                    "--sequencer-public-key", SEQUENCER_PK, "--report", str(report),
                    *extra)  # fmt: skip
            name = " ".join(["verify-events", *extra])
            figures.append((name, t, events / t, f"{events / t / ceiling:.2f} x ed25519 ceiling"))
            own.append((name, float(json.loads(report.read_text())["events_per_second"])))

        target = database()
        cli("migrate", "--database-url", target)
        env = {
            "DATABASE_URL": target,
            "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
            "VES_SEQUENCER_ID": str(uuid.UUID(int=7)),
            "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
            "SEQUENCER_ENV": "test",
        }
        bodies = http_bodies(args.http_events, args.streams)
        with server(work, env) as (url, _out):
            loadkit.register_agent(url, ADMIN_KEY)
            t = cli("bulk-ingest", "--file", str(export), "--url", url, "--api-key", ADMIN_KEY,
                    "--batch-size", "1000")  # fmt: skip
            # The same server, on streams of its own: HTTP ingest as a client that only
            # sends would see it.
            http_rate = asyncio.run(http_ingest(url, bodies, args.http_concurrency))
        bulk_rate = events / t
        figures.append(
            ("bulk-ingest (HTTP)", t, bulk_rate,
             f"{bulk_rate / scan_rate:.2f} x scan, {bulk_rate / http_rate:.2f} x HTTP batch=100")
        )  # fmt: skip

        backup_dir = work / "backup"
        t_backup = cli("backup", "--output", str(backup_dir), "--database-url", source)
        figures.append(
            ("backup", t_backup, events / t_backup, f"{events / t_backup / scan_rate:.2f} x scan")
        )
        fresh = database()
        t = cli("restore", str(backup_dir), "--database-url", fresh,
                "--sequencer-public-key", SEQUENCER_PK)  # fmt: skip
        figures.append(
            ("restore (+ verify)", t, events / t, f"{events / t / ceiling:.2f} x ed25519 ceiling")
        )

        print(f"floor: raw scan {scan_rate:,.0f} events/s ({scan:.2f}s for {rows} rows)")
        print(
            f"floor: bare Ed25519 verify {ed_rate:,.0f}/s on one core, {ed_threads:,.0f}/s "
            f"on 2 threads (VerifyKey.verify); ceiling for 2 per event: {ceiling:,.0f} events/s"
        )
        print(
            f"floor: HTTP ingest, batches of 100, {args.http_concurrency} in flight: "
            f"{http_rate:,.0f} events/s ({len(bodies) * 100} events)"
        )
        print(f"{'tool':<30}{'seconds':>9}{'events/s':>11}  ratio")
        for name, seconds, rate, ratio in figures:
            print(f"{name:<30}{seconds:>9.1f}{rate:>11,.0f}  {ratio}")
        for name, rate in own:
            print(
                f"{name + ' (its own pass)':<39}{rate:>11,.0f}  "
                f"{rate / ceiling:.2f} x ed25519 ceiling"
            )
        print(f"(child processes, start-up included; {load()})")
    finally:
        for name in databases:
            pg.drop_database(name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

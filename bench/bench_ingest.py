"""Ingest throughput through the service layer, no HTTP (``make bench-ingest``).

For SQLite and PostgreSQL, batches of 1, 100 and 1000, on 1 stream and on 64 streams, with
16 concurrent writers: events/s and per-batch latency percentiles, and the ratio to a floor
measured in the same run on the same events: a bare bulk load of the same rows into an
unindexed table (COPY on PostgreSQL, one executemany transaction on SQLite) plus bare
PyNaCl verification. Figures only; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import nacl.signing

from stateset_sequencer.sequencer.ingest import Sequencer
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.ves.envelope import VesEventEnvelope
from stateset_sequencer.ves.jsontext import payload_text

WRITERS = 16


def build(total: int, batch: int, streams: int) -> list[list[list[VesEventEnvelope]]]:
    """Per writer, its batches; writers spread over the streams."""
    keys = [StreamKey(kit.TENANT, uuid.UUID(int=0x9000 + s)) for s in range(streams)]
    per_writer = max(1, total // (WRITERS * batch))
    return [
        [
            [
                kit.event(w * 1_000_000 + r * batch + i, stream=keys[w % streams])
                for i in range(batch)
            ]
            for r in range(per_writer)
        ]
        for w in range(WRITERS)
    ]


def rows_of(events: list[VesEventEnvelope]) -> list[tuple[object, ...]]:
    return [
        (
            str(e.event_id), str(e.tenant_id), str(e.store_id), e.entity_type, e.entity_id,
            e.event_type, e.created_at, payload_text(e), e.payload_plain_hash, e.agent_signature, n,
        )
        for n, e in enumerate(events, 1)
    ]  # fmt: skip


async def floor_copy_pg(dsn: str, rows: list[tuple[object, ...]]) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE floor_events (event_id text, tenant_id text, store_id text,"
            " entity_type text, entity_id text, event_type text, created_at text, payload text,"
            " plain bytea, sig bytea, seq bigint)"
        )
        start = time.perf_counter()
        await conn.copy_records_to_table("floor_events", records=rows)
        return len(rows) / (time.perf_counter() - start)
    finally:
        await conn.close()


def floor_copy_sqlite(path: Path, rows: list[tuple[object, ...]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE floor_events (event_id, tenant_id, store_id, entity_type, entity_id,"
            " event_type, created_at, payload, plain, sig, seq)"
        )
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO floor_events VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.execute("COMMIT")
        return len(rows) / (time.perf_counter() - start)
    finally:
        conn.close()


def floor_verify(events: list[VesEventEnvelope]) -> float:
    key = nacl.signing.VerifyKey(kit.AGENT.public_key)
    pairs = [(e.signing_hash(), e.agent_signature) for e in events]
    start = time.perf_counter()
    for message, signature in pairs:
        key.verify(message, signature)
    return len(pairs) / (time.perf_counter() - start)


async def run_case(
    store: Store, plan: list[list[list[VesEventEnvelope]]]
) -> tuple[float, list[float]]:
    seq = Sequencer(store, kit.sequencer(store).receipt_signer, key_cache_ttl_seconds=60)
    latencies: list[float] = []

    async def writer(batches: list[list[VesEventEnvelope]]) -> int:
        done = 0
        for batch in batches:
            t0 = time.perf_counter()
            result = await seq.ingest(kit.AGENT_ID, batch)
            latencies.append(time.perf_counter() - t0)
            done += result.events_accepted
        return done

    start = time.perf_counter()
    counts = await asyncio.gather(*(writer(b) for b in plan))
    elapsed = time.perf_counter() - start
    seq.close()
    expected = sum(len(b) for w in plan for b in w)
    if sum(counts) != expected:
        raise SystemExit(f"bench sanity: accepted {sum(counts)} of {expected}")
    return expected / elapsed, latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=8000, help="events per case")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--batches", default="1,100,1000", help="batch sizes to run")
    args = parser.parse_args()
    print(f"bench-ingest: {args.events} events per case, {WRITERS} concurrent writers")
    header = (
        f"{'backend':<9}{'batch':>6}{'streams':>8}{'events/s':>11}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'floor ev/s':>12}{'ratio':>7}"
    )
    print(header)
    for backend in args.backends.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for streams in (1, 64):
                plan = build(args.events, batch, streams)
                events = [e for w in plan for b in w for e in b]
                rows = rows_of(events)
                verify_rate = floor_verify(events)
                with tempfile.TemporaryDirectory() as tmp:
                    if backend == "sqlite":
                        store = await open_store(
                            parse_database_url(f"sqlite:///{tmp}/bench.db", Path(tmp))
                        )
                        copy_rate = floor_copy_sqlite(Path(tmp) / "floor.db", rows)
                        name = None
                    else:
                        name, dsn = pg.create_database("seqbench")
                        store = await open_store(
                            parse_database_url(dsn, Path(tmp)), max_connections=16
                        )
                        copy_rate = await floor_copy_pg(dsn, rows)
                    try:
                        await store.migrate()
                        await kit.register(store)
                        rate, lat = await run_case(store, plan)
                    finally:
                        await store.close()
                        if name is not None:
                            pg.drop_database(name)
                floor = 1 / (1 / copy_rate + 1 / verify_rate)
                print(
                    f"{backend:<9}{batch:>6}{streams:>8}{rate:>11,.0f}{pct(lat, 0.5):>9.1f}"
                    f"{pct(lat, 0.95):>9.1f}{pct(lat, 0.99):>9.1f}"
                    f"{floor:>12,.0f}{rate / floor:>7.2f}"
                )
    print("floor = bare bulk load of the same rows (unindexed) then bare PyNaCl verify, serially;")
    print("ratio = our events/s over that floor (higher is better; 1.0 means at the floor).")


if __name__ == "__main__":
    asyncio.run(main())

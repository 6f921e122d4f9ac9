"""Ingest throughput through the service layer, no HTTP (``make bench-ingest``).

For SQLite and PostgreSQL, batches of 1, 100 and 1000, on 1 stream and on 64 streams, with
16 concurrent writers: events/s and per-batch latency percentiles, and the ratio to a floor
measured in the same run on the same events: a bare bulk load of the same rows into an
unindexed table (COPY on PostgreSQL, one executemany transaction on SQLite) plus bare
PyNaCl verification. Figures only; nothing asserts on time.

Then, unless ``--no-growth``, the cost as the work grows: the same writers (batches of 1
and 100) on an empty migrated database and on one that already holds ``--growth-preload``
events over ``--growth-streams`` streams, continuing those streams and opening new ones,
and the ratio of the two rates (the target is 0.8 or better). The preload is set-based SQL
(``generate_series`` on PostgreSQL, a recursive CTE on SQLite) into every table the append
path reads or writes, with the real constraints in force, then ``VACUUM ANALYZE``
(``ANALYZE`` on SQLite); the rows carry no valid signatures, which ingest never re-checks.
Scratch databases are dropped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    await seq.aclose()
    expected = sum(len(b) for w in plan for b in w)
    if sum(counts) != expected:
        raise SystemExit(f"bench sanity: accepted {sum(counts)} of {expected}")
    return expected / elapsed, latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# --- growth: the same ingest on an empty database and on one that holds many events ----------

GROWTH_BATCHES = (1, 100)
PRELOAD_STATEMENT_TIMEOUT_S = 300  # every preload statement; the whole preload is a few
PRELOAD_CHUNK = 250_000  # events per INSERT on PostgreSQL, so progress is steady
VERSIONS_PER_ENTITY = 10  # preloaded events per entity: many entities per stream
SEQUENCER_ID = uuid.UUID(int=7)  # kit.sequencer's receipt signer
STORED_BASE = 0xA0000  # store ids of the preloaded streams
FRESH_BASE = 0xB00000  # store ids of new streams, a block per case


@dataclass(frozen=True)
class Shape:
    events: int
    streams: int

    @property
    def per_stream(self) -> int:
        return math.ceil(self.events / self.streams)

    @property
    def entities(self) -> int:
        """Entities per stream; entity k of a stream is ``ORD-G{k}``."""
        return max(1, self.per_stream // VERSIONS_PER_ENTITY)

    def stream_keys(self) -> list[StreamKey]:
        return [StreamKey(kit.TENANT, uuid.UUID(int=STORED_BASE + s)) for s in range(self.streams)]


@dataclass
class Measured:
    rate: float
    latencies: list[float]

    def cells(self) -> str:
        lat = self.latencies
        return (
            f"{self.rate:>10,.0f}{pct(lat, 0.5):>8.1f}{pct(lat, 0.95):>8.1f}{pct(lat, 0.99):>8.1f}"
        )


def growth_plan(
    total: int, batch: int, keys: list[StreamKey], entities: int | None, rng: random.Random
) -> list[list[list[VesEventEnvelope]]]:
    """Per writer, its batches, each batch on the next of ``keys`` in turn (16 writers at
    once touch 16 different streams). With ``entities``, events continue the preloaded
    entities ``ORD-G0..`` (their versions exist); else every event opens an entity. Each
    event carries a command id, so the command lookup and its insert run."""
    per_writer = max(1, total // (WRITERS * batch))
    plan: list[list[list[VesEventEnvelope]]] = []
    n = 0
    for w in range(WRITERS):
        batches: list[list[VesEventEnvelope]] = []
        for r in range(per_writer):
            stream = keys[(w + r * WRITERS) % len(keys)]
            events = []
            for _ in range(batch):
                n += 1
                entity = f"ORD-G{rng.randrange(entities)}" if entities else f"ORD-N{n}"
                events.append(
                    kit.event(
                        n,
                        stream=stream,
                        entity_id=entity,
                        command_id=uuid.UUID(int=rng.getrandbits(128)),
                    )
                )
            batches.append(events)
        plan.append(batches)
    return plan


# One statement per table, every row generated in the database. Event n of the preload is
# event (n-1) // S + 1 of stream (n-1) % S: streams interleave in insertion order as they
# would in a live log. Random UUIDs for event and command ids (random index insertions, as
# in production); hashes and signatures of the right lengths, none of them valid.
_PG_PRELOAD_EVENTS = """
INSERT INTO ves_events (
    event_id, command_id, ves_version, tenant_id, store_id, source_agent_id, agent_key_id,
    entity_type, entity_id, event_type, created_at, created_at_str, sequenced_at,
    payload_kind, payload, payload_encrypted, payload_plain_hash, payload_cipher_hash,
    event_signing_hash, agent_signature, agent_signature_scheme, agent_signature_bundle,
    sequence_number, base_version
)
SELECT gen_random_uuid(), gen_random_uuid(), 2, $1, ($2::uuid[])[1 + (n - 1) % $5], $3, 1,
       'order', 'ORD-G' || (((n - 1) / $5) % $6), 'order.created', t,
       to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), t,
       0, format('{"n":%s,"total":12.5}', n)::json, NULL, sha256(int8send(n)),
       '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea,
       sha256(int8send(-n)), sha512(int8send(n)), NULL, NULL,
       (n - 1) / $5 + 1, NULL
FROM generate_series($4::bigint, $7::bigint) AS g(n),
     LATERAL (SELECT timestamptz '2025-06-01 00:00:00+00' + n * interval '1 millisecond') AS c(t)
"""
_PG_PRELOAD_DERIVED = [
    "INSERT INTO ves_event_ids (event_id, tenant_id, store_id) "
    "SELECT event_id, tenant_id, store_id FROM ves_events",
    "INSERT INTO ves_sequencer_receipts (event_id, tenant_id, store_id, sequencer_id, "
    "sequence_number, sequenced_at, receipt_hash, signature_alg, sequencer_signature, "
    "sequencer_key_version) SELECT event_id, tenant_id, store_id, $1, sequence_number, "
    "sequenced_at, sha256(uuid_send(event_id)), 'ed25519', sha512(uuid_send(event_id)), 0 "
    "FROM ves_events",
    "INSERT INTO ves_command_dedupe (tenant_id, store_id, command_id, event_id, created_at) "
    "SELECT tenant_id, store_id, command_id, event_id, sequenced_at FROM ves_events "
    "WHERE command_id IS NOT NULL",
    "INSERT INTO entity_versions (tenant_id, store_id, entity_type, entity_id, version) "
    "SELECT tenant_id, store_id, entity_type, entity_id, count(*) FROM ves_events "
    "GROUP BY tenant_id, store_id, entity_type, entity_id",
    # The counters at each stream's head, so that new ingest continues every stream.
    "INSERT INTO sequence_counters (tenant_id, store_id, current_sequence) "
    "SELECT tenant_id, store_id, max(sequence_number) FROM ves_events "
    "GROUP BY tenant_id, store_id",
]
GROWTH_TABLES = [
    "ves_events",
    "ves_event_ids",
    "ves_sequencer_receipts",
    "ves_command_dedupe",
    "entity_versions",
    "sequence_counters",
]


async def pg_connect(dsn: str) -> asyncpg.Connection[Any]:
    timeout_ms = str(PRELOAD_STATEMENT_TIMEOUT_S * 1000)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        dsn, timeout=10, server_settings={"statement_timeout": timeout_ms}
    )
    return conn


async def preload_pg(dsn: str, shape: Shape) -> str:
    """Fill the append path's tables; the VACUUM ANALYZE after it; what it took."""
    conn = await pg_connect(dsn)
    try:
        start = time.perf_counter()
        stores = [k.store_id for k in shape.stream_keys()]
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            for first in range(1, shape.events + 1, PRELOAD_CHUNK):
                last = min(shape.events, first + PRELOAD_CHUNK - 1)
                await conn.execute(
                    _PG_PRELOAD_EVENTS, kit.TENANT, stores, kit.AGENT_ID, first,
                    shape.streams, shape.entities, last,
                )  # fmt: skip
            await conn.execute(_PG_PRELOAD_DERIVED[0])
            await conn.execute(_PG_PRELOAD_DERIVED[1], SEQUENCER_ID)
            for sql in _PG_PRELOAD_DERIVED[2:]:
                await conn.execute(sql)
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        for table in GROWTH_TABLES:
            await conn.execute(f"VACUUM ANALYZE {table}")
        # The preload's dirty pages written out now, not by the cases that follow.
        await conn.execute("CHECKPOINT")
        vacuumed = time.perf_counter() - start
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        indexes = await conn.fetchval(
            "SELECT pg_size_pretty(sum(pg_indexes_size(c.oid))) FROM pg_class c "
            "WHERE c.relname = ANY($1::text[])",
            GROWTH_TABLES,
        )
        return (
            f"preloaded in {loaded:.1f} s (INSERT ... SELECT FROM generate_series), "
            f"VACUUM ANALYZE and CHECKPOINT {vacuumed:.1f} s; database {size}, of which "
            f"indexes of the append path's tables {indexes}"
        )
    finally:
        await conn.close()


def _sqlite_uuid(n: str, salt: int) -> str:
    """A UUID-shaped text computed from ``n``: its first 32 bits a bijection of n (odd
    multiplier mod 2^32), so ids are unique and scattered over the key space."""
    m = [2654435761, 2246822519, 3266489917, 668265263, 374761393]
    parts = [f"(({n}) * {m[(salt + i) % 5]} + {salt}) % 4294967296" for i in range(5)]
    return (
        f"printf('%08x-%04x-4%03x-%04x-%08x%04x', {parts[0]}, {parts[1]} % 65536, "
        f"{parts[2]} % 4096, 32768 + {parts[3]} % 16384, {parts[4]}, {parts[1]} / 65536)"
    )


_SQLITE_PRELOAD_EVENTS = f"""
WITH RECURSIVE g(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM g WHERE n < ?)
INSERT INTO ves_events (
    event_id, command_id, ves_version, tenant_id, store_id, source_agent_id, agent_key_id,
    entity_type, entity_id, event_type, created_at, created_at_str, sequenced_at,
    payload_kind, payload, payload_encrypted, payload_plain_hash, payload_cipher_hash,
    event_signing_hash, agent_signature, agent_signature_scheme, agent_signature_bundle,
    sequence_number, base_version
)
SELECT {_sqlite_uuid("n", 0)}, {_sqlite_uuid("n", 1)}, 2, ?1,
       printf('00000000-0000-0000-0000-%012x', {STORED_BASE} + (n - 1) % ?2), ?3, 1,
       'order', 'ORD-G' || (((n - 1) / ?2) % ?4), 'order.created',
       strftime('%Y-%m-%dT%H:%M:%S', '2025-06-01', '+' || (n / 1000) || ' seconds')
           || printf('.%06dZ', (n % 1000) * 1000),
       strftime('%Y-%m-%dT%H:%M:%fZ', '2025-06-01', '+' || (n / 1000.0) || ' seconds'),
       strftime('%Y-%m-%dT%H:%M:%S', '2025-06-01', '+' || (n / 1000) || ' seconds')
           || printf('.%06dZ', (n % 1000) * 1000),
       0, printf('{{"n":%d,"total":12.5}}', n), NULL, randomblob(32), zeroblob(32),
       randomblob(32), randomblob(64), NULL, NULL, (n - 1) / ?2 + 1, NULL
FROM g
"""


def preload_sqlite(path: Path, shape: Shape) -> str:
    conn = sqlite3.connect(path, isolation_level=None)
    deadline = time.monotonic() + PRELOAD_STATEMENT_TIMEOUT_S
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 100_000)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = OFF")  # the preload only; ingest runs as configured
        conn.execute("PRAGMA cache_size = -262144")
        start = time.perf_counter()
        conn.execute("BEGIN")
        tenant, agent = str(kit.TENANT), str(kit.AGENT_ID)
        sql = _SQLITE_PRELOAD_EVENTS.replace("SELECT ? UNION", "SELECT ?5 UNION").replace(
            "n < ?)", "n < ?6)"
        )
        for first in range(1, shape.events + 1, PRELOAD_CHUNK):
            last = min(shape.events, first + PRELOAD_CHUNK - 1)
            conn.execute(sql, (tenant, shape.streams, agent, shape.entities, first, last))
        conn.execute(
            "INSERT INTO ves_event_ids (event_id, tenant_id, store_id) "
            "SELECT event_id, tenant_id, store_id FROM ves_events"
        )
        conn.execute(
            "INSERT INTO ves_sequencer_receipts (event_id, tenant_id, store_id, sequencer_id, "
            "sequence_number, sequenced_at, receipt_hash, signature_alg, sequencer_signature, "
            "sequencer_key_version) SELECT event_id, tenant_id, store_id, ?, sequence_number, "
            "sequenced_at, randomblob(32), 'ed25519', randomblob(64), 0 FROM ves_events",
            (str(SEQUENCER_ID),),
        )
        conn.execute(
            "INSERT INTO ves_command_dedupe (tenant_id, store_id, command_id, event_id, "
            "created_at) SELECT tenant_id, store_id, command_id, event_id, sequenced_at "
            "FROM ves_events WHERE command_id IS NOT NULL"
        )
        conn.execute(
            "INSERT INTO entity_versions (tenant_id, store_id, entity_type, entity_id, version) "
            "SELECT tenant_id, store_id, entity_type, entity_id, count(*) FROM ves_events "
            "GROUP BY tenant_id, store_id, entity_type, entity_id"
        )
        conn.execute(
            "INSERT INTO sequence_counters (tenant_id, store_id, current_sequence) "
            "SELECT tenant_id, store_id, max(sequence_number) FROM ves_events "
            "GROUP BY tenant_id, store_id"
        )
        conn.execute("COMMIT")
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        analyzed = time.perf_counter() - start
    finally:
        conn.close()
    size = path.stat().st_size / 2**20
    return (
        f"preloaded in {loaded:.1f} s (INSERT ... WITH RECURSIVE), ANALYZE {analyzed:.1f} s "
        f"(no VACUUM: nothing was deleted); database {size:,.0f} MB"
    )


@contextlib.asynccontextmanager
async def scratch_db(backend: str, tmp: str, label: str) -> AsyncIterator[str]:
    """A scratch database (its DSN, or the SQLite file's path), dropped afterwards."""
    if backend == "sqlite":
        yield f"{tmp}/{label}.db"
        return
    name, dsn = pg.create_database("seqgrowth")
    try:
        yield dsn
    finally:
        pg.drop_database(name)


async def opened(backend: str, tmp: str, dsn: str) -> Store:
    url = f"sqlite:///{dsn}" if backend == "sqlite" else dsn
    return await open_store(parse_database_url(url, Path(tmp)), max_connections=16)


async def with_store(backend: str, tmp: str, dsn: str, work: Callable[[Store], Any]) -> Any:
    store = await opened(backend, tmp, dsn)
    try:
        return await work(store)
    finally:
        await store.close()


async def migrated(store: Store) -> None:
    await store.migrate()
    await kit.register(store)


async def growth_case(
    backend: str, tmp: str, dsn: str, plan: list[list[list[VesEventEnvelope]]]
) -> Measured:
    """One case on a store opened for it (fresh connections, fresh plans)."""

    async def work(store: Store) -> Measured:
        rate, lat = await run_case(store, plan)
        return Measured(rate, lat)

    result: Measured = await with_store(backend, tmp, dsn, work)
    return result


GrowthResults = dict[tuple[int, str], tuple[Measured, Measured]]


async def growth(args: argparse.Namespace, backends: list[str]) -> None:
    shape = Shape(args.growth_preload, args.growth_streams)
    batches = [int(b) for b in args.growth_batches.split(",")]
    print()
    print(
        f"growth: {args.events} events per case, {WRITERS} writers, each batch on the next of "
        f"{shape.streams} streams; an empty database vs one holding {shape.events:,} events "
        f"over {shape.streams} streams ({shape.per_stream:,} a stream, {shape.entities:,} "
        "entities a stream), each event with a command id; each case runs on the empty "
        "database then at once on the full one, so both see the same load on the machine"
    )
    results: dict[str, GrowthResults] = {}
    for backend in backends:
        if backend == "sqlite" and shape.events > args.growth_sqlite_max:
            print(
                f"  sqlite: skipped: a preload of {shape.events:,} events takes minutes here "
                "(1,000,000 took 255 s on this 2-core machine: random-key inserts into six "
                "B-trees through SQLite's one writer), past this section's budget; "
                f"--growth-sqlite-max raises the limit of {args.growth_sqlite_max:,}"
            )
            continue
        with tempfile.TemporaryDirectory() as tmp:
            async with (
                scratch_db(backend, tmp, "empty") as empty,
                scratch_db(backend, tmp, "grown") as grown,
            ):
                for dsn in (empty, grown):
                    await with_store(backend, tmp, dsn, migrated)
                # The preload runs with no service open on the database.
                if backend == "sqlite":
                    note = await asyncio.to_thread(preload_sqlite, Path(grown), shape)
                else:
                    note = await preload_pg(grown, shape)
                print(f"  {backend}: {note}", flush=True)
                rng = random.Random(1)
                out: GrowthResults = {}
                for i, batch in enumerate(batches):
                    for kind in ("stored", "new"):
                        pair: list[Measured] = []
                        for dsn in (empty, grown):
                            if kind == "stored":
                                keys, entities = shape.stream_keys(), shape.entities
                            else:  # streams no case has used, on either database
                                base = FRESH_BASE + (2 * i + len(pair)) * 0x1000
                                keys = [
                                    StreamKey(kit.TENANT, uuid.UUID(int=base + s))
                                    for s in range(shape.streams)
                                ]
                                entities = None
                            plan = growth_plan(args.events, batch, keys, entities, rng)
                            pair.append(await growth_case(backend, tmp, dsn, plan))
                        out[(batch, kind)] = (pair[0], pair[1])
        results[backend] = out
    head = f"{'ev/s':>10}{'p50':>8}{'p95':>8}{'p99':>8}"
    print(f"{'backend':<9}{'batch':>6}  {'streams':<8}{head}  |{head}{'ratio':>7}")
    print(f"{'':<25}{'empty database':^34}|{f'{shape.events:,} events stored':^34}")
    for backend, out in results.items():
        for (batch, kind), (before, after) in sorted(out.items()):
            print(
                f"{backend:<9}{batch:>6}  {kind:<8}{before.cells()}  |{after.cells()}"
                f"{after.rate / before.rate:>7.2f}"
            )
    print("stored = each batch continues a preloaded stream and its entities (on the empty")
    print("database the same streams, empty); new = each batch opens a stream. Latencies in ms;")
    print("ratio = full-database rate over empty-database rate (target >= 0.80).")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=8000, help="events per case")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--batches", default="1,100,1000", help="batch sizes to run")
    parser.add_argument(
        "--growth-preload", type=int, default=1_000_000, help="events stored before growth"
    )
    parser.add_argument("--growth-streams", type=int, default=100, help="streams they fill")
    parser.add_argument(
        "--growth-batches",
        default=",".join(map(str, GROWTH_BATCHES)),
        help="batch sizes of the growth section",
    )
    parser.add_argument(
        "--growth-sqlite-max",
        type=int,
        default=200_000,
        help="largest preload the growth section runs on SQLite (slow to preload)",
    )
    parser.add_argument("--no-growth", action="store_true", help="skip the growth section")
    args = parser.parse_args()
    backends = args.backends.split(",")
    print(f"bench-ingest: {args.events} events per case, {WRITERS} concurrent writers")
    header = (
        f"{'backend':<9}{'batch':>6}{'streams':>8}{'events/s':>11}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'floor ev/s':>12}{'ratio':>7}"
    )
    print(header)
    for backend in backends:
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
    if not args.no_growth:
        await growth(args, backends)


if __name__ == "__main__":
    asyncio.run(main())

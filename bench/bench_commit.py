"""Commitment and proof rates on one large stream (``make bench-commit``).

Sequences ``--events`` events (100,000 by default) into one stream through the real ingest
pipeline, on SQLite or a scratch PostgreSQL database, then:

- **commit**: the commitment engine commits the whole stream in ranges of ``--batch``
  (1024, the worker's default), each read from the store, hashed and inserted, timed per
  commitment (p50/p95/p99);
- **proofs**: an inclusion proof for every event, per commitment from its tree
  (``all_proofs``), and one by one as the proof route asks for them (a lookup of the
  commitment holding the sequence each time), with the trees cached by the commits and
  from a cold cache (every tree rebuilt from the stored events once);
- **floor**: the same leaves and trees hashed in memory with nothing else (``ves.merkle``),
  the rate no store-backed commit can beat; the ratio is ours over it.

Figures are lower bounds that move with the machine's load (printed); nothing asserts on
time. The scratch database is dropped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

from stateset_sequencer.sequencer.commitments import CommitmentEngine, TreeCache
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import Store
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.ves import hashing, merkle


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def populate(store: Store, count: int) -> None:
    await kit.register(store)
    seq = kit.sequencer(store)
    try:
        for start in range(0, count, 1000):
            events = [kit.event(i) for i in range(start, min(start + 1000, count))]
            result = await seq.ingest(kit.AGENT_ID, events)
            assert result.events_rejected == 0, result.rejections
    finally:
        seq.close()


async def run(backend: str, events: int, batch: int) -> None:
    async with AsyncExitStack() as stack:
        if backend == "postgres":
            url = await stack.enter_async_context(pg.scratch_database("benchcommit"))
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = f"sqlite:///{folder / 'bench.db'}"
        store = await open_store(parse_database_url(url, Path()))
        stack.push_async_callback(store.close)
        await store.migrate()
        started = time.perf_counter()
        await populate(store, events)
        print(f"{backend}: {events} events sequenced in {time.perf_counter() - started:.1f} s")

        engine = CommitmentEngine(store, store, TreeCache(max_nodes=4 * events))
        took: list[float] = []
        started = time.perf_counter()
        for first in range(1, events + 1, batch):
            t0 = time.perf_counter()
            await engine.create(kit.STREAM, first, min(first + batch - 1, events))
            took.append(time.perf_counter() - t0)
        commit_s = time.perf_counter() - started

        async def all_proofs(on: CommitmentEngine) -> float:
            t0 = time.perf_counter()
            for seq in range(1, events + 1):
                await on.proof(kit.STREAM, seq)
            return time.perf_counter() - t0

        rows = await store.list_commitments(kit.STREAM)
        t0 = time.perf_counter()
        proved = sum([len(await engine.all_proofs(row)) for row in rows])
        batch_s = time.perf_counter() - t0
        assert proved == events
        warm_s = await all_proofs(engine)
        cold_s = await all_proofs(CommitmentEngine(store, store, TreeCache(max_nodes=4 * batch)))

        inputs = await store.leaf_inputs(kit.STREAM, 1, events)
        t0 = time.perf_counter()
        for first in range(0, events, batch):
            chunk = inputs[first : first + batch]
            leaves = [
                hashing.leaf_hash(
                    kit.TENANT,
                    kit.STORE_ID,
                    i.sequence_number,
                    i.event_signing_hash,
                    i.agent_signature,
                )
                for i in chunk
            ]
            merkle.tree_levels(leaves)
        floor_s = time.perf_counter() - t0

        rate = events / commit_s
        floor = events / floor_s
        print(
            f"{backend}: commit {rate:,.0f} events/s in {len(took)} commitments of {batch} "
            f"(p50 {pct(took, 0.5) * 1000:.1f} ms, p95 {pct(took, 0.95) * 1000:.1f} ms, "
            f"p99 {pct(took, 0.99) * 1000:.1f} ms); floor (hashing only) {floor:,.0f} events/s; "
            f"ours/floor {rate / floor:.2f}"
        )
        print(
            f"{backend}: proofs per commitment {events / batch_s:,.0f}/s; one by one "
            f"{events / warm_s:,.0f}/s with cached trees, {events / cold_s:,.0f}/s "
            f"rebuilding each tree once; commit + all proofs "
            f"{events / (commit_s + batch_s):,.0f} events/s; "
            f"max RSS {rss_mb():.0f} MiB; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        asyncio.run(run(backend.strip(), args.events, args.batch))


if __name__ == "__main__":
    main()

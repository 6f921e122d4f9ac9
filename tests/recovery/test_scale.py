"""The recovery toolkit at a realistic scale, end to end on PostgreSQL.

100,000 events over 10 streams (1 in 50 encrypted) are sequenced by the real ingest
pipeline, exported, the database is dropped, a new empty one is migrated, a real server
process is started on it with the same sequencer identity, the export is bulk-ingested
over HTTP, ``verify-events --all-streams`` passes (at this size the verifier checks
signatures in worker processes), and a second export matches the first record by record:
same events under the same numbers, same signing hashes, same receipts (hash and
signature). Each phase prints its time (``pytest -s``); nothing asserts on time.

Also here: the corruption drills with signatures verified in worker processes, a path
the small ``test_verify`` streams never take.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stateset_sequencer.recovery import verify
from stateset_sequencer.recovery.export import read_export
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, loadkit, pg
from stateset_sequencer.testing.serverproc import server
from tests.recovery.conftest import SEQUENCER_PK, Db, populate

EVENTS = 100_000
STREAMS = 10
ENCRYPT_EVERY = 50
ADMIN_KEY = "ss_00000000" + "scaletestadminkey000000000000000"
# Generous bounds for a loaded 2-core machine: a hung child fails the test rather than
# the whole run; they are not performance expectations.
CHILD_TIMEOUT_S = 900


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def _streams() -> list[StreamKey]:
    return loadkit.streams(STREAMS, 0x5CA1E000)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "stateset_sequencer", *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result


@contextmanager
def _phase(name: str, timings: dict[str, float]) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - started
    print(f"  {name}: {timings[name]:.1f}s", flush=True)


async def _populate(dsn: str) -> None:
    await loadkit.populate(dsn, _streams(), EVENTS // STREAMS, encrypt_every=ENCRYPT_EVERY)


def _compare(before: Path, after: Path) -> int:
    """Walk both exports together (streaming: neither is held in memory)."""
    count = 0
    for old, new in zip(read_export(before), read_export(after), strict=True):
        where = (old.envelope.tenant_id, old.envelope.store_id, old.sequence_number)
        assert (new.envelope.tenant_id, new.envelope.store_id, new.sequence_number) == where
        assert new.envelope.event_id == old.envelope.event_id, where
        assert new.signing_hash == old.signing_hash, where
        assert old.receipt is not None and new.receipt is not None, where
        assert new.receipt.receipt_hash == old.receipt.receipt_hash, where
        assert new.receipt.sequencer_signature == old.receipt.sequencer_signature, where
        assert new.receipt.sequence_number == old.receipt.sequence_number, where
        count += 1
    return count


def test_export_drop_reingest_verify_at_scale(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    databases: list[str] = []
    print(f"\nscale test: {EVENTS} events, {STREAMS} streams ({_load()})")
    try:
        source = pg.create_database("seqscale")
        databases.append(source.name)
        with _phase("sign + ingest (pipeline)", timings):
            asyncio.run(_populate(source.dsn))

        export = tmp_path / "events.ndjson"
        with _phase("export-events --all-streams", timings):
            _run("export-events", "--all-streams", "--output", str(export),
                 "--database-url", source.dsn)  # fmt: skip

        with _phase("drop + create + migrate", timings):
            pg.drop_database(source.name)
            databases.remove(source.name)
            target = pg.create_database("seqscale")
            databases.append(target.name)
            _run("migrate", "--database-url", target.dsn)

        env = {
            "DATABASE_URL": target.dsn,
            "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
            "VES_SEQUENCER_ID": str(uuid.UUID(int=7)),
            "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
            "SEQUENCER_ENV": "test",
        }
        with server(tmp_path, env) as (url, _out):
            loadkit.register_agent(url, ADMIN_KEY)
            with _phase("bulk-ingest (HTTP)", timings):
                ingested = _run("bulk-ingest", "--file", str(export), "--url", url,
                                "--api-key", ADMIN_KEY, "--batch-size", "1000")  # fmt: skip
        assert f"{EVENTS} events: {EVENTS} accepted, 0 replayed, 0 rejected" in ingested.stdout

        with _phase("verify-events --all-streams", timings):
            verified = _run("verify-events", "--all-streams", "--database-url", target.dsn,
                            "--sequencer-public-key", SEQUENCER_PK)  # fmt: skip
        assert f"{EVENTS} events in" in verified.stdout and "0 finding(s)" in verified.stdout
        print(f"  ({verified.stdout.strip().splitlines()[-1]})")

        again = tmp_path / "again.ndjson"
        with _phase("export again + compare", timings):
            _run("export-events", "--all-streams", "--output", str(again),
                 "--database-url", target.dsn)  # fmt: skip
            assert _compare(export, again) == EVENTS
    finally:
        for name in databases:
            pg.drop_database(name)
    print(f"  total: {sum(timings.values()):.1f}s ({_load()})")


# --- the drills through worker processes ----------------------------------------------------


async def _verify_in_workers(db: Db) -> verify.Report:
    states = await db.store.counter_states(kit.STREAM)
    checks = verify.default_checks(
        db.store, sequencer_public_key=bytes.fromhex(SEQUENCER_PK), deep=False
    )
    # Pages of 5: several pages are in flight across both workers at once, so results
    # come back out of order and must still be absorbed in sequence order.
    runner = verify.Verifier(db.store, checks, workers=2, chunk_size=5, processes=True)
    return await runner.run([verify.plan_run(s, None, None) for s in states])


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
async def test_worker_processes_find_each_fault_at_its_sequence(
    dialect: str, tmp_path: Path
) -> None:
    from tests.recovery.conftest import open_db
    from tests.recovery.test_verify import DRILLS

    async for db in open_db(dialect, tmp_path, "clean"):
        await populate(db.store, 30, encrypted=(5, 17))
        clean = await _verify_in_workers(db)
        assert clean.total == 0 and clean.events == 30, clean.to_json()
    for name in sorted(DRILLS):
        # Each drill on a database of its own: drills do not compose.
        async for db in open_db(dialect, tmp_path, name):
            await populate(db.store, 12)
            corrupt, code = DRILLS[name]
            bad = await corrupt(db)
            report = await _verify_in_workers(db)
            first = report.first
            assert first is not None, name
            assert (first.sequence, f"{first.check}.{first.code}") == (bad, code), name

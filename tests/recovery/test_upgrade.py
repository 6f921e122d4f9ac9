"""Upgrading a populated database to the tenant-first keys (migration 005) and back, on
both backends: every row is kept, ``verify-events`` passes before and after, ves_event_ids
is filled from the events already stored, and the upgraded database goes on sequencing
(replays, new events, another tenant's reuse of a known id refused)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from stateset_sequencer.store.placement import DISTRIBUTABLE_FROM
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from tests.recovery.conftest import SEQUENCER_PK, STREAM_2, Db, cli, populate, verify_cli
from tests.recovery.test_verify import commit_first

# Every table the data lives in before the upgrade, read row by row.
DATA_TABLES = (
    "ves_events",
    "ves_sequencer_receipts",
    "sequence_counters",
    "ves_command_dedupe",
    "entity_versions",
    "agent_signing_keys",
    "ves_commitments",
    "event_schemas",
    "api_keys",
    "audit_log",
    "sequencer_meta",
)
OTHER_TENANT = StreamKey(uuid.UUID(int=0xA2), kit.STORE_ID)


async def rows(db: Db) -> dict[str, list[str]]:
    """Each table's rows as text, sorted: equal before and after means nothing was lost,
    changed or added, whatever order the rebuilt tables return rows in."""
    found = {}
    for table in DATA_TABLES:
        found[table] = sorted(repr(tuple(r)) for r in await db.sql(f"SELECT * FROM {table}"))
    return found


def verify_all(db: Db) -> subprocess.CompletedProcess[str]:
    result = cli(
        "verify-events",
        "--all-streams",
        "--database-url",
        db.url,
        "--sequencer-public-key",
        SEQUENCER_PK,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


async def test_upgrade_keeps_every_row_and_verifies_before_and_after(
    db: Db, tmp_path: Path
) -> None:
    await populate(db.store, 30, encrypted=(4, 11))
    await populate(db.store, 6, stream=STREAM_2)
    await commit_first(db, 16)
    await db.store.put_schema(kit.TENANT, "order.created", '{"type": "object"}')
    upgraded = await rows(db)

    # Down to the schema before tenant-first keys: the data as the old code left it.
    # Every later migration comes down first, newest first, 005 last.
    rolled = await db.store.rollback(DISTRIBUTABLE_FROM - 1)
    assert rolled[-1] == DISTRIBUTABLE_FROM and rolled == sorted(rolled, reverse=True)
    assert await rows(db) == upgraded
    before = verify_all(db)
    assert "36 events in" in before.stdout and "0 finding(s)" in before.stdout
    assert verify_cli(db, "--deep").returncode == 0

    assert await db.store.migrate() == sorted(rolled)
    assert await rows(db) == upgraded
    after = verify_all(db)
    assert "36 events in" in after.stdout and "0 finding(s)" in after.stdout

    owners = sorted(
        (str(r[0]), str(r[1]), str(r[2]))
        for r in await db.sql("SELECT event_id, tenant_id, store_id FROM ves_event_ids")
    )
    stored = sorted(
        (str(r[0]), str(r[1]), str(r[2]))
        for r in await db.sql("SELECT event_id, tenant_id, store_id FROM ves_events")
    )
    assert owners == stored and len(owners) == 36


async def test_the_upgraded_database_goes_on_sequencing(db: Db) -> None:
    await populate(db.store, 5)
    await db.store.rollback(DISTRIBUTABLE_FROM - 1)
    await db.store.migrate()
    await kit.register(db.store, tenant_id=OTHER_TENANT.tenant_id)
    first, second = (e.envelope for e in await db.store.read_range(kit.STREAM, 1, 2))
    seq = kit.sequencer(db.store)
    try:
        replay = await seq.ingest(kit.AGENT_ID, [first])
        assert replay.events_accepted == 0 and replay.events_rejected == 0
        assert replay.receipts[0].sequence_number == 1

        fresh = await seq.ingest(kit.AGENT_ID, [kit.event(5)])
        assert fresh.events_accepted == 1 and fresh.receipts[0].sequence_number == 6

        stolen = kit.resign(second, tenant_id=OTHER_TENANT.tenant_id)
        refused = await seq.ingest(kit.AGENT_ID, [stolen])
        assert [r.reason for r in refused.rejections] == ["duplicate_event_id"]
        assert await db.store.head(OTHER_TENANT) == 0
    finally:
        seq.close()
    got = await db.store.get_event(second.event_id)
    assert got is not None and got.envelope.tenant_id == kit.TENANT

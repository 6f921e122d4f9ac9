"""The Citus code paths on a real Citus coordinator: ``migrate`` distributes every table as
``store.placement`` declares and colocates the tenant tables; a second run changes
nothing; a table placed otherwise is refused; and a backup taken on Citus restores into a
database without Citus, and into a new Citus database that ``migrate`` distributes again.

Citus is not packaged for Debian, so these run only where SEQUENCER_TEST_CITUS is set on a
server that preloads citus (docs/SCALING.md, "Trying it locally"); elsewhere they are
skipped with that message, and nothing stands in for Citus. The rest of the suites run on
Citus the same way (every scratch database then has the extension).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from stateset_sequencer import config
from stateset_sequencer.store import placement
from stateset_sequencer.store.errors import MigrationError
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import Store
from stateset_sequencer.testing import pg
from tests.recovery.conftest import SEQUENCER_PK, STREAM_2, cli, populate

pytestmark = pytest.mark.skipif(
    not config.TestEnvironment().citus,
    reason="needs a Citus server: set SEQUENCER_TEST_CITUS=1 and SEQUENCER_TEST_DATABASE_URL "
    "(docs/SCALING.md); Citus is not packaged for Debian, so CI has none",
)


@pytest.fixture
async def citus(tmp_path: Path) -> AsyncIterator[tuple[Store, str]]:
    async with pg.scratch_database("citus") as dsn:
        store = await open_store(parse_database_url(dsn, tmp_path), max_connections=4)
        try:
            await store.migrate()
            yield store, dsn
        finally:
            await store.close()


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_migrate_distributes_and_colocates_by_tenant(citus: tuple[Store, str]) -> None:
    store, dsn = citus
    found = await store.distribution()
    assert found.engine is not None and found.engine.startswith("citus ")
    assert [(t.table, t.placement) for t in found.tables] == [
        (p.table, placement.declared(p)) for p in placement.TABLES
    ]
    groups = {
        r["table_name"]: r["colocation_id"]
        for r in await fetch(dsn, "SELECT table_name::text, colocation_id FROM citus_tables")
    }
    tenant = {p.table for p in placement.TABLES if p.placement is placement.Placement.TENANT}
    assert len({groups[t] for t in tenant}) == 1
    assert groups["ves_event_ids"] != groups[placement.COLOCATION_ANCHOR]

    assert await store.migrate() == []
    assert await store.distribution() == found


async def test_a_table_placed_otherwise_is_refused(citus: tuple[Store, str]) -> None:
    store, dsn = citus
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT undistribute_table('audit_log')")
        await conn.execute("SELECT create_distributed_table('audit_log', 'id')")
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match="audit_log is distributed by id"):
        await store.migrate()


async def test_a_citus_backup_restores_without_citus_and_redistributes_with_it(
    citus: tuple[Store, str], tmp_path: Path
) -> None:
    store, dsn = citus
    await populate(store, 25, encrypted=(2,))
    await populate(store, 5, stream=STREAM_2)
    backup = tmp_path / "backup"
    taken = cli("backup", "--output", str(backup), "--database-url", dsn)
    assert taken.returncode == 0, taken.stderr

    # A database on the same server without the extension: plain PostgreSQL to the dump.
    plain_name, plain = pg.create_database("plain")
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute("DROP EXTENSION IF EXISTS citus CASCADE")
    finally:
        await admin.close()
    async with pg.scratch_database("again") as again:
        try:
            for target, engine in ((plain, None), (again, "citus")):
                restored = cli("restore", str(backup), "--database-url", target, "--force")
                assert restored.returncode == 0, restored.stdout + restored.stderr
                migrated = cli("migrate", "--database-url", target)
                assert migrated.returncode == 0, migrated.stderr
                if engine is None:
                    assert "distribution: skipped" in migrated.stdout
                else:
                    assert "as declared" in migrated.stdout, migrated.stdout
                checked = cli(
                    "verify-events",
                    "--all-streams",
                    "--database-url",
                    target,
                    "--sequencer-public-key",
                    SEQUENCER_PK,
                )
                assert checked.returncode == 0, checked.stdout + checked.stderr
                assert "30 events in" in checked.stdout
        finally:
            pg.drop_database(plain_name)

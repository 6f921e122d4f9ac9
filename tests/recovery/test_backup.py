"""backup, backup verify and restore round trips on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from stateset_sequencer.recovery import backup
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.testing import kit, pg
from tests.recovery.conftest import SEQUENCER_PK, STREAM_2, Db, cli, populate


@asynccontextmanager
async def target_url(db: Db, tmp_path: Path) -> AsyncIterator[str]:
    if db.dialect == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'target.db'}"
    else:
        async with pg.scratch_database() as dsn:
            yield dsn


async def contents_of(url: str) -> dict[str, Any]:
    store = await open_store(parse_database_url(url, Path()), max_connections=2, create=False)
    try:
        return await backup.database_contents(store)
    finally:
        await store.close()


async def test_backup_verify_restore_round_trip(db: Db, tmp_path: Path) -> None:
    await populate(db.store, 30, encrypted=(2,))
    await populate(db.store, 5, stream=STREAM_2)
    out = tmp_path / "bk"
    made = cli("backup", "--output", str(out), "--database-url", db.url)
    assert made.returncode == 0, made.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dialect"] == db.dialect
    assert out.stat().st_mode & 0o777 == 0o700  # the whole database is in there
    contents = manifest["contents"]
    assert contents["tables"]["ves_events"] == 35
    assert contents["tables"]["ves_sequencer_receipts"] == 35
    assert contents["tables"]["agent_signing_keys"] == 1
    assert contents["tables"]["sequence_counters"] == 2
    assert [(s["store_id"], s["counter"], s["max_sequence"]) for s in contents["streams"]] == [
        (str(kit.STORE_ID), 30, 30),
        (str(STREAM_2.store_id), 5, 5),
    ]
    assert set(manifest["files"]) == {db.store.snapshot_file}
    assert contents == await contents_of(db.url)

    checked = cli("backup", "verify", str(out), "--database-url", db.url)
    assert checked.returncode == 0, checked.stderr
    assert "test restore matches the manifest" in checked.stdout

    async with target_url(db, tmp_path) as url:
        restored = cli(
            "restore", str(out), "--database-url", url, "--sequencer-public-key", SEQUENCER_PK
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "35 events in" in restored.stdout and "0 finding(s)" in restored.stdout
        after = await contents_of(url)
        # The restore itself is the one row added: an audit entry chained after the
        # backup's own entries.
        assert after["tables"].pop("audit_log") == contents["tables"].pop("audit_log") + 1
        assert after == contents
        store = await open_store(parse_database_url(url, Path()), max_connections=2, create=False)
        try:
            [entry] = await store.list_audit(limit=1)
        finally:
            await store.close()
        assert entry.action == backup.RESTORE_ACTION and entry.resource_id == str(out)
        assert entry.details["forced"] is False and entry.details["events"] == 35
        checked_chain = cli("audit", "verify", "--database-url", url)
        assert checked_chain.returncode == 0, checked_chain.stderr


async def test_restore_refuses_a_non_empty_target_and_leaves_it_alone(
    db: Db, tmp_path: Path
) -> None:
    await populate(db.store, 8)
    out = tmp_path / "bk"
    assert cli("backup", "--output", str(out), "--database-url", db.url).returncode == 0
    await populate(db.store, 3, stream=STREAM_2)  # the live database moves on
    before = await contents_of(db.url)
    refused = cli("restore", str(out), "--database-url", db.url)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert await contents_of(db.url) == before
    await db.store.close()  # a restore is done with the sequencer stopped
    forced = cli(
        "restore",
        str(out),
        "--database-url",
        db.url,
        "--force",
        "--sequencer-public-key",
        SEQUENCER_PK,
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    after = await contents_of(db.url)
    assert after["tables"]["ves_events"] == 8 and len(after["streams"]) == 1


async def test_a_damaged_backup_fails_verification(db: Db, tmp_path: Path) -> None:
    await populate(db.store, 4)
    out = tmp_path / "bk"
    assert cli("backup", "--output", str(out), "--database-url", db.url).returncode == 0
    [name] = json.loads((out / "manifest.json").read_text())["files"]
    data = bytearray((out / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / name).write_bytes(bytes(data))
    damaged = cli("backup", "verify", str(out), "--database-url", db.url)
    assert damaged.returncode == 1 and "checksum differs" in damaged.stderr
    again = cli("backup", "--output", str(out), "--database-url", db.url)
    assert again.returncode == 1 and "not an empty directory" in again.stderr
    nothing = cli("backup", "verify", str(tmp_path))
    assert nothing.returncode == 1 and "no manifest" in nothing.stderr

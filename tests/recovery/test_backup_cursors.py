"""Agent cursors survive backup, test restore and restore, on both backends: the manifest
counts them as a critical table and the restored rows are the same."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from stateset_sequencer.recovery import backup
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.testing import kit
from tests.recovery.conftest import SEQUENCER_PK, Db, cli, populate
from tests.recovery.test_backup import target_url

READER = uuid.UUID("66666666-6666-6666-6666-666666666666")
AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_cursors_are_a_critical_table() -> None:
    assert "ves_agent_cursors" in backup.CRITICAL_TABLES


async def test_cursors_round_trip_through_a_backup(db: Db, tmp_path: Path) -> None:
    await populate(db.store, 6)
    await db.store.advance_cursor(kit.STREAM, kit.AGENT_ID, 6, now=AT)
    await db.store.advance_cursor(kit.STREAM, READER, 2, now=AT)
    cursors = await db.store.list_cursors(kit.TENANT)

    out = tmp_path / "bk"
    made = cli("backup", "--output", str(out), "--database-url", db.url)
    assert made.returncode == 0, made.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["contents"]["tables"]["ves_agent_cursors"] == 2
    checked = cli("backup", "verify", str(out), "--database-url", db.url)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    async with target_url(db, tmp_path) as url:
        restored = cli(
            "restore", str(out), "--database-url", url, "--sequencer-public-key", SEQUENCER_PK
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        store = await open_store(parse_database_url(url, Path()), max_connections=2)
        try:
            assert await store.list_cursors(kit.TENANT) == cursors
            position = await store.cursor_position(kit.STREAM, READER)
            assert (position.head_sequence, position.cursor) == (6, cursors[-1])
        finally:
            await store.close()

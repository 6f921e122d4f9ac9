"""``sequencer-cli audit verify`` and ``audit checkpoint`` against a log tampered with by
someone who can get past the append-only rule (a database superuser), on both backends.

The database refuses UPDATE and DELETE on ``audit_log``; an attacker with enough rights
switches that off first. The chain must still give them away: an edited entry is named
by ``audit verify``, and entries cut off the end are found against an earlier checkpoint.
"""

from __future__ import annotations

import json
import re

from stateset_sequencer.store.records import AuditEntry
from tests.recovery.conftest import Db, cli


async def _append(db: Db, count: int) -> None:
    for n in range(count):
        await db.store.append_audit(
            AuditEntry(action="drill.entry", actor="pytest", actor_type="test", details={"n": n})
        )


async def _allow_tampering(db: Db) -> None:
    if db.dialect == "sqlite":
        await db.sql("DROP TRIGGER audit_log_no_update")
        await db.sql("DROP TRIGGER audit_log_no_delete")
    else:
        await db.sql("ALTER TABLE audit_log DISABLE TRIGGER USER")


async def test_a_clean_log_verifies_and_checkpoints(db: Db) -> None:
    await _append(db, 3)
    checkpoint = cli("audit", "checkpoint", "--database-url", db.url)
    assert checkpoint.returncode == 0, checkpoint.stderr
    mark = checkpoint.stdout.strip()
    assert re.fullmatch(r"3:[0-9a-f]{64}", mark)
    await _append(db, 2)
    extended = cli("audit", "verify", "--checkpoint", mark, "--database-url", db.url)
    assert extended.returncode == 0, extended.stderr
    assert "5 entries" in extended.stdout and f"extends checkpoint {mark}" in extended.stdout
    report = json.loads(cli("audit", "verify", "--json", "--database-url", db.url).stdout)
    assert report["ok"] is True and report["entries"] == 5 and report["broken"] is None


async def test_an_entry_edited_by_sql_is_named(db: Db) -> None:
    await _append(db, 4)
    await _allow_tampering(db)
    await db.sql("UPDATE audit_log SET actor = 'mallory' WHERE chain_seq = 2")
    broken = cli("audit", "verify", "--database-url", db.url)
    assert broken.returncode == 1
    assert "audit log broken at entry 2" in broken.stderr
    assert "Traceback" not in broken.stderr
    report = json.loads(cli("audit", "verify", "--json", "--database-url", db.url).stdout)
    assert report["ok"] is False and report["broken"]["chain_seq"] == 2
    # A broken log has no head worth keeping.
    refused = cli("audit", "checkpoint", "--database-url", db.url)
    assert refused.returncode == 1 and "entry 2" in refused.stderr


async def test_entries_cut_off_the_end_are_found_against_a_checkpoint(db: Db) -> None:
    await _append(db, 5)
    mark = cli("audit", "checkpoint", "--database-url", db.url).stdout.strip()
    assert mark.startswith("5:")
    await _allow_tampering(db)
    await db.sql("DELETE FROM audit_log WHERE chain_seq >= 4")
    # On its own the shortened log is a valid chain: only the checkpoint shows the loss.
    alone = cli("audit", "verify", "--database-url", db.url)
    assert alone.returncode == 0, alone.stderr
    against = cli("audit", "verify", "--checkpoint", mark, "--database-url", db.url)
    assert against.returncode == 1 and "Traceback" not in against.stderr
    assert "entry 5" in against.stderr


async def test_a_forged_checkpoint_is_refused(db: Db) -> None:
    await _append(db, 2)
    forged = cli("audit", "verify", "--checkpoint", "2:" + "ab" * 32, "--database-url", db.url)
    assert forged.returncode == 1 and "entry 2" in forged.stderr


def test_a_malformed_checkpoint_is_a_usage_error() -> None:
    for text in ("", "12", "x:" + "0" * 64, "0:" + "0" * 64, "3:" + "0" * 63, "3:" + "g" * 64):
        bad = cli("audit", "verify", "--checkpoint", text, "--database-url", "sqlite:///nowhere.db")
        assert bad.returncode == 2, (text, bad.stderr)
        assert "--checkpoint" in bad.stderr and "Traceback" not in bad.stderr

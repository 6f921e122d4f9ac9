"""The doctor's ``agents`` check and cursor acknowledgements, on both backends: recent
acknowledgements are named, and a consumer that only acknowledges is a sign of life."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stateset_sequencer.config import Settings
from stateset_sequencer.recovery import doctor
from stateset_sequencer.store.rows import time_to_text
from stateset_sequencer.testing import kit
from tests.recovery.conftest import Db, populate

READER = uuid.UUID("66666666-6666-6666-6666-666666666666")


async def _agents(db: Db, tmp_path: Path) -> doctor.CheckResult:
    ctx = doctor.Context(doctor.DoctorOptions(Settings(DATA_DIR=tmp_path)))
    ctx.states = await db.store.counter_states()
    return await doctor.check_agents(ctx, db.store)


async def test_recent_acknowledgements_are_listed(db: Db, tmp_path: Path) -> None:
    await populate(db.store, 4)
    await db.store.advance_cursor(kit.STREAM, READER, 3, now=datetime.now(UTC))
    result = await _agents(db, tmp_path)
    assert result.status == "PASS", result
    assert "cursors acknowledged in the last 24 h" in result.detail
    assert f"{READER} (tenant {kit.TENANT}, store {kit.STORE_ID}) at 3" in result.detail


async def test_an_acknowledging_reader_passes_when_writers_are_quiet(
    db: Db, tmp_path: Path
) -> None:
    await populate(db.store, 4)
    old = datetime.now(UTC) - timedelta(hours=30)
    await db.sql(
        "UPDATE ves_events SET sequenced_at = $1",
        time_to_text(old) if db.dialect == "sqlite" else old,
    )
    # An acknowledgement older than the window is no sign of life.
    await db.store.advance_cursor(kit.STREAM, READER, 2, now=old)
    quiet = await _agents(db, tmp_path)
    assert quiet.status == "FAIL", quiet
    assert "cursors acknowledged" not in quiet.detail

    await db.store.advance_cursor(kit.STREAM, READER, 4, now=datetime.now(UTC))
    reading = await _agents(db, tmp_path)
    assert reading.status == "PASS", reading
    assert "but agents are reading" in reading.detail
    assert f"{READER} (tenant {kit.TENANT}, store {kit.STORE_ID}) at 4" in reading.detail

"""Ingest, verify-events and doctor judge agent keys by one rule (``judge_key``), each at
its own instant: ingest at its clock, verify-events at each event's ``sequenced_at``,
doctor at its clock. On both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stateset_sequencer.config import Settings
from stateset_sequencer.recovery import doctor
from stateset_sequencer.store.records import StoredEvent
from stateset_sequencer.testing import kit
from tests.recovery.conftest import Db, populate
from tests.recovery.test_verify import verify_here

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


async def _ingest_at(db: Db, at: datetime, i: int) -> list[str]:
    seq = kit.sequencer(db.store, clock=lambda: at)
    try:
        result = await seq.ingest(kit.AGENT_ID, [kit.event(i)])
    finally:
        seq.close()
    return [r.reason for r in result.rejections]


async def test_ingest_accepts_a_key_at_exactly_its_window_edges(db: Db) -> None:
    await kit.register(db.store, valid_from=NOW, valid_to=NOW + timedelta(hours=1))
    assert await _ingest_at(db, NOW, 1) == []
    assert await _ingest_at(db, NOW + timedelta(hours=1), 2) == []
    assert await _ingest_at(db, NOW - timedelta(microseconds=1), 3) == [
        "agent_key_invalid: Agent key is not yet valid"
    ]
    assert await _ingest_at(db, NOW + timedelta(hours=1, microseconds=1), 4) == [
        "agent_key_invalid: Agent key has expired"
    ]


async def test_ingest_refuses_a_revoked_key_even_before_its_revoked_at(db: Db) -> None:
    """The status counts at once (the reference's rule): a revoked_at a little ahead of
    this node's clock does not reopen the key."""
    await kit.register(db.store)
    await db.store.revoke_agent_key(kit.TENANT, kit.AGENT_ID, 1, NOW + timedelta(seconds=5))
    assert await _ingest_at(db, NOW, 1) == ["agent_key_invalid: Agent key has been revoked"]


async def _two_batches(db: Db) -> tuple[StoredEvent, StoredEvent]:
    """Events 1..3 and 4..6, sequenced by two ingests (so at two instants)."""
    await populate(db.store, 6, batch=3)
    first, fourth = (
        await db.store.read_range(kit.STREAM, 1, 1),
        await db.store.read_range(kit.STREAM, 4, 4),
    )
    assert first[0].sequenced_at < fourth[0].sequenced_at
    return first[0], fourth[0]


async def test_a_key_revoked_after_sequencing_does_not_fail_the_events(db: Db) -> None:
    await _two_batches(db)
    await db.store.revoke_agent_key(kit.TENANT, kit.AGENT_ID, 1, datetime.now(UTC))
    report = await verify_here(db, processes=False)
    assert report.total == 0, report.to_json()


async def test_a_key_revoked_at_a_sequencing_instant_fails_from_that_event(db: Db) -> None:
    # revoked_at equal to the second batch's sequenced_at: the instant itself is revoked.
    _, fourth = await _two_batches(db)
    await db.store.revoke_agent_key(kit.TENANT, kit.AGENT_ID, 1, fourth.sequenced_at)
    report = await verify_here(db, processes=False)
    bad = [(f.sequence, f.check, f.code) for f in report.findings]
    assert bad == [(n, "agent_signature", "agent_key_invalid") for n in (4, 5, 6)]
    assert "revoked at" in report.findings[0].message


async def test_doctor_counts_a_key_ingest_would_accept(db: Db) -> None:
    """A stored status 'expired' is not enforced by ingest (nor the reference), so doctor
    counts the key as active; doctor used to require status 'active'."""
    await populate(db.store, 3)
    await db.sql("UPDATE agent_signing_keys SET status = 'expired'")
    ctx = doctor.Context(doctor.DoctorOptions(Settings()))
    ctx.states = await db.store.counter_states()
    result = await doctor.check_agents(ctx, db.store)
    assert result.status == "PASS", result.detail
    assert str(kit.AGENT_ID) in result.detail
    # ... and ingest agrees: the key still signs.
    assert await _ingest_at(db, datetime.now(UTC), 9) == []

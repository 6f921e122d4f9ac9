"""verify-events through its pipeline: pages of several streams computed in worker
processes, out of order, settle exactly as a serial pass settles them (every finding at
its place, the same totals), and the compact form that crosses to a worker stands for
the page exactly."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from stateset_sequencer.recovery import verify
from stateset_sequencer.recovery.verify import compute
from stateset_sequencer.store.records import StoredEvent, StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import signing
from tests.recovery.conftest import SEQUENCER_PK, STREAM_2, Db, populate

STREAM_3 = StreamKey(kit.TENANT, uuid.UUID("00000000-0000-0000-0000-0000000000b3"))
PER_STREAM = 11


async def _plant(db: Db) -> set[tuple[uuid.UUID, int, str]]:
    """One fault per stream, each on another page (pages of 4): what must be found."""
    if db.dialect == "sqlite":
        flip = (
            "UPDATE ves_events SET payload = replace(payload, '12.5', '12.6') "
            "WHERE sequence_number = 3 AND store_id = $1"
        )
    else:
        flip = (
            "UPDATE ves_events SET payload = replace(payload::text, '12.5', '12.6')::json "
            "WHERE sequence_number = 3 AND store_id = $1"
        )
    await db.sql(flip, kit.STORE_ID)
    await db.sql(
        "UPDATE ves_sequencer_receipts SET receipt_hash = $1 "
        "WHERE sequence_number = 6 AND store_id = $2",
        os.urandom(32),
        STREAM_2.store_id,
    )
    await db.sql(
        "DELETE FROM ves_sequencer_receipts WHERE sequence_number = 9 AND store_id = $1",
        STREAM_3.store_id,
    )
    await db.sql(
        "DELETE FROM ves_events WHERE sequence_number = 9 AND store_id = $1", STREAM_3.store_id
    )
    return {
        (kit.STORE_ID, 3, "envelope.invalid_payload_hash"),
        (STREAM_2.store_id, 6, "receipt.receipt_hash_mismatch"),
        (STREAM_3.store_id, 9, "sequence.gap"),
    }


async def _verify(db: Db, **options: object) -> verify.Report:
    states = await db.store.counter_states(None)
    checks = verify.default_checks(
        db.store, sequencer_public_key=bytes.fromhex(SEQUENCER_PK), deep=True
    )
    runner = verify.Verifier(db.store, checks, **options)  # type: ignore[arg-type]
    return await runner.run([verify.plan_run(s, None, None) for s in states])


def _shape(report: verify.Report) -> object:
    """Everything of a report but its timing."""
    body = report.to_json()
    del body["elapsed_seconds"], body["events_per_second"]
    return body


async def test_several_streams_in_workers_settle_as_a_serial_pass(db: Db) -> None:
    for stream in (kit.STREAM, STREAM_2, STREAM_3):
        await populate(db.store, PER_STREAM, stream=stream, encrypted=(7,))
    planted = await _plant(db)
    serial = await _verify(db, processes=False, chunk_size=1000)
    # Pages of 4 over three streams, two workers, several pages in flight: answers come
    # back out of order and across stream boundaries.
    piped = await _verify(db, processes=True, workers=2, chunk_size=4)
    assert _shape(piped) == _shape(serial)
    found = {(f.stream.store_id, f.sequence, f"{f.check}.{f.code}") for f in piped.findings}
    assert found == planted, piped.to_json()
    assert piped.total == 3 and piped.events == 3 * PER_STREAM - 1
    firsts = [(r.run.stream, None if r.first is None else r.first.sequence) for r in piped.streams]
    assert firsts == [(kit.STREAM, 3), (STREAM_2, 6), (STREAM_3, 9)]
    assert piped.checks["agent_signature"] == "checked (1 distinct agent keys)"


def _records() -> list[compute.Record]:
    receipts = signing.ReceiptSigner(uuid.UUID(int=7), kit.SEQUENCER_SEED)
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    out: list[compute.Record] = []
    for i in range(6):
        env = kit.event(
            i,
            recipients=[(1, kit.X25519_PUBLIC)] if i == 2 else None,
            command_id=uuid.UUID(int=i) if i == 4 else None,
        )
        digest = env.signing_hash()
        receipt = receipts.issue(
            tenant_id=env.tenant_id,
            store_id=env.store_id,
            event_id=env.event_id,
            sequence_number=i + 1,
            event_signing_hash=digest,
            sequenced_at=at,
        )
        out.append((StoredEvent(env, i + 1, at, digest), None if i == 5 else receipt))
    return out


def test_the_packed_page_stands_for_the_page() -> None:
    records = _records()
    work = compute.Work(
        [kit.AGENT.public_key, None, kit.AGENT.public_key, bytes(32), None, None],
        signing.Signer(kit.SEQUENCER_SEED).public_key,
        leaves=True,
    )
    again, same_work = compute.unpack(compute.pack(records, work))
    assert again == records and same_work == work
    inline = compute.compute(records, work)
    crossed = compute.answers(compute.compute_packed(compute.pack(records, work)), 6, True)
    assert crossed == inline
    assert inline.agent_ok == [True, None, True, False, None, None]
    assert inline.receipt_faults == [None] * 6 and inline.leaves is not None


def test_a_tampered_record_is_answered_the_same_either_way() -> None:
    (event, receipt), *_ = _records()
    bad = event.envelope.model_copy(update={"entity_id": "tampered"})
    records = [(StoredEvent(bad, 1, event.sequenced_at, event.event_signing_hash), receipt)]
    work = compute.Work([kit.AGENT.public_key], signing.Signer(bytes(32)).public_key)
    inline = compute.compute(records, work)
    crossed = compute.answers(compute.compute_packed(compute.pack(records, work)), 1, False)
    assert crossed == inline
    assert inline.agent_ok == [False]
    [fault] = inline.receipt_faults
    assert fault is not None and fault[0] == "receipt_hash_mismatch"


async def test_a_range_with_no_events_still_begins_and_ends(tmp_path: Path) -> None:
    from tests.recovery.conftest import open_db

    async for db in open_db("sqlite", tmp_path):
        await populate(db.store, 3)
        await db.sql("DELETE FROM ves_sequencer_receipts")
        await db.sql("DELETE FROM ves_events")
        report = await _verify(db, processes=True, workers=2, chunk_size=2)
        [finding] = report.findings
        assert (finding.sequence, finding.code) == (1, "gap") and report.events == 0

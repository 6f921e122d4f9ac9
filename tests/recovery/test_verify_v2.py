"""verify-events, export-events and bulk-ingest on streams that mix signing versions 1
and 2, on both backends: a clean mixed stream passes end to end, and a ``command_id`` or
``base_version`` changed in a stored V2 row is found at its sequence number (the same
change to a V1 row is, by design of V1, invisible)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from stateset_sequencer.recovery.export import read_export
from stateset_sequencer.testing import kit
from stateset_sequencer.ves.envelope import VesEventEnvelope
from tests.recovery.conftest import Db, cli, stream_args, verify_cli
from tests.recovery.test_bulk_ingest import ADMIN_KEY, target
from tests.recovery.test_verify import commit_first, report_of

__all__ = ["target"]  # the bulk-ingest server fixture, used here too

COUNT = 12
COMMAND = uuid.UUID("8af726e2-40e9-4cb6-b7d0-ea463765a9a7")


def mixed_events() -> list[VesEventEnvelope]:
    """Even indexes V1, odd ones V2 with both controls; one encrypted V2, one bare V2."""
    events = []
    for i in range(COUNT):
        if i % 2 == 0:
            events.append(kit.event(i, ves_version=1, command_id=uuid.uuid5(COMMAND, str(i))))
        elif i == 5:
            events.append(kit.event(i))  # V2 without controls
        else:
            events.append(
                kit.event(
                    i,
                    command_id=uuid.uuid5(COMMAND, str(i)),
                    base_version=0,
                    recipients=[(1, kit.X25519_PUBLIC)] if i == 7 else None,
                )
            )
    return events


async def populate_mixed(db: Db) -> list[VesEventEnvelope]:
    await kit.register(db.store)
    events = mixed_events()
    seq = kit.sequencer(db.store)
    try:
        result = await seq.ingest(kit.AGENT_ID, events)
    finally:
        seq.close()
    assert result.events_rejected == 0, result.rejections
    return events


async def test_a_mixed_stream_verifies_exports_and_reingests(
    db: Db, target: tuple[str, Path]
) -> None:
    url, folder = target
    events = await populate_mixed(db)
    await commit_first(db, 8)
    report = folder / "report.json"
    checked = verify_cli(db, "--report", str(report), "--deep")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    body = report_of(report)
    assert body["ok"] is True and body["events_checked"] == COUNT

    export = folder / "mixed.ndjson"
    exported = cli(
        "export-events", *stream_args(), "--output", str(export), "--database-url", db.url
    )
    assert exported.returncode == 0, exported.stderr
    records = list(read_export(export))
    assert [r.envelope for r in records] == events
    assert [r.signing_hash for r in records] == [e.signing_hash() for e in events]
    assert [json.loads(line)["ves_version"] for line in export.read_text().splitlines()] == [
        1 if i % 2 == 0 else 2 for i in range(COUNT)
    ]
    assert cli("verify-export", str(export)).returncode == 0

    sent = cli("bulk-ingest", "--file", str(export), "--url", url, "--api-key", ADMIN_KEY)
    assert sent.returncode == 0, sent.stderr
    assert f"{COUNT} events: {COUNT} accepted, 0 replayed, 0 rejected" in sent.stdout
    again = cli("bulk-ingest", "--file", str(export), "--url", url, "--api-key", ADMIN_KEY)
    assert f"{COUNT} events: 0 accepted, {COUNT} replayed" in again.stdout, again.stderr


@pytest.mark.parametrize(
    ("column", "value"),
    [("command_id", "other-command"), ("command_id", None), ("base_version", "5")],
)
async def test_a_changed_control_in_a_stored_v2_row_is_found(
    db: Db, tmp_path: Path, column: str, value: str | None
) -> None:
    await populate_mixed(db)
    v1_seq, v2_seq = 3, 4  # kit.event(2) is V1, kit.event(3) is V2, both with a command
    for seq in (v1_seq, v2_seq):
        stored = uuid.uuid4() if value == "other-command" else value
        if column == "base_version" and db.dialect == "postgres":
            await db.sql(
                "UPDATE ves_events SET base_version = $1::numeric WHERE sequence_number = $2",
                value,
                seq,
            )
        else:
            await db.sql(
                f"UPDATE ves_events SET {column} = $1 WHERE sequence_number = $2",
                stored,
                seq,
            )
    report = tmp_path / "report.json"
    result = verify_cli(db, "--report", str(report))
    assert result.returncode == 1, result.stdout
    body = report_of(report)
    # Only the V2 row: V1 never signed its controls, which is why V2 exists.
    assert sorted({f["sequence"] for f in body["findings"]}) == [v2_seq]
    assert body["first_finding"]["sequence"] == v2_seq
    codes = {f"{f['check']}.{f['code']}" for f in body["findings"]}
    assert "envelope.signing_hash_mismatch" in codes
    assert "agent_signature.invalid_signature" in codes

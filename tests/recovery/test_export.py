"""export-events and verify-export, through the real CLI, on both backends."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from stateset_sequencer.recovery.export import read_export
from stateset_sequencer.store.records import StoredEvent
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import envelope
from tests.recovery.conftest import STREAM_2, Db, cli, populate, stream_args


async def test_export_writes_events_as_signed_with_a_matching_manifest(
    db: Db, tmp_path: Path
) -> None:
    await populate(db.store, 12, encrypted=(4,))
    out = tmp_path / "events.ndjson"
    result = cli("export-events", *stream_args(), "--output", str(out), "--database-url", db.url)
    assert result.returncode == 0, result.stderr

    stored: list[StoredEvent] = await db.store.read_range(kit.STREAM, 1, 12)
    lines = out.read_bytes().splitlines()
    assert len(lines) == 12
    manifest = json.loads((tmp_path / "events.ndjson.manifest.json").read_text())
    assert manifest["event_count"] == 12
    assert manifest["file_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["file_bytes"] == out.stat().st_size
    digest = hashlib.sha256(b"".join(e.event_signing_hash for e in stored)).hexdigest()
    assert manifest["signing_hashes_sha256"] == digest
    [entry] = manifest["streams"]
    assert (entry["tenant_id"], entry["store_id"]) == (str(kit.TENANT), str(kit.STORE_ID))
    assert (entry["first_sequence"], entry["last_sequence"], entry["event_count"]) == (1, 12, 12)
    assert entry["signing_hashes_sha256"] == digest

    for line, event in zip(lines, stored, strict=True):
        record = json.loads(line)
        assert record["sequence_number"] == event.sequence_number
        assert envelope.parse_envelope(record) == event.envelope  # exactly as signed
        receipt = await db.store.get_receipt(event.envelope.event_id)
        assert receipt is not None and record["receipt"] == receipt.to_wire()
    encrypted = json.loads(lines[4])
    assert encrypted["payload_kind"] == 1 and "payload" not in encrypted
    assert encrypted["payload_encrypted"]["recipients"][0]["recipient_kid"] == 1
    assert json.loads(lines[3])["payload"] == {"n": 3, "total": 12.5}

    assert [e.sequence_number for e in read_export(out)] == list(range(1, 13))
    checked = cli("verify-export", str(out))
    assert checked.returncode == 0 and "12 events match" in checked.stdout


async def test_json_format_all_streams_and_a_range(db: Db, tmp_path: Path) -> None:
    await populate(db.store, 5)
    await populate(db.store, 3, stream=STREAM_2)
    out = tmp_path / "all.json"
    args = ["--output", str(out), "--format", "json", "--all-streams", "--database-url", db.url]
    result = cli("export-events", *args)
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    assert [(r["store_id"], r["sequence_number"]) for r in records] == [
        *[(str(kit.STORE_ID), n) for n in range(1, 6)],
        *[(str(STREAM_2.store_id), n) for n in range(1, 4)],
    ]
    manifest = json.loads((tmp_path / "all.json.manifest.json").read_text())
    assert [s["event_count"] for s in manifest["streams"]] == [5, 3]
    assert cli("verify-export", str(out)).returncode == 0

    part = tmp_path / "part.ndjson"
    ranged = ["--from", "2", "--to", "4", "--output", str(part), "--database-url", db.url]
    assert cli("export-events", *stream_args(), *ranged).returncode == 0
    assert [json.loads(x)["sequence_number"] for x in part.read_text().splitlines()] == [2, 3, 4]


async def test_truncated_export_and_bad_arguments_fail_clearly(db: Db, tmp_path: Path) -> None:
    await populate(db.store, 6)
    out = tmp_path / "e.ndjson"
    assert (
        cli(
            "export-events", *stream_args(), "--output", str(out), "--database-url", db.url
        ).returncode
        == 0
    )
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    truncated = cli("verify-export", str(out))
    assert truncated.returncode == 1
    assert "truncated or altered" in truncated.stderr and "Traceback" not in truncated.stderr

    missing = cli("export-events", "--output", str(out), "--database-url", db.url)
    assert missing.returncode == 2 and "--tenant-id" in missing.stderr
    bad_uuid = cli(
        "export-events",
        "--tenant-id",
        "nope",
        "--store-id",
        str(kit.STORE_ID),
        "--output",
        str(out),
        "--database-url",
        db.url,
    )
    assert bad_uuid.returncode == 2 and "not a UUID" in bad_uuid.stderr
    backwards = cli(
        "export-events",
        *stream_args(),
        "--from",
        "5",
        "--to",
        "2",
        "--output",
        str(out),
        "--database-url",
        db.url,
    )
    assert backwards.returncode == 2 and "below --from" in backwards.stderr
    unknown = cli(
        "export-events",
        *stream_args(STREAM_2),
        "--output",
        str(tmp_path / "x"),
        "--database-url",
        db.url,
    )
    assert unknown.returncode == 1 and "no stream" in unknown.stderr
    assert not (tmp_path / "x").exists()
    no_manifest = tmp_path / "lonely.ndjson"
    no_manifest.write_text("{}\n")
    lonely = cli("verify-export", str(no_manifest))
    assert lonely.returncode == 1 and "no manifest" in lonely.stderr

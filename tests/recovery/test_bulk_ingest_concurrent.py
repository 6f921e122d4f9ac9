"""``bulk-ingest`` with several streams in flight at once, against a real server process:
every stream comes back gap-free, in the export's order, with identical receipts; a run
cut off halfway resumes; and bad ``--concurrency`` values are refused before anything is
sent."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from stateset_sequencer.recovery import bulk_ingest as bulk_mod
from stateset_sequencer.recovery.export import ExportedEvent, read_export
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from tests.recovery.conftest import STREAM_2, cli, open_db, populate
from tests.recovery.test_bulk_ingest import ADMIN_KEY, target

__all__ = ["target"]  # the bulk-ingest server fixture

STREAM_3 = StreamKey(kit.TENANT, uuid.UUID("00000000-0000-0000-0000-0000000000b3"))
COUNTS = {kit.STREAM: 23, STREAM_2: 9, STREAM_3: 14}


async def _source(folder: Path) -> Path:
    """Three streams exported one after the other, as ``export-events`` writes them."""
    async for db in open_db("sqlite", folder, "source"):
        for stream, count in COUNTS.items():
            await populate(db.store, count, stream=stream, encrypted=(4,), batch=7)
        out = folder / "events.ndjson"
        result = cli(
            "export-events", "--all-streams", "--output", str(out), "--database-url", db.url
        )
        assert result.returncode == 0, result.stderr
    return out


def _key(record: ExportedEvent) -> tuple[StreamKey, int]:
    return StreamKey(record.envelope.tenant_id, record.envelope.store_id), record.sequence_number


def _order(record: ExportedEvent) -> tuple[uuid.UUID, uuid.UUID, int]:
    env = record.envelope
    return env.tenant_id, env.store_id, record.sequence_number


def _same_log(export: Path, folder: Path) -> None:
    """The target holds every stream gap-free, in the export's order, same receipts."""
    restored = folder / "restored.ndjson"
    result = cli(
        "export-events", "--all-streams", "--output", str(restored),
        "--database-url", f"sqlite:///{folder / 'target.db'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    before = sorted(read_export(export), key=_order)
    after = sorted(read_export(restored), key=_order)
    assert [(_key(r), r.envelope.event_id) for r in before] == [
        (_key(r), r.envelope.event_id) for r in after
    ]
    for stream, count in COUNTS.items():
        numbers = [r.sequence_number for r in after if _key(r)[0] == stream]
        assert numbers == list(range(1, count + 1))
    for old, new in zip(before, after, strict=True):
        assert old.receipt is not None and new.receipt is not None
        assert (old.signing_hash, old.receipt.receipt_hash, old.receipt.sequencer_signature) == (
            new.signing_hash,
            new.receipt.receipt_hash,
            new.receipt.sequencer_signature,
        )


async def test_streams_in_flight_together_come_back_identical(target: tuple[str, Path]) -> None:
    url, folder = target
    export = await _source(folder)
    assert [s.stream for s in bulk_mod.segments(export)] == [
        (s.tenant_id, s.store_id) for s in sorted(COUNTS, key=lambda k: k.store_id)
    ]
    sent = cli(
        "bulk-ingest", "--file", str(export), "--url", url, "--api-key", ADMIN_KEY,
        "--batch-size", "4", "--concurrency", "3",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert "46 events: 46 accepted, 0 replayed, 0 rejected, 0 skipped" in sent.stdout
    _same_log(export, folder)
    again = cli(
        "bulk-ingest", "--file", str(export), "--url", url, "--api-key", ADMIN_KEY,
        "--concurrency", "2",
    )  # fmt: skip
    assert "46 events: 0 accepted, 46 replayed" in again.stdout, again.stderr


class _CutOff(Exception):
    pass


async def test_a_run_cut_off_halfway_resumes(target: tuple[str, Path]) -> None:
    url, folder = target
    export = await _source(folder)
    seen = 0

    def die_halfway(n: int) -> None:
        nonlocal seen
        seen += n
        if seen >= 20:
            raise _CutOff

    with pytest.raises(_CutOff):
        await bulk_mod.bulk_ingest(
            export, url, ADMIN_KEY, batch_size=3, concurrency=3, progress=die_halfway
        )
    resumed = cli(
        "bulk-ingest", "--file", str(export), "--url", url, "--api-key", ADMIN_KEY,
        "--batch-size", "3", "--concurrency", "3", "--resume", "--report",
        str(folder / "bulk.json"),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "0 rejected" in resumed.stdout and "skipped" in resumed.stdout
    counts = json.loads((folder / "bulk.json").read_text())
    assert set(counts) == set(bulk_mod.BulkReport().to_json())
    assert counts["skipped"] > 0, counts
    assert counts["accepted"] + counts["replayed"] + counts["skipped"] == 46
    _same_log(export, folder)


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_concurrency_is_refused_before_anything_is_sent(tmp_path: Path, value: str) -> None:
    result = cli(
        "bulk-ingest", "--file", str(tmp_path / "none.ndjson"), "--url", "http://127.0.0.1:9",
        "--api-key", ADMIN_KEY, "--concurrency", value,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--concurrency" in result.stderr and "Traceback" not in result.stderr


async def test_concurrency_below_one_is_refused_in_process(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await bulk_mod.bulk_ingest(
            tmp_path / "none.ndjson", "http://127.0.0.1:9", None, concurrency=0
        )

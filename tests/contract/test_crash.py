"""SIGKILL a real writer process mid-append: the stream stays gap-free, its counter equals
the highest stored sequence, and every receipt returned before the kill is still there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.testing import kit, pg

ROOT = Path(__file__).resolve().parents[2]
KILL_AFTER_RECEIPTS = 150


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
    else:
        name, dsn = pg.create_database("seqcrash")
        try:
            yield dsn
        finally:
            pg.drop_database(name)


def _acknowledged_before_kill(database_url: str, data_dir: Path) -> list[tuple[int, str, str]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", database_url, str(data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    acked: list[tuple[int, str, str]] = []
    deadline = time.monotonic() + 90
    try:
        assert child.stdout is not None
        while len(acked) < KILL_AFTER_RECEIPTS and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            seq, event_id, receipt_hash = line.split()
            acked.append((int(seq), event_id, receipt_hash))
        # Kill while the writer is mid-stream: it never stops between batches on its own.
        child.send_signal(signal.SIGKILL)
        # Lines already in the pipe were acknowledged before the kill, too.
        rest, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    for line in rest.splitlines():
        parts = line.split()
        if len(parts) == 3:
            acked.append((int(parts[0]), parts[1], parts[2]))
    assert len(acked) >= KILL_AFTER_RECEIPTS, f"writer produced too little: {err[-2000:]}"
    assert child.returncode == -signal.SIGKILL
    return acked


async def test_sigkill_mid_append_loses_nothing_acknowledged(
    database_url: str, tmp_path: Path
) -> None:
    store = await open_store(parse_database_url(database_url, tmp_path))
    await store.migrate()
    await kit.register(store)
    await store.close()

    acked = _acknowledged_before_kill(database_url, tmp_path)

    store = await open_store(parse_database_url(database_url, tmp_path))
    try:
        head = await store.head(kit.STREAM)
        stored = [e async for e in store.iter_range(kit.STREAM, 1)]
        assert [e.sequence_number for e in stored] == list(range(1, head + 1))
        assert head == (stored[-1].sequence_number if stored else 0)
        assert head >= len(acked)
        by_id = {str(e.envelope.event_id): e for e in stored}
        for seq, event_id, receipt_hash in acked:
            assert by_id[event_id].sequence_number == seq
            receipt = await store.get_receipt(by_id[event_id].envelope.event_id)
            assert receipt is not None and receipt.receipt_hash.hex() == receipt_hash
        # The restarted store keeps sequencing right after the head.
        seq_service = kit.sequencer(store)
        try:
            result = await seq_service.ingest(kit.AGENT_ID, [kit.event(999_999)])
        finally:
            seq_service.close()
        assert result.receipts[-1].sequence_number == head + 1
    finally:
        await store.close()

"""The outbox on its own: durable appends, the state machine, the entity-version cache,
and the faults of the file itself (damaged, read-only, full), each a clear error naming
the file with nothing half-written."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stateset_sequencer.agent.outbox import (
    Outbox,
    OutboxError,
    OutboxReason,
    PulledEvent,
    State,
)
from stateset_sequencer.client import Agent
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import signing
from stateset_sequencer.ves.envelope import VesEventEnvelope
from stateset_sequencer.ves.jsontext import dump_json

AGENT = Agent(
    signer=signing.Signer(kit.AGENT_SEED),
    tenant_id=kit.TENANT,
    store_id=kit.STORE_ID,
    agent_id=kit.AGENT_ID,
)


def _event(entity: str = "order-1", base: int | None = None) -> VesEventEnvelope:
    return AGENT.event("order", entity, "order.created", {"n": 1}, base_version=base)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db") as opened:
        yield opened


def test_append_is_durable_and_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "outbox.db"
    with Outbox(path) as box:
        event = AGENT.event("order", "o-1", "order.created", {"total": 5})
        stored = box.append(event)
        assert stored.state is State.PENDING and stored.local_seq == 1
        assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # 2 = FULL: the append has been fsynced when it returns.
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert (path.stat().st_mode & 0o777) == 0o600
    # Another connection (another process) sees it at once, exactly as signed.
    raw = sqlite3.connect(path).execute("SELECT envelope, state FROM outbox_events").fetchall()
    assert raw == [(dump_json(event.to_wire()), "pending")]


def test_state_machine(box: Outbox) -> None:
    first, second, third = (box.append(_event(f"o-{i}")) for i in range(3))
    box.claim([first, second, third])
    assert [e.state for e in box.events()] == [State.PUSHED] * 3
    signer = signing.ReceiptSigner(uuid.UUID(int=7), kit.SEQUENCER_SEED)
    from datetime import UTC, datetime

    receipt = signer.issue(
        tenant_id=kit.TENANT,
        store_id=kit.STORE_ID,
        event_id=first.event_id,
        sequence_number=1,
        event_signing_hash=first.signing_hash,
        sequenced_at=datetime.now(UTC),
    )
    assert box.acknowledge([receipt]) == 1
    assert box.acknowledge([receipt]) == 0  # a second answer changes nothing
    box.reject(second.event_id, "invalid_signature", "Agent signature does not verify")
    box.reject(third.event_id, "version_conflict: expected 0, actual 2", "x", actual_version=2)
    # An acked event is never demoted by a late refusal.
    box.reject(first.event_id, "invalid_signature", "late")
    states = {e.event_id: e for e in box.events()}
    assert states[first.event_id].state is State.ACKED
    assert states[first.event_id].receipt == receipt
    assert states[second.event_id].state is State.REJECTED
    assert states[second.event_id].rejection_reason == "invalid_signature"
    assert states[third.event_id].state is State.CONFLICT
    assert states[third.event_id].actual_version == 2
    assert box.counts() == {
        "pending": 0,
        "pushed": 0,
        "acked": 1,
        "rejected": 1,
        "conflict": 1,
        "superseded": 0,
    }

    rebased = box.append(_event("o-2"), rebased_from=third.event_id)
    old = box.get(third.event_id)
    assert old is not None and old.state is State.SUPERSEDED
    assert old.superseded_by == rebased.event_id and rebased.rebased_from == third.event_id
    # Rebasing twice is refused and appends nothing.
    with pytest.raises(OutboxError) as caught:
        box.append(_event("o-2"), rebased_from=third.event_id)
    assert caught.value.reason is OutboxReason.WRONG_STATE
    assert len(box.events()) == 4


def test_next_version_counts_own_and_pulled_events(box: Outbox) -> None:
    tenant, store = kit.TENANT, kit.STORE_ID
    assert box.next_version(tenant, store, "order", "o-1") == 0
    one = box.append(_event("o-1"))
    box.append(_event("o-1"))
    box.append(_event("o-9"))
    assert box.next_version(tenant, store, "order", "o-1") == 2
    box.reject(one.event_id, "invalid_signature", "x")  # refused: not on the server
    assert box.next_version(tenant, store, "order", "o-1") == 1
    other = Agent(signing.Signer.generate(), tenant, store, uuid.uuid4()).event(
        "order", "o-1", "order.paid", {}
    )
    box.store_pulled(
        tenant,
        store,
        [PulledEvent(5, dump_json(other.to_wire()), None, "2026-01-01T00:00:00Z", other)],
    )
    assert box.next_version(tenant, store, "order", "o-1") == 2
    # The server said 7 (events this outbox never saw): from then on it counts from 7.
    box.note_server_version(tenant, store, "order", "o-1", 7)
    assert box.next_version(tenant, store, "order", "o-1") == 7
    box.append(_event("o-1"))
    assert box.next_version(tenant, store, "order", "o-1") == 8
    assert box.sync_state(tenant, store).last_pulled_sequence == 5


def test_sync_state_numbers_never_move_back(box: Outbox) -> None:
    box.update_sync_state(kit.TENANT, kit.STORE_ID, server_cursor=9, last_error="x")
    box.update_sync_state(kit.TENANT, kit.STORE_ID, server_cursor=4, last_error=None)
    state = box.sync_state(kit.TENANT, kit.STORE_ID)
    assert state.server_cursor == 9 and state.last_error is None
    with pytest.raises(ValueError, match="unknown sync-state"):
        box.update_sync_state(kit.TENANT, kit.STORE_ID, bogus=1)


def test_damaged_file_is_named_not_crashed(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as box:
        box.append(_event())
    path.write_bytes(b"this is not sqlite" * 300)
    for _ in range(2):  # no crash loop: the same clear answer every time
        with pytest.raises(OutboxError) as caught:
            Outbox(path)
        assert caught.value.reason is OutboxReason.DAMAGED
        assert str(path) in caught.value.message and "agent restore" in caught.value.message


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE outbox_meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(OutboxError) as caught:
        Outbox(path)
    assert caught.value.reason is OutboxReason.NEWER_SCHEMA


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real, tiny tmpfs: the disk that fills up, or that is remounted read-only."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs for the disk-fault tests: {done.stderr!r}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_a_clear_error_and_keeps_what_was_written(small_fs: Path) -> None:
    path = small_fs / "outbox.db"
    written = 0

    def fill(box: Outbox) -> None:
        nonlocal written
        for i in range(10_000):
            box.append(AGENT.event("order", f"o-{i}", "order.created", {"pad": "x" * 2000}))
            written += 1

    with Outbox(path) as box, pytest.raises(OutboxError) as caught:
        fill(box)
    assert caught.value.reason is OutboxReason.DISK_FULL, caught.value.message
    assert str(path) in caught.value.message
    assert written > 0
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_fs)], check=True)
    with Outbox(path) as box:
        assert len(box.events()) == written  # every append that returned is there
        assert box.check() == "ok"


def test_read_only_disk_is_a_clear_error(small_fs: Path) -> None:
    path = small_fs / "outbox.db"
    with Outbox(path) as box:
        box.append(_event())
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        with pytest.raises(OutboxError) as caught, Outbox(path) as box:
            box.append(_event("o-2"))
        assert caught.value.reason in (OutboxReason.READ_ONLY, OutboxReason.UNREADABLE)
        assert str(path) in caught.value.message
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    with Outbox(path) as box:
        assert len(box.events()) == 1

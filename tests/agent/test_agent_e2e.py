"""The agent end to end, through ``sequencer-cli``, against a real server process on
SQLite and on PostgreSQL: two agents work offline, the server is killed in the middle of
a push and started again, both sync, and the server's stream is exactly the union of the
two outboxes, gap-free, with every local receipt verifying against the sequencer's key.
Then the recovery guide's two agent-side paths: an unsynced export re-ingested with
``bulk-ingest``, and ``sync-agent`` over a window after the server lost its tail."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stateset_sequencer.agent.config import AgentHome
from stateset_sequencer.agent.keystore import KeyStore
from stateset_sequencer.agent.outbox import Outbox, State
from stateset_sequencer.agent.service import AgentService
from stateset_sequencer.client import check_receipt
from stateset_sequencer.ves.signing import parse_public_key
from tests.agent.conftest import ADMIN_KEY, SEQUENCER_PK, Sequencer, cli, init_agent, ok

PK = parse_public_key(SEQUENCER_PK)


def _init(sequencer: Sequencer, home: Path) -> uuid.UUID:
    agent_id, args = init_agent(sequencer, home)
    again = ok(cli(*args, home=home))  # safe to re-run: same key, same outbox
    assert "key 1 (kept)" in again.stdout
    return agent_id


def _emit_many(home: Path, prefix: str, count: int) -> None:
    """Bulk emits in process (one CLI start per event would dominate the test's time);
    the CLI's own emit is exercised beside them."""
    place = AgentHome(home)
    config = place.load()
    with Outbox(place.outbox_path(None, config)) as box:
        service = AgentService(config, box, KeyStore(home))
        for i in range(count):
            service.emit("order", f"{prefix}-{i}", "order.created", {"i": i, "by": prefix})


def _outbox(home: Path) -> Outbox:
    return Outbox(home / "outbox.db")


def _status(home: Path, *extra: str) -> dict[str, object]:
    done = cli("agent", "status", "--json", *extra, home=home)
    assert done.returncode == 0, done.stderr
    value: dict[str, object] = json.loads(done.stdout)
    return value


def test_two_offline_agents_a_crash_mid_push_and_the_union(
    sequencer: Sequencer, homes: tuple[Path, Path]
) -> None:
    home_a, home_b = homes
    _init(sequencer, home_a)
    _init(sequencer, home_b)

    sequencer.process.stop()  # the sequencer goes away; the agents keep working
    ok(
        cli(
            "agent",
            "emit",
            "--entity-type",
            "order",
            "--entity-id",
            "a-cli",
            "--event-type",
            "order.created",
            "--payload",
            '{"total": 12}',
            home=home_a,
        )
    )
    payload = home_b / "payload.json"
    payload.write_text('{"total": 7, "lines": [1, 2]}')
    ok(
        cli(
            "agent",
            "emit",
            "--entity-type",
            "order",
            "--entity-id",
            "b-cli",
            "--event-type",
            "order.created",
            "--payload",
            f"@{payload}",
            "--base-version",
            "auto",
            home=home_b,
        )
    )
    _emit_many(home_a, "a", 40)
    _emit_many(home_b, "b", 25)

    down = cli("agent", "push", home=home_a)
    assert down.returncode == 1 and "unreachable" in down.stderr, down.stderr
    assert "Traceback" not in down.stderr
    status = _status(home_a)
    assert status["unsynced"] == 41
    assert status["server"] == {"reachable": False, "error": status["server"]["error"]}  # type: ignore[index]
    assert status["last_error"]

    # Back up; agent A pushes one event per request and the server dies under it.
    sequencer.process.start()
    pusher = subprocess.Popen(
        [sys.executable, "-m", "stateset_sequencer", "agent", "push", "--batch-size", "1"],
        env={**_env(), "SEQUENCER_HOME": str(home_a)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(sequencer.stream()) < 5:
        assert time.monotonic() < deadline, "the push never started"
        time.sleep(0.05)
    sequencer.process.kill()
    _out, err = pusher.communicate(timeout=120)
    assert pusher.returncode == 1, err
    assert "Traceback" not in err
    with _outbox(home_a) as box:
        counts = box.counts()
    assert 0 < counts["acked"] < 41 and counts["acked"] + counts["pending"] + counts["pushed"] == 41

    sequencer.process.start()
    ok(cli("agent", "sync", home=home_a))
    ok(cli("agent", "sync", home=home_b))
    ok(cli("agent", "sync", home=home_a))  # sees B's events; nothing more to push

    served = sequencer.stream()
    assert [e["sequence_number"] for e in served] == list(range(1, len(served) + 1))
    served_ids = [e["event_id"] for e in served]
    assert len(set(served_ids)) == len(served_ids) == 41 + 26
    union: set[str] = set()
    for home in homes:
        with _outbox(home) as box:
            events = box.events()
            assert {e.state for e in events} == {State.ACKED}
            for event in events:
                assert event.receipt is not None
                check_receipt(event.receipt, event.envelope, PK)
                assert served[event.receipt.sequence_number - 1]["event_id"] == str(event.event_id)
                union.add(str(event.event_id))
    assert union == set(served_ids)

    for home in homes:
        status = _status(home)
        assert status["unsynced"] == 0 and status["conflicts"] == 0
        server = status["server"]
        assert isinstance(server, dict) and server["reachable"] is True
    # A's cursor sits at the head after its last sync (it pulled everything).
    assert _status(home_a)["lag"] == 0

    verified = cli(
        "verify-events",
        "--all-streams",
        "--database-url",
        sequencer.database_url,
        "--sequencer-public-key",
        SEQUENCER_PK,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("SEQUENCER_", "DATABASE_"))}


def test_unsynced_export_bulk_ingests_then_push_only_replays(
    sequencer: Sequencer, tmp_path: Path
) -> None:
    home = tmp_path / "agent"
    _init(sequencer, home)
    _emit_many(home, "x", 15)
    export = tmp_path / "unsynced.ndjson"
    done = ok(cli("export-events", "--status", "unsynced", "--output", str(export), home=home))
    assert "exported 15 unsynced" in done.stdout
    manifest = json.loads((tmp_path / "unsynced.ndjson.manifest.json").read_text())
    assert manifest["format"] == "stateset-agent-export" and manifest["event_count"] == 15

    # An altered export is refused before anything is sent.
    altered = tmp_path / "altered.ndjson"
    altered.write_bytes(export.read_bytes().replace(b'"x-3"', b'"x-4"', 1))
    (tmp_path / "altered.ndjson.manifest.json").write_text(json.dumps(manifest))
    refused = cli(
        "bulk-ingest", "--file", str(altered), "--url", sequencer.url, "--api-key", ADMIN_KEY
    )
    assert refused.returncode == 1 and "does not match its manifest" in refused.stderr
    assert sequencer.stream() == []

    ingested = ok(
        cli("bulk-ingest", "--file", str(export), "--url", sequencer.url, "--api-key", ADMIN_KEY)
    )
    assert "15 events: 15 accepted" in ingested.stdout
    pushed = ok(cli("agent", "push", "--json", home=home))
    report = json.loads(pushed.stdout)
    assert report["acked"] == 15 and report["replayed"] == 15
    with _outbox(home) as box:
        for event in box.events():
            assert event.receipt is not None
            check_receipt(event.receipt, event.envelope, PK)
    assert [e["event_id"] for e in sequencer.stream()] == [
        json.loads(line)["event_id"] for line in export.read_text().splitlines()
    ]


async def test_sync_agent_resequences_what_the_server_lost(
    sequencer: Sequencer, tmp_path: Path
) -> None:
    home = tmp_path / "agent"
    _init(sequencer, home)
    start = datetime.now(UTC) - timedelta(seconds=1)
    _emit_many(home, "w", 20)
    ok(cli("agent", "push", home=home))
    with _outbox(home) as box:
        before = {e.event_id: e.receipt for e in box.events()}

    # What a restore from an older backup leaves: the last eight events are gone.
    await sequencer.sql("DELETE FROM ves_sequencer_receipts WHERE sequence_number > 12")
    await sequencer.sql("DELETE FROM ves_events WHERE sequence_number > 12")
    await sequencer.sql(
        "DELETE FROM ves_event_ids WHERE event_id NOT IN (SELECT event_id FROM ves_events)"
    )
    await sequencer.sql("UPDATE sequence_counters SET current_sequence = 12")
    assert len(sequencer.stream()) == 12

    end = datetime.now(UTC) + timedelta(seconds=1)
    done = ok(
        cli(
            "sync-agent",
            "--start-time",
            start.isoformat(),
            "--end-time",
            end.isoformat(),
            "--json",
            home=home,
        )
    )
    report = json.loads(done.stdout)
    assert report["total"] == 20 and report["replayed_same"] == 12 and report["resequenced"] == 8
    assert report["receipt_mismatches"] == []
    served = sequencer.stream()
    assert [e["sequence_number"] for e in served] == list(range(1, 21))
    with _outbox(home) as box:
        after = {e.event_id: e for e in box.events()}
    for event_id, event in after.items():
        assert event.receipt is not None
        check_receipt(event.receipt, event.envelope, PK)
        if before[event_id] is not None and before[event_id].sequence_number <= 12:  # type: ignore[union-attr]
            assert event.receipt == before[event_id]

    # Again: everything is held now, with the receipts this outbox holds.
    again = json.loads(
        ok(
            cli(
                "sync-agent",
                "--start-time",
                start.isoformat(),
                "--end-time",
                end.isoformat(),
                "--json",
                home=home,
            )
        ).stdout
    )
    assert again["replayed_same"] == 20 and again["resequenced"] == 0

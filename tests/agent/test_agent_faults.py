"""The agent under faults and bad input, against a real server process (and a stand-in
only where the real one never misbehaves that way: unsigned or wrongly signed receipts).
Every refusal leaves the event in the outbox with its reason; nothing is lost or sent
twice; every command fails in one line naming what to do."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from stateset_sequencer.agent.config import AgentConfig, AgentHome
from stateset_sequencer.agent.keystore import KeyStore
from stateset_sequencer.agent.outbox import Outbox, State
from stateset_sequencer.agent.service import AgentService
from stateset_sequencer.client import check_receipt
from stateset_sequencer.client.errors import SequencerUnavailable
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.serverproc import fake_sequencer
from stateset_sequencer.ves import signing
from stateset_sequencer.ves.signing import parse_public_key
from tests.agent.conftest import (
    ADMIN_KEY,
    SEQUENCER_PK,
    STORE,
    TENANT,
    Sequencer,
    cli,
    init_agent,
    init_args,
    ok,
)

PK = parse_public_key(SEQUENCER_PK)


def _init(sequencer: Sequencer, home: Path, url: str | None = None) -> uuid.UUID:
    return init_agent(sequencer, home, url)[0]


# Nothing listens here: the agents set up with it work offline.
NOWHERE = "http://127.0.0.1:9"


def _offline_agent(home: Path, url: str = NOWHERE, api_key: str | None = None) -> uuid.UUID:
    """An agent with a key and a configuration, registered nowhere."""
    agent_id = uuid.uuid4()
    KeyStore(home).create(agent_id)
    AgentHome(home).save(AgentConfig(agent_id, TENANT, STORE, (url,), api_key=api_key))
    return agent_id


@contextmanager
def _service(home: Path) -> Iterator[AgentService]:
    place = AgentHome(home)
    config = place.load()
    with Outbox(place.outbox_path(None, config)) as box:
        yield AgentService(config, box, KeyStore(home))


def _emit(home: Path, n: int, prefix: str = "o", **options: Any) -> list[uuid.UUID]:
    with _service(home) as service:
        return [
            service.emit("order", f"{prefix}-{i}", "order.created", {"i": i}, **options).event_id
            for i in range(n)
        ]


def _states(home: Path) -> dict[uuid.UUID, Any]:
    with Outbox(home / "outbox.db") as box:
        return {e.event_id: e for e in box.events()}


async def test_rejected_signature_stays_with_its_reason(
    sqlite_sequencer: Sequencer, tmp_path: Path
) -> None:
    home = tmp_path / "a"
    _init(sqlite_sequencer, home)
    ids = _emit(home, 3)
    # The second event's signature damaged on disk: the sequencer must refuse it alone.
    conn = sqlite3.connect(home / "outbox.db")
    (text,) = conn.execute(
        "SELECT envelope FROM outbox_events WHERE event_id=?", (str(ids[1]),)
    ).fetchone()
    envelope = json.loads(text)
    envelope["agent_signature"] = "0x" + "11" * 64
    conn.execute(
        "UPDATE outbox_events SET envelope=? WHERE event_id=?", (json.dumps(envelope), str(ids[1]))
    )
    conn.commit()
    conn.close()

    with _service(home) as service:
        report = await service.push()
    assert (report.acked, report.rejected) == (2, 1)
    assert report.reasons == {"invalid_signature": 1}
    states = _states(home)
    assert states[ids[1]].state is State.REJECTED
    assert states[ids[1]].rejection_reason == "invalid_signature"
    assert states[ids[0]].state is states[ids[2]].state is State.ACKED
    # A second push sends nothing: the refusal stands until someone acts on it.
    with _service(home) as service:
        assert (await service.push()).sent == 0
    assert len(sqlite_sequencer.stream()) == 2
    status = json.loads(ok(cli("agent", "status", "--json", home=home)).stdout)
    assert status["counts"]["rejected"] == 1 and status["unsynced"] == 0


async def test_revoked_key_rotation_and_rebase(sqlite_sequencer: Sequencer, tmp_path: Path) -> None:
    home = tmp_path / "a"
    agent_id = _init(sqlite_sequencer, home)
    revoked = sqlite_sequencer.admin("DELETE", f"/api/v1/agents/keys/{TENANT}/{agent_id}/1")
    assert revoked.status_code == 200, revoked.text
    (first,) = _emit(home, 1)
    pushed = cli("agent", "push", home=home)
    assert pushed.returncode == 1 and "refused" in pushed.stderr
    event = _states(home)[first]
    assert event.state is State.REJECTED and event.rejection_reason.startswith("agent_key_invalid")

    ok(cli("agent", "rotate-key", "--grace", "0s", "--admin-api-key", ADMIN_KEY, home=home))
    rebased = json.loads(ok(cli("agent", "rebase", str(first), "--json", home=home)).stdout)
    assert rebased["rebased_from"] == str(first)
    (later,) = _emit(home, 1, prefix="after")
    ok(cli("agent", "push", home=home))
    states = _states(home)
    assert states[first].state is State.SUPERSEDED
    new_id = uuid.UUID(rebased["event_id"])
    for event_id in (new_id, later):
        assert states[event_id].state is State.ACKED
        assert states[event_id].envelope.agent_key_id == 2
    ok(cli("agent", "revoke-retired", "--admin-api-key", ADMIN_KEY, home=home))
    keys = {k.key_id: k.status for k in KeyStore(home).keys(agent_id)}
    assert keys == {1: "revoked", 2: "active"}


async def test_policy_refusal_stays(sqlite_sequencer: Sequencer, tmp_path: Path) -> None:
    home = tmp_path / "a"
    agent_id = _init(sqlite_sequencer, home)
    policy = sqlite_sequencer.admin(
        "PUT",
        f"/api/v1/agents/{agent_id}/policy",
        json={
            "tenantId": str(TENANT),
            "allowedEventTypes": ["order.*"],
            "allowedEntityTypes": ["*"],
            "requireBaseVersion": False,
        },
    )
    assert policy.status_code == 200, policy.text
    with _service(home) as service:
        allowed = service.emit("order", "o-1", "order.created", {}).event_id
        denied = service.emit("invoice", "i-1", "invoice.created", {}).event_id
        report = await service.push()
    assert (report.acked, report.rejected) == (1, 1)
    states = _states(home)
    assert states[allowed].state is State.ACKED
    assert states[denied].state is State.REJECTED
    assert states[denied].rejection_reason == "agent_policy_denied"


async def test_conflicts_listed_and_rebased(sqlite_sequencer: Sequencer, tmp_path: Path) -> None:
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    _init(sqlite_sequencer, home_a)
    _init(sqlite_sequencer, home_b)
    # Both agents, offline from each other, change the same entity at version 0.
    with _service(home_a) as service:
        service.emit("order", "shared", "order.created", {"by": "a"}, base_version="auto")
        await service.push()
    with _service(home_b) as service:
        mine = service.emit("order", "shared", "order.updated", {"by": "b"}, base_version="auto")
        assert mine.envelope.base_version == 0
        report = await service.push()
    assert report.conflicts == 1
    listed = json.loads(ok(cli("agent", "conflicts", "--json", home=home_b)).stdout)
    assert listed["count"] == 1
    assert listed["conflicts"][0]["actual_version"] == 1
    assert listed["conflicts"][0]["event_id"] == str(mine.event_id)

    rebased = json.loads(
        ok(cli("agent", "rebase", str(mine.event_id), "--json", home=home_b)).stdout
    )
    assert rebased["base_version"] == 1 and rebased["rebased_from"] == str(mine.event_id)
    # Rebasing the same conflict twice is refused; nothing is appended.
    twice = cli("agent", "rebase", str(mine.event_id), home=home_b)
    assert twice.returncode == 1 and "superseded" in twice.stderr
    ok(cli("agent", "push", home=home_b))
    states = _states(home_b)
    assert states[mine.event_id].state is State.SUPERSEDED
    assert states[mine.event_id].superseded_by == uuid.UUID(rebased["event_id"])
    assert states[uuid.UUID(rebased["event_id"])].state is State.ACKED
    assert len(sqlite_sequencer.stream()) == 2


class _DroppingProxy:
    """A loopback proxy that forwards every request to the sequencer but, while
    ``drop`` is set, closes the connection instead of passing on an ingest's answer:
    the server committed, the agent never heard."""

    def __init__(self, target: str) -> None:
        self.drop = True
        self.forwarded = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length")
                }
                answer = httpx.request(
                    self.command, target + self.path, content=body, headers=headers, timeout=30
                )
                if self.path.startswith("/api/v1/ves/events/ingest"):
                    proxy.forwarded += 1
                    if proxy.drop:
                        self.close_connection = True
                        self.connection.close()
                        return
                self.send_response(answer.status_code)
                for name in ("content-type", "retry-after"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_GET(self) -> None:
                self._relay()

            def do_POST(self) -> None:
                self._relay()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_answers_lost_after_commit_are_replayed_not_doubled(
    sequencer: Sequencer, tmp_path: Path
) -> None:
    proxy = _DroppingProxy(sequencer.url)
    try:
        home = tmp_path / "a"
        _init(sequencer, home, url=proxy.url)
        ids = _emit(home, 6)
        with _service(home) as service, pytest.raises(SequencerUnavailable) as caught:
            await service.push(batch_size=3)
        assert "Traceback" not in str(caught.value)
        assert proxy.forwarded >= 1
        # The server holds the first batch; the agent knows only that it sent it.
        assert len(sequencer.stream()) == 3
        states = _states(home)
        assert [states[i].state for i in ids[:3]] == [State.PUSHED] * 3
        assert [states[i].state for i in ids[3:]] == [State.PENDING] * 3

        proxy.drop = False
        with _service(home) as service:
            report = await service.push(batch_size=3)
        assert report.acked == 6 and report.replayed == 3
        served = sequencer.stream()
        assert [e["event_id"] for e in served] == [str(i) for i in ids]
        for event in _states(home).values():
            assert event.receipt is not None
            check_receipt(event.receipt, event.envelope, PK)
    finally:
        proxy.close()


@pytest.mark.parametrize("issuer", ["unsigned", "wrongly-signed"])
async def test_untrusted_receipts_are_not_acknowledged(tmp_path: Path, issuer: str) -> None:
    receipts: signing.ReceiptSigner = (
        kit.LegacyUnsignedReceipts() if issuer == "unsigned" else kit.WronglySignedReceipts()
    )
    home = tmp_path / "a"
    with fake_sequencer(receipts, publish_key=issuer != "unsigned") as url:
        _offline_agent(home, url, api_key="ss_x")
        _emit(home, 2)
        pushed = cli("agent", "push", home=home)
        assert pushed.returncode == 1 and "receipt_not_trusted" in pushed.stderr, pushed.stderr
        assert "Traceback" not in pushed.stderr
        assert {e.state for e in _states(home).values()} == {State.PUSHED}
        if issuer == "unsigned":
            # Only when the operator says so explicitly, and only unsigned, never wrong.
            config = AgentHome(home).load().with_values(allow_unsigned_receipts=True)
            AgentHome(home).save(config)
            ok(cli("agent", "push", home=home))
            assert {e.state for e in _states(home).values()} == {State.ACKED}


def test_corrupted_outbox_names_the_file(tmp_path: Path) -> None:
    home = tmp_path / "a"
    _offline_agent(home)
    _emit(home, 1)
    (home / "outbox.db").write_bytes(b"\x00garbage" * 4096)
    for _ in range(2):
        done = cli("agent", "status", home=home)
        assert done.returncode == 1
        assert str(home / "outbox.db") in done.stderr and "agent restore" in done.stderr
        assert "Traceback" not in done.stderr


def test_bad_input_is_refused_with_nothing_appended(tmp_path: Path) -> None:
    home = tmp_path / "a"
    _offline_agent(home)
    base = ["agent", "emit", "--entity-type", "order", "--entity-id", "o", "--event-type", "e"]
    cases = [
        ([*base, "--payload", "{not json"], 2, "not JSON"),
        ([*base, "--payload", "{}", "--base-version", "soon"], 2, "--base-version"),
        ([*base, "--payload", "{}", "--command-id", "nope"], 2, "not a UUID"),
        ([*base, "--payload", "@/no/such/file"], 2, "no such file"),
        (
            [
                "agent",
                "emit",
                "--entity-type",
                "x" * 200,
                "--entity-id",
                "o",
                "--event-type",
                "e",
                "--payload",
                "{}",
            ],
            1,
            "entity_type",
        ),
        (["agent", "rebase", str(uuid.uuid4())], 1, "no event"),
        (["agent", "rebase", "not-a-uuid"], 2, "not a UUID"),
        (["agent", "push", "--batch-size", "0"], 2, "batch-size"),
        (["export-events", "--status", "bogus", "--output", str(tmp_path / "x")], 2, "--status"),
        (
            [
                "export-events",
                "--status",
                "all",
                "--output",
                str(tmp_path / "x"),
                "--tenant-id",
                str(TENANT),
            ],
            2,
            "do not apply",
        ),
        (
            ["sync-agent", "--start-time", "yesterday", "--end-time", "2026-01-01T00:00:00Z"],
            2,
            "RFC 3339",
        ),
        (
            [
                "sync-agent",
                "--start-time",
                "2026-01-02T00:00:00Z",
                "--end-time",
                "2026-01-01T00:00:00Z",
            ],
            1,
            "after",
        ),
        (["agent", "rotate-key", "--grace", "forever"], 2, "--grace"),
    ]
    for args, code, needle in cases:
        done = cli(*args, home=home)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert needle in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    with Outbox(home / "outbox.db") as box:
        assert box.events() == []
    missing = cli("agent", "status", home=tmp_path / "nobody")
    assert missing.returncode == 1 and "agent init" in missing.stderr


async def test_cross_tenant_key_is_refused_and_nothing_stored(
    sqlite_sequencer: Sequencer, tmp_path: Path
) -> None:
    home = tmp_path / "a"
    _init(sqlite_sequencer, home)
    other = sqlite_sequencer.admin(
        "POST", "/api/v1/admin/api-keys", json={"tenantId": str(uuid.uuid4()), "write": True}
    ).json()["apiKey"]
    place = AgentHome(home)
    place.save(place.load().with_values(api_key=other))
    _emit(home, 2)
    done = cli("agent", "push", home=home)
    assert done.returncode == 1 and "403" in done.stderr and "push_refused" in done.stderr
    assert sqlite_sequencer.stream() == []
    assert {e.state for e in _states(home).values()} == {State.PUSHED}


async def test_watch_backs_off_while_down_then_syncs(
    sqlite_sequencer: Sequencer, tmp_path: Path
) -> None:
    home = tmp_path / "a"
    _init(sqlite_sequencer, home)
    _emit(home, 4)
    sqlite_sequencer.process.stop()
    waits: list[float] = []
    lines: list[str] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            sqlite_sequencer.process.start()

    with _service(home) as service:
        rounds = await service.watch(
            interval_s=1.0, max_backoff_s=3.0, rounds=5, on_round=lines.append, sleep=sleep
        )
    assert rounds == 5
    assert waits[:3] == [1.0, 2.0, 3.0]  # doubling, capped, while down
    assert waits[3:] == [1.0]  # back to the interval once it syncs
    assert any("unreachable" in line for line in lines)
    assert {e.state for e in _states(home).values()} == {State.ACKED}


def test_backup_while_writing_and_restore(tmp_path: Path) -> None:
    home = tmp_path / "a"
    _offline_agent(home)
    _emit(home, 50)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        with _service(home) as service:
            while not stop.is_set():
                service.emit("order", f"live-{i}", "order.created", {"i": i})
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        out = tmp_path / "outbox-backup.db"
        done = ok(cli("agent", "backup", "--output", str(out), home=home))
    finally:
        stop.set()
        thread.join()
    assert "backed up" in done.stdout
    manifest = json.loads((tmp_path / "outbox-backup.db.manifest.json").read_text())
    assert manifest["event_count"] >= 50 and (out.stat().st_mode & 0o777) == 0o600
    again = cli("agent", "backup", "--output", str(out), home=home)
    assert again.returncode == 1 and "already exists" in again.stderr

    # Restore into a fresh home: refused over an existing outbox without --force.
    refused = cli("agent", "restore", str(out), home=home)
    assert refused.returncode == 1 and "--force" in refused.stderr
    ok(cli("agent", "restore", str(out), "--force", home=home))
    with Outbox(home / "outbox.db") as box:
        assert len(box.events()) == manifest["event_count"]
    assert list(home.glob("outbox.db.replaced-*"))  # the replaced file is kept

    altered = tmp_path / "altered.db"
    altered.write_bytes(out.read_bytes()[:-100] + b"\x00" * 100)
    (tmp_path / "altered.db.manifest.json").write_text(json.dumps(manifest))
    bad = cli("agent", "restore", str(altered), "--force", home=home)
    assert bad.returncode == 1 and "does not match its manifest" in bad.stderr


def test_keys_are_private_and_the_config_too(tmp_path: Path) -> None:
    home = tmp_path / "a"
    _offline_agent(home, api_key="ss_secret")
    assert (home / "agent.json").stat().st_mode & 0o777 == 0o600
    assert (home / "keys").stat().st_mode & 0o777 == 0o700
    for path in (home / "keys").rglob("*.key"):
        assert path.stat().st_mode & 0o777 == 0o600


def test_rotation_not_registered_never_signs(tmp_path: Path) -> None:
    """A key the server refused (or never heard of) is revoked locally at once, so the
    agent keeps signing with the key the server knows."""
    home = tmp_path / "a"
    agent_id = _offline_agent(home)
    keys = KeyStore(home)
    done = cli("agent", "rotate-key", "--grace", "1h", home=home)
    assert done.returncode == 1 and "unreachable" in done.stderr
    assert keys.current(agent_id).key_id == 1
    assert {k.key_id: k.status for k in keys.keys(agent_id)} == {1: "active", 2: "revoked"}


def test_a_changed_receipt_key_is_refused_until_repinned(
    sqlite_sequencer: Sequencer, tmp_path: Path
) -> None:
    """The key pinned at init is the one receipts must verify under: a sequencer that
    answers under another key (a swapped server, a lost key) is not trusted by push, and
    init says so until the operator re-pins on purpose."""
    home = tmp_path / "a"
    agent_id = _init(sqlite_sequencer, home)
    place = AgentHome(home)
    other = signing.Signer(bytes([3]) * 32).public_key.hex()
    place.save(place.load().with_values(sequencer_public_key=other))
    _emit(home, 1)
    pushed = cli("agent", "push", home=home)
    assert pushed.returncode == 1 and "receipt_not_trusted" in pushed.stderr
    assert {e.state for e in _states(home).values()} == {State.PUSHED}
    args = init_args(sqlite_sequencer.url, agent_id)
    refused = cli(*args, home=home)
    assert refused.returncode == 1 and "receipt_key_changed" in refused.stderr
    assert "--repin" in refused.stderr
    ok(cli(*args, "--repin", home=home))
    assert place.load().sequencer_public_key == SEQUENCER_PK
    ok(cli("agent", "push", home=home))
    assert {e.state for e in _states(home).values()} == {State.ACKED}

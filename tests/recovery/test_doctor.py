"""``sequencer-cli doctor`` on SQLite and PostgreSQL, against a real server process.

A healthy populated store passes every check; each way of breaking it (server down, a gap
made with a raw DELETE, a counter set wrong with a raw UPDATE, agents gone quiet) gives
exactly its own FAIL line and exit 1, and nothing else fails with it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stateset_sequencer.config import Settings
from stateset_sequencer.recovery import doctor
from stateset_sequencer.sequencer import api_keys
from stateset_sequencer.sequencer.auth import NIL
from stateset_sequencer.store.rows import time_to_text
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.testing.serverproc import server
from tests.recovery.conftest import STREAM_2, Db, cli, populate

CHECKS = ["health", "database", "counters", "gaps", "agents", "history", "commitment", "anchoring"]


@pytest.fixture
async def live(db: Db, tmp_path: Path) -> AsyncIterator[tuple[Db, str, str]]:
    """A populated store (two streams), an admin key, and a server on the same database."""
    await populate(db.store, 12)
    await populate(db.store, 5, stream=STREAM_2)
    key, _ = await api_keys.create_key(
        db.store, api_keys.KeySpec(tenant_id=NIL, admin=True), actor="test", actor_type="test"
    )
    env = {
        "DATABASE_URL": db.url,
        "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
        "DB_MIGRATE_ON_STARTUP": "false",
    }
    with server(tmp_path, env) as (url, _log):
        yield db, url, key


def run_doctor(db: Db, url: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    result = cli("doctor", "--url", url, "--database-url", db.url, "--json", *extra)
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["checks"]] == CHECKS
    assert report["ok"] == (result.returncode == 0), result
    return result.returncode, {c["name"]: c for c in report["checks"]}


def failing(checks: dict[str, Any]) -> list[str]:
    return [name for name, c in checks.items() if c["status"] == "FAIL"]


async def test_a_healthy_store_passes_every_check(live: tuple[Db, str, str]) -> None:
    db, url, key = live
    code, checks = run_doctor(db, url, "--api-key", key)
    assert code == 0, checks
    assert [c["status"] for c in checks.values()] == ["PASS"] * 7 + ["SKIP"]
    assert "answered 200" in checks["health"]["detail"]
    assert f"{db.dialect} ping" in checks["database"]["detail"]
    assert "2 stream(s)" in checks["counters"]["detail"]
    assert str(kit.AGENT_ID) in checks["agents"]["detail"]
    assert "same 4 event(s) through the API" in checks["history"]["detail"]
    commitment = checks["commitment"]["detail"]
    assert "would commit 1..12 (12 leaves" in commitment and "1..5 (5 leaves" in commitment
    assert checks["anchoring"]["detail"] == "not configured (L2_RPC_URL is not set)"
    assert await db.store.list_commitments(kit.STREAM) == []  # a dry run writes nothing

    text = cli("doctor", "--url", url, "--database-url", db.url, "--api-key", key)
    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:8]] == [
        ["PASS" if name != "anchoring" else "SKIP", name] for name in CHECKS
    ]
    assert lines[-1] == "ok: nothing failed"


async def test_server_down_fails_only_health(live: tuple[Db, str, str]) -> None:
    db, _url, key = live
    down = f"http://127.0.0.1:{free_port()}"
    code, checks = run_doctor(db, down, "--api-key", key)
    assert code == 1
    assert failing(checks) == ["health"]
    assert "unreachable" in checks["health"]["detail"]
    assert "API not checked (health failed)" in checks["history"]["detail"]


async def test_a_deleted_event_fails_only_gaps(live: tuple[Db, str, str]) -> None:
    db, url, key = live
    await db.sql(
        "DELETE FROM ves_events WHERE tenant_id = $1 AND store_id = $2 AND sequence_number = 5",
        kit.TENANT,
        kit.STORE_ID,
    )
    code, checks = run_doctor(db, url, "--api-key", key)
    assert code == 1
    assert failing(checks) == ["gaps"]
    assert checks["gaps"]["detail"] == (
        f"1 stream(s) with gaps: {kit.TENANT}/{kit.STORE_ID} missing 5"
    )
    # the dry run commits what can be committed: the run before the hole
    assert "would commit 1..4 (4 leaves" in checks["commitment"]["detail"]


async def test_a_wrong_counter_fails_only_counters(live: tuple[Db, str, str]) -> None:
    db, url, key = live
    await db.sql(
        "UPDATE sequence_counters SET current_sequence = 9 WHERE tenant_id = $1 AND store_id = $2",
        kit.TENANT,
        kit.STORE_ID,
    )
    code, checks = run_doctor(db, url, "--api-key", key)
    assert code == 1
    assert failing(checks) == ["counters"]
    assert checks["counters"]["detail"] == (
        f"1 stream(s) out of step: {kit.TENANT}/{kit.STORE_ID}: counter 9 != highest stored "
        "event 12"
    )
    fixed = cli("repair-counters", "--apply", "--database-url", db.url)
    assert fixed.returncode == 0, fixed.stderr
    assert run_doctor(db, url, "--api-key", key)[0] == 0


async def test_quiet_agents_fail_only_agents(live: tuple[Db, str, str]) -> None:
    db, url, key = live
    old = datetime.now(UTC) - timedelta(hours=30)
    await db.sql(
        "UPDATE ves_events SET sequenced_at = $1",
        time_to_text(old) if db.dialect == "sqlite" else old,
    )
    code, checks = run_doctor(db, url, "--api-key", key)
    assert code == 1
    assert failing(checks) == ["agents"]
    assert (
        "no event from any of 1 agent(s) with an active key in the last 24 h"
        in (checks["agents"]["detail"])
    )
    assert "newest stored event at" in checks["agents"]["detail"]
    assert run_doctor(db, url, "--api-key", key, "--recent-hours", "48")[0] == 0


async def test_an_empty_store_passes(db: Db, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db.url, "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex()}
    with server(tmp_path, env) as (url, _log):
        code, checks = run_doctor(db, url)
    assert code == 0, checks
    assert checks["agents"]["detail"] == "no events stored yet"
    assert checks["history"]["detail"] == "no events stored yet"


async def test_without_url_it_probes_the_configured_port_and_counts_one_event_once(
    db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --url: the service's own HOST and PORT (it used to probe localhost:8080); a
    stream of one event has it checked once (it used to say "the same 2 event(s)")."""
    await populate(db.store, 1)
    key, _ = await api_keys.create_key(
        db.store, api_keys.KeySpec(tenant_id=NIL, admin=True), actor="test", actor_type="test"
    )
    env = {"DATABASE_URL": db.url, "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex()}
    with server(tmp_path, env) as (url, _log):
        monkeypatch.setenv("PORT", url.rsplit(":", 1)[1])
        monkeypatch.setenv("HOST", "0.0.0.0")  # the wildcard: probed over loopback
        monkeypatch.delenv("SEQUENCER_URL", raising=False)
        result = cli("doctor", "--database-url", db.url, "--api-key", key, "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 0, checks
    assert checks["health"]["detail"].startswith(f"{url}/health answered 200")
    assert checks["history"]["detail"].endswith("and the same 1 event(s) through the API")


def test_service_url_follows_host_and_port() -> None:
    assert doctor.service_url(Settings(PORT=9123)) == "http://127.0.0.1:9123"
    assert doctor.service_url(Settings(HOST="10.1.2.3", PORT=81)) == "http://10.1.2.3:81"
    assert doctor.service_url(Settings(HOST="::", PORT=81)) == "http://[::1]:81"
    assert doctor.service_url(Settings(HOST="fd00::5", PORT=81)) == "http://[fd00::5]:81"
    assert doctor.service_url(Settings(HOST="seq.internal")) == "http://seq.internal:8080"
    given = doctor.DoctorOptions(Settings(PORT=9123), url="http://elsewhere:1")
    assert given.service_url == "http://elsewhere:1"


# --- without a database or server: unit tests of the run --------------------------------------


def test_an_unreachable_database_fails_once_and_skips_the_rest(tmp_path: Path) -> None:
    result = cli(
        "doctor",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        "--database-url",
        f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
    )
    assert result.returncode == 1
    lines = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()[:8]}
    assert lines == {
        "health": "FAIL",
        "database": "FAIL",
        "counters": "SKIP",
        "gaps": "SKIP",
        "agents": "SKIP",
        "history": "SKIP",
        "commitment": "SKIP",
        "anchoring": "SKIP",
    }
    missing = cli("doctor", "--database-url", f"sqlite:///{tmp_path / 'none.db'}")
    assert "no SQLite database at" in missing.stdout
    assert not (tmp_path / "none.db").exists()


class _Rpc(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        assert request["method"] == "eth_chainId"
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": "0x2105"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def rpc() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Rpc)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v2/secret-key"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_anchoring_asks_the_rpc_for_its_chain_id(rpc: str) -> None:
    # The node answers, but the rest of the anchoring settings are missing: the service
    # would refuse to start, so doctor fails and names them (the whole set is checked
    # against a real node in tests/anchoring/test_doctor_anchoring.py).
    ctx = doctor.Context(doctor.DoctorOptions(Settings(L2_RPC_URL=rpc)))
    partial = await doctor.check_anchoring(ctx)
    assert partial.status == "FAIL" and "eth_chainId 8453, but anchoring needs" in partial.detail
    assert "SET_REGISTRY_ADDRESS, SEQUENCER_PRIVATE_KEY are missing" in partial.detail
    assert "secret-key" not in partial.detail
    wrong = doctor.Context(doctor.DoctorOptions(Settings(L2_RPC_URL=rpc, L2_CHAIN_ID="1")))
    assert (await doctor.check_anchoring(wrong)).status == "FAIL"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    failed = await doctor.check_anchoring(
        doctor.Context(doctor.DoctorOptions(Settings(L2_RPC_URL=closed)))
    )
    assert failed.status == "FAIL" and "ConnectError" in failed.detail


async def test_a_service_that_never_answers_fails_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doctor, "NETWORK_TIMEOUT_S", 0.5)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # the kernel completes the handshake; nobody ever reads or answers
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = time.monotonic()
        result = await doctor.check_health(
            doctor.Context(doctor.DoctorOptions(Settings(), url=url))
        )
        assert time.monotonic() - started < 3
    assert result.status == "FAIL" and "unreachable" in result.detail

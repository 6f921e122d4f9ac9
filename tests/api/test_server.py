"""End to end against a real server process on loopback, once on SQLite and once on
PostgreSQL, through the client SDK: register an agent key, ingest signed events, read them
back, replay them, revoke the key, and see later events rejected. Also what a first start
with no configuration at all does (what ``make run`` does).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from stateset_sequencer.client import SequencerClient, SequencerError
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.ports import free_port
from stateset_sequencer.testing.serverproc import server
from stateset_sequencer.ves import signing

ADMIN_KEY = "ss_00000000" + "serverprocessadminkey00000000000"
KEY_LINE = re.compile(r"^\s+(ss_[A-Za-z0-9_-]{40})\s*$", re.MULTILINE)


@pytest.fixture(params=["sqlite", "postgres"])
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {"BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY, "SEQUENCER_ENV": "test"}
    if request.param == "sqlite":
        yield {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}"}
        return
    database = pg.create_database("seqe2e")
    try:
        yield {**env, "DATABASE_URL": database.dsn, "VES_SEQUENCER_SIGNING_KEY": "07" * 32}
    finally:
        pg.drop_database(database.name)


async def test_round_trip_over_a_real_socket(tmp_path: Path, backend_env: dict[str, str]) -> None:
    with server(tmp_path, backend_env) as (url, _out):
        async with SequencerClient(url, ADMIN_KEY) as admin:
            assert (await admin.health())["status"] == "healthy"
            await admin.register_agent_key(kit.TENANT, kit.AGENT_ID, 1, kit.AGENT.public_key)
            agent_key = await admin.create_api_key(
                kit.TENANT, store_ids=(kit.STORE_ID,), write=True, agent_id=kit.AGENT_ID
            )

        async with SequencerClient(url, agent_key) as agent:
            assert await agent.use_sequencer_key() is not None
            events = [kit.event(i) for i in range(5)]
            first = await agent.ingest(kit.AGENT_ID, events)  # receipts checked, signatures too
            assert (first.events_accepted, first.head_sequence) == (5, 5)

            stored = [item async for item in agent.iter_events(kit.TENANT, kit.STORE_ID, page=2)]
            assert [s["event_id"] for s in stored] == [str(e.event_id) for e in events]
            assert [s["sequence_number"] for s in stored] == [1, 2, 3, 4, 5]
            assert stored[0]["agent_signature"] == events[0].to_wire()["agent_signature"]

            replay = await agent.ingest(kit.AGENT_ID, events)
            assert (replay.events_accepted, replay.replayed) == (0, 5)
            assert replay.receipts == first.receipts

            with pytest.raises(SequencerError) as refused:
                await agent.revoke_agent_key(kit.TENANT, kit.AGENT_ID, 1)
            assert refused.value.status == 403  # an agent key is not an admin

        async with SequencerClient(url, ADMIN_KEY) as admin:
            revoked = await admin.revoke_agent_key(kit.TENANT, kit.AGENT_ID, 1)
            assert revoked["key"]["status"] == "revoked"
            late = await admin.ingest(kit.AGENT_ID, [kit.event(9)])
            assert late.events_accepted == 0
            assert [r.reason for r in late.rejections] == [
                "agent_key_invalid: Agent key has been revoked"
            ]
            assert await admin.head(kit.TENANT, kit.STORE_ID) == 5
            detail = await admin.event(events[0].event_id)
            assert detail["receipt"]["receiptHash"] == first.receipts[0].receipt_hash.hex()


def test_first_start_with_no_configuration(tmp_path: Path) -> None:
    """No environment at all: SQLite under ./data, a receipt key, and an admin key shown
    once; a second start reuses everything and shows no key."""
    env = {"SEQUENCER_ENV": "test"}
    with server(tmp_path, env) as (url, out):
        text = out.read_text()
        keys = KEY_LINE.findall(text)
        assert len(keys) == 1, text
        assert httpx.get(f"{url}/health/detailed", timeout=5).status_code == 401
        detailed = httpx.get(
            f"{url}/health/detailed", headers={"Authorization": f"ApiKey {keys[0]}"}, timeout=5
        )
        assert detailed.status_code == 200 and detailed.json()["status"] == "healthy"
    data = tmp_path / "data"
    assert (data / "sequencer.db").exists()
    assert (data / "sequencer.key").stat().st_mode & 0o777 == 0o600
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "sequencer.db").stat().st_mode & 0o777 == 0o600
    assert keys[0] not in (data / "sequencer.db").read_bytes().decode("latin-1")

    with server(tmp_path, env) as (url, out):
        assert KEY_LINE.findall(out.read_text()) == []
        again = httpx.get(f"{url}/health/detailed", headers={"X-API-Key": keys[0]}, timeout=5)
        assert again.status_code == 200


def test_bad_configuration_fails_fast_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "AUTH_MODE": "disabled", "SEQUENCER_ENV": "test"}
    result = subprocess.run(
        [sys.executable, "-m", "stateset_sequencer", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "ALLOW_AUTH_DISABLED" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_logs_are_json_lines_naming_request_tenant_and_store(tmp_path: Path) -> None:
    env = {"BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY, "SEQUENCER_ENV": "test", "LOG_LEVEL": "info"}
    with server(tmp_path, env) as (url, out):
        response = httpx.get(
            f"{url}/api/v1/ves/head",
            params={"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)},
            headers={"X-API-Key": ADMIN_KEY, "x-request-id": "trace-42"},
            timeout=5,
        )
        assert response.status_code == 200
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    assert lines and all("timestamp" in line and "level" in line for line in lines)
    (access,) = [line for line in lines if line.get("request_id") == "trace-42"]
    assert access["route"] == "/api/v1/ves/head" and access["status"] == 200
    assert (access["tenant_id"], access["store_id"]) == (str(kit.TENANT), str(kit.STORE_ID))
    assert ADMIN_KEY not in out.read_text()


# --- the receipt-signing key: always one, and beside the data ------------------------------


def refused_start(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VES_"))}
    return subprocess.run(
        [sys.executable, "-m", "stateset_sequencer", "serve", "--port", str(free_port())],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def public_tables(dsn: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
            return n
        finally:
            await conn.close()

    return asyncio.run(count())


async def signed_round_trip(url: str, expected_key: bytes) -> None:
    """Register an agent, ingest, and check each receipt under ``expected_key``."""
    async with SequencerClient(url, ADMIN_KEY) as admin:
        await admin.register_agent_key(kit.TENANT, kit.AGENT_ID, 1, kit.AGENT.public_key)
    async with SequencerClient(url, ADMIN_KEY, sequencer_public_key=expected_key) as client:
        outcome = await client.ingest(kit.AGENT_ID, [kit.event(i) for i in range(2)])
        assert outcome.events_accepted == 2
        assert [r.signature_alg for r in outcome.receipts] == ["ed25519"] * 2
        assert (await client.sequencer_info())["publicKey"] == expected_key.hex()


def kept_public_key(path: Path) -> bytes:
    return signing.Signer(path.read_text().strip()).public_key


def test_postgres_without_a_key_in_production_refuses_to_start(tmp_path: Path) -> None:
    database = pg.create_database("seqkey")
    try:
        env = {
            "DATABASE_URL": database.dsn,
            "DATA_DIR": str(tmp_path / "data"),
            "SEQUENCER_ENV": "production",
            "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        }
        result = refused_start(tmp_path, env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "VES_SEQUENCER_SIGNING_KEY " in result.stderr
        assert "VES_SEQUENCER_SIGNING_KEY_FILE" in result.stderr
        assert "Traceback" not in result.stderr
        # Refused before anything was created: no key on disk, no schema.
        assert not (tmp_path / "data").exists()
        assert public_tables(database.dsn) == 0
    finally:
        pg.drop_database(database.name)


async def test_postgres_in_development_makes_a_key_beside_the_data_and_signs(
    tmp_path: Path,
) -> None:
    database = pg.create_database("seqkey")
    data = tmp_path / "pgdata"
    env = {
        "DATABASE_URL": database.dsn,
        "DATA_DIR": str(data),
        "SEQUENCER_ENV": "development",
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "LOG_LEVEL": "info",
    }
    try:
        with server(tmp_path, env) as (url, out):
            key_file = data / "sequencer.key"
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            assert stat.S_IMODE(data.stat().st_mode) == 0o700
            await signed_round_trip(url, kept_public_key(key_file))
        lines = [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{")]
        (warning,) = [x for x in lines if x.get("receipt_key_file") == str(key_file)]
        assert warning["level"] == "warning" and "same key" in warning["event"]
        assert "VES_SEQUENCER_SIGNING_KEY_FILE" in warning["event"]
        (ready,) = [x for x in lines if x["event"] == "sequencer ready to serve"]
        assert ready["receipt_key"] == f"{key_file} (generated now beside the data)"
        assert not (tmp_path / "data").exists()  # DATA_DIR, not the working directory
    finally:
        pg.drop_database(database.name)


async def test_sqlite_elsewhere_keeps_its_key_beside_the_database(tmp_path: Path) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere" / "db"
    work.mkdir()
    env = {
        "DATABASE_URL": f"sqlite:///{elsewhere / 'events.db'}",
        "SEQUENCER_ENV": "test",
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
    }
    with server(work, env) as (url, _out):
        key_file = elsewhere / "sequencer.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        await signed_round_trip(url, kept_public_key(key_file))
    assert not (work / "data").exists()  # neither DATA_DIR nor the working directory

    # The same key named by VES_SEQUENCER_SIGNING_KEY_FILE serves production, as the
    # refusal message says; loosened permissions refuse the start.
    production = {**env, "SEQUENCER_ENV": "production"}
    refused = refused_start(work, production)
    assert refused.returncode == 1
    assert f"VES_SEQUENCER_SIGNING_KEY_FILE={key_file}" in refused.stderr
    key_file.chmod(0o644)
    loose = refused_start(work, {**production, "VES_SEQUENCER_SIGNING_KEY_FILE": str(key_file)})
    assert loose.returncode == 1 and "chmod 600" in loose.stderr
    assert "Traceback" not in loose.stderr
    key_file.chmod(0o600)
    with server(work, {**production, "VES_SEQUENCER_SIGNING_KEY_FILE": str(key_file)}) as (
        url,
        _out,
    ):
        async with SequencerClient(url, ADMIN_KEY) as client:
            assert await client.use_sequencer_key() == kept_public_key(key_file)

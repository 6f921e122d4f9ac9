"""End to end against a real server process on loopback, once on SQLite and once on
PostgreSQL, through the client SDK: register an agent key, ingest signed events, read them
back, replay them, revoke the key, and see later events rejected. Also what a first start
with no configuration at all does (what ``make run`` does).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stateset_sequencer.client import SequencerClient, SequencerError
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.serverproc import free_port, server

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

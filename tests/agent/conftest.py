"""A real sequencer process on loopback for the agent tests, on SQLite and on PostgreSQL,
restartable on the same port, and ``sequencer-cli`` run as a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.serverproc import ServerProcess
from stateset_sequencer.ves import signing
from tests.rawsql import behind_the_store

ADMIN_KEY = "ss_00000000" + "agentsadminkey000000000000000000"
SEQUENCER_PK = signing.Signer(kit.SEQUENCER_SEED).public_key.hex()
TENANT = kit.TENANT
STORE = kit.STORE_ID


@dataclass
class Sequencer:
    process: ServerProcess
    database_url: str
    dialect: str

    @property
    def url(self) -> str:
        return self.process.url

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, self.url + path, headers={"X-API-Key": ADMIN_KEY}, timeout=30, **kwargs
        )

    def mint_agent_key(self, agent_id: uuid.UUID) -> str:
        """A write key bound to one agent, as an operator would hand out."""
        answer = self.admin(
            "POST",
            "/api/v1/admin/api-keys",
            json={"tenantId": str(TENANT), "write": True, "agentId": str(agent_id)},
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["apiKey"])

    def stream(self) -> list[dict[str, Any]]:
        """The whole stream as the server serves it."""
        events: list[dict[str, Any]] = []
        start = 1
        while True:
            page = self.admin(
                "GET",
                "/api/v1/ves/events",
                params={
                    "tenant_id": str(TENANT),
                    "store_id": str(STORE),
                    "from": start,
                    "limit": 500,
                },
            ).json()
            events.extend(item["envelope"] for item in page["events"])
            if not page["has_more"]:
                return events
            start = page["next_sequence"]

    async def sql(self, statement: str, *args: Any) -> list[Any]:
        """Behind the server's back (a restore that lost rows). ``$n`` placeholders."""
        return await behind_the_store(self.database_url, self.dialect, statement, *args)


@pytest.fixture(params=["sqlite", "postgres"])
async def sequencer(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sequencer]:
    if request.param == "sqlite":
        async for found in _serve(tmp_path, f"sqlite:///{tmp_path / 'server.db'}", "sqlite"):
            yield found
    else:
        async with pg.scratch_database() as dsn:
            async for found in _serve(tmp_path, dsn, "postgres"):
                yield found


@pytest.fixture
async def sqlite_sequencer(tmp_path: Path) -> AsyncIterator[Sequencer]:
    async for found in _serve(tmp_path, f"sqlite:///{tmp_path / 'server.db'}", "sqlite"):
        yield found


async def _serve(tmp_path: Path, database_url: str, dialect: str) -> AsyncIterator[Sequencer]:
    env = {
        "DATABASE_URL": database_url,
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "VES_SEQUENCER_ID": str(uuid.UUID(int=7)),
        "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
        "SEQUENCER_ENV": "test",
    }
    child = ServerProcess(tmp_path, env)
    child.start()
    try:
        yield Sequencer(child, database_url, dialect)
    finally:
        child.stop()


def cli(
    *args: str, home: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQUENCER_", "DATABASE_"))}
    if home is not None:
        env["SEQUENCER_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "stateset_sequencer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        input=stdin,
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


def init_args(url: str, agent_id: uuid.UUID, api_key: str | None = None) -> list[str]:
    """``agent init`` for one agent of the test stream, registering with the admin key."""
    stream = ["--tenant-id", str(TENANT), "--store-id", str(STORE), "--agent-id", str(agent_id)]
    key = ["--api-key", api_key] if api_key else []
    return ["agent", "init", "--url", url, *key, "--admin-api-key", ADMIN_KEY, *stream]


def init_agent(
    sequencer: Sequencer, home: Path, url: str | None = None
) -> tuple[uuid.UUID, list[str]]:
    """A new agent with a write key bound to it, set up in ``home``; returns its id and
    the init command (to run it again)."""
    agent_id = uuid.uuid4()
    args = init_args(url or sequencer.url, agent_id, sequencer.mint_agent_key(agent_id))
    done = ok(cli(*args, home=home))
    assert "key 1 (created)" in done.stdout
    return agent_id, args


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "agent-a", tmp_path / "agent-b"

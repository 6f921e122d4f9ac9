"""End to end on a real node: anvil on loopback (from node_modules), our registry deployed
there, and a real server process that reaches the node only through ``L2_RPC_URL`` (by
way of a TCP gate the test can shut). Ingest, automatic commitments, automatic anchors,
finality by block confirmations, both verify routes, a reorg that ends in re-anchoring,
the node going away (breaker open, API answering, ``/health/detailed`` saying so) and
coming back, and at the end the commands: ``verify-events --deep``, ``verify-anchor``,
``anchor --pending --finalize`` and the walk-through of docs/ANCHORING.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from web3 import HTTPProvider, Web3

from stateset_sequencer.anchoring import contract
from stateset_sequencer.client import SequencerClient
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.anvil import Anvil
from stateset_sequencer.testing.gate import TcpGate
from stateset_sequencer.testing.kit import until
from stateset_sequencer.testing.serverproc import server
from stateset_sequencer.ves import signing
from tests.anchoring.conftest import _anvil_binary

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "ss_00000000" + "anchorendtoendadminkey0000000000"
VES = "/api/v1/ves"
CONFIRMATIONS = 3
SEQUENCER_PK = signing.Signer(kit.SEQUENCER_SEED).public_key.hex()
LIMIT_S = 60.0
AUTH = {"Authorization": f"ApiKey {ADMIN_KEY}"}


@dataclass
class Deployed:
    anvil: Anvil
    w3: Web3
    registry: str
    sequencer_key: str
    gate: TcpGate

    def env(self, db: Path) -> dict[str, str]:
        return {
            "DATABASE_URL": f"sqlite:///{db}",
            "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
            "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
            "SEQUENCER_ENV": "test",
            "L2_RPC_URL": self.gate.url,
            "SET_REGISTRY_ADDRESS": self.registry,
            "SEQUENCER_PRIVATE_KEY": self.sequencer_key,
            "L2_CHAIN_ID": str(self.anvil.chain_id),
        }

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.anvil.rpc("evm_mine")


@pytest.fixture
def deployed() -> Iterator[Deployed]:
    with Anvil(binary=_anvil_binary(), chain_id=31338) as anvil:
        w3 = Web3(HTTPProvider(anvil.url))
        owner, sender = anvil.accounts[0], anvil.accounts[1]
        registry = contract.deploy(w3, owner.address)
        contract.authorize(w3, registry, owner.address, sender.address)
        with TcpGate("127.0.0.1", anvil.port) as gate:
            yield Deployed(anvil, w3, registry, sender.private_key, gate)


FAST = {
    "COMMIT_WORKER_ENABLED": "true",
    "COMMIT_MAX_EVENTS": "4",
    "COMMIT_INTERVAL_SECS": "0.3",
    "COMMIT_POLL_INTERVAL_MS": "50",
    "ANCHOR_INTERVAL_SECS": "0.2",
    "ANCHOR_FINALITY_POLL_SECS": "0.2",
    "ANCHOR_FINALITY_CONFIRMATIONS": str(CONFIRMATIONS),
    "ANCHOR_RPC_TIMEOUT_SECS": "3",
    "ANCHOR_RECEIPT_TIMEOUT_SECS": "10",
    "ANCHOR_BREAKER_OPEN_SECS": "1",
    "LEADER_LOCK_RETRY_SECS": "0.1",
}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "L2_"))}
    return subprocess.run(
        [sys.executable, "-m", "stateset_sequencer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **env},
        cwd=ROOT,
    )


def stored_commitments(db: Path) -> list[tuple[str, str]]:
    """(batch id, transaction hash) of every stored commitment, in stream order."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT batch_id, chain_tx_hash FROM ves_commitments ORDER BY sequence_start"
        ).fetchall()
    return [(str(uuid.UUID(str(b))), bytes(t).hex()) for b, t in rows]


def doc_commands(markdown: Path, heading: str) -> list[str]:
    """The commands of the bash blocks under one heading (comments dropped)."""
    section = markdown.read_text(encoding="utf-8").split(heading, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = [
        re.split(r"\s#", line, maxsplit=1)[0].strip() for b in blocks for line in b.splitlines()
    ]
    return [line for line in lines if line and not line.startswith("#")]


async def commitments(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.get(
        f"{VES}/commitments",
        params={"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID), "anchored": "any"},
    )
    assert response.status_code == 200, response.text
    return list(response.json()["commitments"])


async def all_final(http: httpx.AsyncClient, deployed: Deployed, head: int) -> bool:
    rows = await commitments(http)
    if not rows or rows[-1]["sequence_end"] != head:
        return False
    if all(r["is_anchored"] for r in rows):
        return True
    deployed.mine()  # confirmations come only from blocks on top
    return False


async def verify_both_ways(http: httpx.AsyncClient, row: dict[str, Any]) -> None:
    batch = row["batch_id"]
    read = (await http.get(f"{VES}/anchor/{batch}/verify")).json()
    assert read["anchored_on_chain"] and read["verified"], read
    assert read["chain_tx_hash"] == row["chain_tx_hash"]
    log = await http.post(
        f"{VES}/commitments/verify",
        json={"batch_id": batch, "chain_tx_hash": "0x" + row["chain_tx_hash"]},
    )
    assert log.json()["valid"] is True, log.text


async def ingest(agent: SequencerClient, start: int, count: int) -> None:
    result = await agent.ingest(kit.AGENT_ID, [kit.event(i) for i in range(start, start + count)])
    assert result.events_accepted == count, result.rejections


async def test_ingest_commit_anchor_confirm_reorg_outage_and_verify(
    tmp_path: Path, deployed: Deployed
) -> None:
    db = tmp_path / "e2e.db"
    env = deployed.env(db)
    with server(tmp_path, {**env, **FAST}) as (url, _out):
        async with (
            SequencerClient(url, ADMIN_KEY) as admin,
            httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"ApiKey {ADMIN_KEY}"}
            ) as http,
        ):
            await admin.register_agent_key(kit.TENANT, kit.AGENT_ID, 1, kit.AGENT.public_key)
            await ingest(admin, 0, 10)
            await until(lambda: all_final(http, deployed, 10), "events 1..10 anchored", LIMIT_S)
            first = await commitments(http)
            assert (first[0]["sequence_start"], first[0]["sequence_end"]) == (1, 4)
            for row in first:
                await verify_both_ways(http, row)
            # Each anchor is the registry's record too, field for field.
            registry = deployed.w3.eth.contract(
                address=Web3.to_checksum_address(deployed.registry), abi=contract.abi()
            )
            assert (
                registry.functions.getHeadSequence(
                    kit.TENANT.bytes + bytes(16), kit.STORE_ID.bytes + bytes(16)
                ).call()
                == 10
            )

            # --- a reorg drops the next anchor; the worker anchors it again ---
            snapshot = deployed.anvil.rpc("evm_snapshot")
            await ingest(admin, 10, 4)

            async def sent() -> bool:
                rows = await commitments(http)
                return rows[-1]["sequence_end"] == 14 and rows[-1]["chain_tx_hash"] is not None

            await until(sent, "events 11..14 sent", LIMIT_S)
            dropped = (await commitments(http))[-1]
            assert dropped["is_anchored"] is False  # not final: no block on top yet
            assert deployed.anvil.rpc("evm_revert", [snapshot]) is True
            await until(lambda: all_final(http, deployed, 14), "re-anchored after reorg", LIMIT_S)
            again = (await commitments(http))[-1]
            assert again["batch_id"] == dropped["batch_id"]
            assert again["chain_tx_hash"] != dropped["chain_tx_hash"]
            await verify_both_ways(http, again)
            gone = await http.post(
                f"{VES}/commitments/verify",
                json={"batch_id": again["batch_id"], "chain_tx_hash": dropped["chain_tx_hash"]},
            )
            assert gone.json()["reason"] == "transaction_not_found"

            # --- the node goes away: the API answers, health says why, anchoring waits ---
            deployed.gate.down()
            await ingest(admin, 14, 4)

            async def breaker_open() -> bool:
                health = (await http.get("/health/detailed")).json()
                return bool(health["components"]["anchoring"]["circuit_breaker"]["state"] == "open")

            await until(breaker_open, "the breaker opens", LIMIT_S)
            health = (await http.get("/health/detailed")).json()
            assert health["status"] == "degraded"
            assert health["components"]["anchoring"]["status"] == "degraded"
            assert health["components"]["database"]["status"] == "healthy"
            refused = await http.get(f"{VES}/anchor/{first[0]['batch_id']}/verify")
            assert refused.status_code == 503
            assert refused.json()["error"]["details"]["reason"] in {
                "ANCHOR_BREAKER_OPEN",
                "CHAIN_UNAVAILABLE",
            }
            assert await admin.head(kit.TENANT, kit.STORE_ID) == 18  # sequencing goes on

            deployed.gate.up()
            await until(lambda: all_final(http, deployed, 18), "anchored after outage", LIMIT_S)
            health = (await http.get("/health/detailed")).json()
            assert health["components"]["anchoring"]["circuit_breaker"]["state"] == "closed"
            assert health["status"] == "healthy"
            for row in await commitments(http):
                await verify_both_ways(http, row)

    # --- the commands, on the database the server left, against the same chain ---
    deep = cli(
        env, "verify-events", "--all-streams", "--deep", "--sequencer-public-key", SEQUENCER_PK
    )
    assert deep.returncode == 0, deep.stdout + deep.stderr
    assert "0 finding(s)" in deep.stdout
    assert re.search(r"anchors\W+\d+ anchored commitments compared with the chain", deep.stdout)
    stream = ["--tenant-id", str(kit.TENANT), "--store-id", str(kit.STORE_ID)]
    checked = cli(env, "verify-anchor", *stream)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("matches the chain") >= 5

    # The walk-through of docs/ANCHORING.md §6, command by command, on the same data.
    rows = stored_commitments(db)
    walk = {
        **env,
        "TENANT": str(kit.TENANT),
        "STORE": str(kit.STORE_ID),
        "BATCH": rows[0][0],
        "TX": rows[0][1],
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    commands = doc_commands(ROOT / "docs" / "ANCHORING.md", "## 6. Commands")
    assert len(commands) == 6
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=walk,
            cwd=tmp_path,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"

    # A restore from a backup older than the last anchor: events 15..18 and their
    # commitment are gone, and the database alone is self-consistent. The chain is not.
    older = tmp_path / "older.db"
    shutil.copy(db, older)
    with sqlite3.connect(older) as conn:
        conn.execute("DELETE FROM ves_events WHERE sequence_number > 14")
        conn.execute("DELETE FROM ves_commitments WHERE sequence_start > 14")
        conn.execute("UPDATE sequence_counters SET current_sequence = 14")
    report = tmp_path / "older.json"
    lost = cli(
        {**env, "DATABASE_URL": f"sqlite:///{older}"},
        "verify-events", "--all-streams", "--deep", "--report", str(report),
        "--sequencer-public-key", SEQUENCER_PK,
    )  # fmt: skip
    assert lost.returncode == 1, lost.stdout + lost.stderr
    found = json.loads(report.read_text())["findings"]
    assert [(f["code"], f["sequence"]) for f in found] == [("ANCHORED_EVENTS_MISSING", 15)]
    assert "15..18" in found[0]["message"]

    # A commitment altered in the database after it was anchored: both commands name it.
    with sqlite3.connect(db) as conn:
        (batch,) = conn.execute(
            "SELECT batch_id FROM ves_commitments ORDER BY sequence_start LIMIT 1"
        ).fetchone()
        conn.execute(
            "UPDATE ves_commitments SET new_state_root = ? WHERE batch_id = ?",
            (bytes(32), batch),
        )
    report = tmp_path / "deep.json"
    damaged = cli(
        env, "verify-events", "--all-streams", "--deep", "--report", str(report),
        "--sequencer-public-key", SEQUENCER_PK,
    )  # fmt: skip
    assert damaged.returncode == 1, damaged.stdout
    found = json.loads(report.read_text())["findings"]
    mismatch = [f for f in found if f["code"] == "ANCHOR_MISMATCH"]
    assert len(mismatch) == 1 and "new_state_root" in mismatch[0]["message"], found
    assert {f["check"] for f in found} == {"commitments", "anchors"}
    named = cli(env, "verify-anchor", "--batch-id", str(uuid.UUID(batch)))
    assert named.returncode == 1 and "new_state_root" in named.stdout

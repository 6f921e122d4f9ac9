"""The anchoring methods for real, with the async and the blocking client: a real server
on SQLite that reaches a real anvil node holding our registry. Each client commits and
anchors its own stream, then verifies both ways (the registry's record, the
transaction's log)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import HTTPProvider, Web3

from stateset_sequencer.anchoring import contract
from stateset_sequencer.client import Agent, RetryPolicy, SequencerClient, SyncSequencerClient
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.anvil import Anvil
from stateset_sequencer.testing.serverproc import server
from stateset_sequencer.ves import signing
from tests.anchoring.conftest import _anvil_binary
from tests.client.test_sdk_server import Calls

ADMIN_KEY = "ss_00000000" + "clientsdkanchoringadminkey000000"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("sdk-anchor")
    with Anvil(binary=_anvil_binary(), chain_id=31339) as anvil:
        w3 = Web3(HTTPProvider(anvil.url))
        owner, sender = anvil.accounts[0], anvil.accounts[1]
        registry = contract.deploy(w3, owner.address)
        contract.authorize(w3, registry, owner.address, sender.address)
        env = {
            "DATABASE_URL": f"sqlite:///{tmp / 'anchor.db'}",
            "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
            "SEQUENCER_ENV": "test",
            "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
            "L2_RPC_URL": anvil.url,
            "L2_CHAIN_ID": str(anvil.chain_id),
            "SET_REGISTRY_ADDRESS": registry,
            "SEQUENCER_PRIVATE_KEY": sender.private_key,
            # The test commits and anchors; no worker races it.
            "COMMIT_WORKER_ENABLED": "false",
            "ANCHOR_WORKER_ENABLED": "false",
        }
        with server(tmp, env) as (base, _out):
            yield base


async def anchor_a_stream(admin: Calls) -> None:
    tenant, store, agent_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    signer = signing.Signer(os.urandom(32))
    agent = Agent(signer, tenant, store, agent_id)
    await admin("register_agent_key", tenant, agent_id, 1, signer.public_key)
    events = [agent.event("order", f"o-{n}", "order.created", {"n": n}) for n in range(4)]
    assert (await admin("ingest", agent_id, events)).head_sequence == 4

    made = await admin("create_commitment", tenant, store, 1, 2)
    batch = uuid.UUID(made["batch_id"])
    anchored: dict[str, Any] = await admin("anchor", batch)
    assert anchored["status"] == "anchored" and anchored["merkle_root"] == made["merkle_root"]
    read = await admin("verify_anchor", batch)
    assert read["anchored_on_chain"] is True and read["verified"] is True
    logged = await admin("verify_anchor_transaction", batch, anchored["chain_tx_hash"])
    assert logged["valid"] is True and logged["reason"] is None
    wrong = await admin("verify_anchor_transaction", batch, "0x" + "00" * 32)
    assert wrong["valid"] is False

    both = await admin("commit_and_anchor", tenant, store, max_events=10)
    assert (both["sequence_start"], both["sequence_end"], both["status"]) == (3, 4, "anchored")
    # Sent and mined; final (is_anchored) only after the worker's confirmations.
    listed = await admin("list_commitments", tenant, store, anchored=True)
    hashes = [anchored["chain_tx_hash"], both["chain_tx_hash"]]
    assert [c["chain_tx_hash"] for c in listed] == [h.removeprefix("0x") for h in hashes]


async def test_anchoring_with_the_async_client(url: str) -> None:
    async with SequencerClient(url, ADMIN_KEY, retry=RetryPolicy(base_delay=0.01)) as admin:
        await anchor_a_stream(Calls(admin, set()))


async def test_anchoring_with_the_blocking_client(url: str) -> None:
    with SyncSequencerClient(url, ADMIN_KEY, retry=RetryPolicy(base_delay=0.01)) as admin:
        await anchor_a_stream(Calls(admin, set()))

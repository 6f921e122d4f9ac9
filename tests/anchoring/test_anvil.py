"""The contract on a real node: anvil from node_modules, started by the ``Anvil`` helper on
loopback with the chain id asked for, reached over HTTP JSON-RPC the way the sequencer
reaches its chain. Snapshots, reverts and mining are the node's own."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from web3 import HTTPProvider, Web3

from stateset_sequencer.anchoring import contract
from stateset_sequencer.anchoring.contract import ContractRevert, decode_batch_committed
from stateset_sequencer.testing.anvil import Anvil, AnvilFailed, AnvilMissing, require_anvil

from .conftest import ANVIL_CHAIN_ID, revert_of

TENANT = b"\x71" * 32
STORE = b"\x72" * 32


def commit_args(batch_id: bytes, start: int, end: int) -> tuple[object, ...]:
    return (
        batch_id,
        TENANT,
        STORE,
        b"\xe1" * 32,
        bytes(32),
        b"\xa1" * 32,
        start,
        end,
        end - start + 1,
    )


@pytest.fixture
def w3(anvil: Anvil) -> Web3:
    return Web3(HTTPProvider(anvil.url, request_kwargs={"timeout": 10}))


def test_anvil_answers_with_the_chain_id_asked_for_and_its_dev_accounts(
    anvil: Anvil, w3: Web3
) -> None:
    assert anvil.url.startswith("http://127.0.0.1:")
    assert anvil.chain_id == ANVIL_CHAIN_ID
    assert w3.eth.chain_id == ANVIL_CHAIN_ID
    assert int(anvil.rpc("eth_chainId"), 16) == ANVIL_CHAIN_ID
    assert [a.address for a in anvil.accounts] == list(w3.eth.accounts)
    for account in anvil.accounts:
        assert Account.from_key(account.private_key).address == account.address


def test_deploy_commit_snapshot_revert_and_mine(anvil: Anvil, w3: Web3) -> None:
    owner, sequencer, stranger = (a.address for a in anvil.accounts[:3])
    address = contract.deploy(w3, owner)
    contract.authorize(w3, address, owner, sequencer)
    registry = contract.registry(w3, address)

    snapshot = anvil.rpc("evm_snapshot")
    batch_id = b"\x01" * 32
    tx_hash = registry.functions.commitBatch(*commit_args(batch_id, 1, 3)).transact(
        {"from": sequencer}
    )
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert receipt["status"] == 1
    (log,) = receipt["logs"]
    decoded = decode_batch_committed([bytes(t) for t in log["topics"]], bytes(log["data"]))
    assert decoded is not None and decoded.batch_id == batch_id
    assert (decoded.sequence_start, decoded.sequence_end, decoded.event_count) == (1, 3, 3)
    assert registry.functions.batchExists(batch_id).call() is True
    assert registry.functions.getHeadSequence(TENANT, STORE).call() == 3

    # Over HTTP the revert data arrives on web3's exception, as the chain client sees it.
    refused = revert_of(
        lambda: registry.functions.commitBatch(*commit_args(b"\x02" * 32, 4, 4)).transact(
            {"from": stranger}
        )
    )
    assert refused == ContractRevert("NotAuthorizedSequencer", ())
    mismatch = revert_of(
        lambda: registry.functions.commitBatch(*commit_args(b"\x02" * 32, 9, 9)).call(
            {"from": sequencer}
        )
    )
    assert mismatch.name == "StateRootMismatch"

    assert anvil.rpc("evm_revert", [snapshot]) is True
    assert registry.functions.batchExists(batch_id).call() is False
    assert registry.functions.getHeadSequence(TENANT, STORE).call() == 0
    # The snapshot was taken after deployment: the registry and its sequencer remain.
    assert registry.functions.authorizedSequencers(sequencer).call() is True

    before = w3.eth.block_number
    anvil.rpc("evm_mine")
    assert w3.eth.block_number == before + 1
    anvil.rpc("anvil_mine", [3])
    assert w3.eth.block_number == before + 4


def test_rpc_errors_and_a_stopped_node_are_reported(anvil: Anvil) -> None:
    with pytest.raises(AnvilFailed, match="no_such_method"):
        anvil.rpc("no_such_method")
    stopped = Anvil(binary=require_anvil(), chain_id=7)
    with pytest.raises(AnvilFailed, match="not running"):
        stopped.rpc("eth_chainId")
    with stopped:
        assert int(stopped.rpc("eth_chainId"), 16) == 7
    with pytest.raises(AnvilFailed, match="not running"):
        stopped.rpc("eth_chainId")


def test_a_missing_binary_names_make_node_deps(tmp_path: Path) -> None:
    with pytest.raises(AnvilMissing, match="make node-deps"):
        require_anvil(tmp_path)

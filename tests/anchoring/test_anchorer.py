"""The chain client and the anchoring rules against our registry running in process (web3's
eth-tester on py-evm), over a real SQLite store: stream order, finality, a lost answer, a
reorg, reverts that are reported and never retried, a stale nonce, verification of both
kinds, and a chain that is away."""

from __future__ import annotations

import socket
import uuid
from dataclasses import replace
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3
from web3.types import Wei

from stateset_sequencer.anchoring import contract
from stateset_sequencer.anchoring.anchorer import (
    Anchorer,
    AnchorError,
    AnchorReason,
    all_match,
)
from stateset_sequencer.anchoring.breaker import BreakerState
from stateset_sequencer.anchoring.chain import Chain, ChainConfig, ChainError, ChainFailure
from stateset_sequencer.recovery.verify import verify_streams
from stateset_sequencer.sequencer.commitments import CommitmentEngine
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import CommitmentRow, StreamKey
from stateset_sequencer.testing.evm import SEQUENCER_KEY, STRANGER_KEY, Evm, no_wait
from stateset_sequencer.ves import anchor
from tests.contract.builders import append, make_event, new_stream


@pytest.fixture
def evm() -> Evm:
    return Evm.start()


async def committed(store: Store, stream: StreamKey, sizes: list[int]) -> list[CommitmentRow]:
    total = sum(sizes)
    await append(store, stream, [make_event(stream, i) for i in range(total)])
    engine = CommitmentEngine(store, store)
    return [(await engine.create_next(stream, size)).row for size in sizes]


async def test_commitments_go_on_chain_in_stream_order_and_turn_final(
    evm: Evm, store: Store
) -> None:
    stream = new_stream()
    rows = await committed(store, stream, [3, 2, 4])
    # One block per anchor (auto-mining): the first lies 3 deep once all three are in.
    anchorer = Anchorer(store, evm.chain(), confirmations=4)
    with pytest.raises(AnchorError) as early:
        await anchorer.anchor(rows[1])
    assert early.value.reason is AnchorReason.OUT_OF_ORDER
    assert not await anchorer.chain.batch_exists(rows[1].batch_id)

    passed = await anchorer.anchor_pending(10)
    assert [r.batch_id for r in passed.anchored] == [r.batch_id for r in rows] and not passed.failed
    assert await anchorer.chain.head_sequence(stream.tenant_id, stream.store_id) == 9
    stored = await store.list_commitments(stream, anchored=True)
    assert all(r.chain_tx_hash is not None and r.anchored_at is None for r in stored)
    assert {r.chain_id for r in stored} == {evm.w3.eth.chain_id}

    waiting = await anchorer.confirm_pending(100)
    assert not waiting.confirmed and waiting.waiting == 3
    evm.tester.mine_blocks(1)
    assert [r.batch_id for r in (await anchorer.confirm_pending(100)).confirmed] == [
        rows[0].batch_id
    ]
    evm.tester.mine_blocks(2)
    final = await anchorer.confirm_pending(100)
    assert {r.batch_id for r in final.confirmed} == {r.batch_id for r in rows[1:]}
    again = await store.list_commitments(stream, anchored=True)
    assert all(r.anchored_at is not None for r in again)
    for row in again:
        exists, checks = await anchorer.verify(row)
        assert exists and all_match(checks)
    # Anchoring an anchored commitment again sends nothing.
    before = evm.w3.eth.block_number
    assert (await anchorer.anchor(again[0])).status == "already_anchored"
    assert evm.w3.eth.block_number == before


async def test_a_batch_on_chain_whose_answer_was_lost_is_recorded_from_its_log(
    evm: Evm, store: Store
) -> None:
    stream = new_stream()
    (row,) = await committed(store, stream, [5])
    anchorer = Anchorer(store, evm.chain(), confirmations=1)
    sent = await anchorer.chain.send_commitment(row)  # on chain; the store never heard
    before = evm.w3.eth.block_number
    done = await anchorer.anchor(row)
    assert done.status == "already_anchored"
    assert evm.w3.eth.block_number == before  # nothing sent again
    assert (
        done.row.chain_tx_hash == sent.tx_hash and done.row.chain_block_number == sent.block_number
    )
    assert done.row.chain_tx_hash != bytes(32)  # the real transaction, never a placeholder


async def test_a_reorg_that_drops_the_anchor_ends_in_a_new_anchor(evm: Evm, store: Store) -> None:
    stream = new_stream()
    rows = await committed(store, stream, [2, 2])
    anchorer = Anchorer(store, evm.chain(), confirmations=2)
    await anchorer.anchor(rows[0])
    snapshot = evm.tester.take_snapshot()
    second = (await anchorer.anchor(rows[1])).row
    assert second.chain_tx_hash is not None
    evm.tester.revert_to_snapshot(snapshot)  # the block holding the second anchor is gone
    evm.tester.mine_blocks(3)

    passed = await anchorer.confirm_pending(100)
    assert [r.batch_id for r in passed.confirmed] == [rows[0].batch_id]
    assert [r.batch_id for r in passed.reanchor] == [rows[1].batch_id]
    cleared = await store.get_commitment(rows[1].batch_id)
    assert cleared is not None and cleared.chain_tx_hash is None
    assert not await anchorer.chain.batch_exists(rows[1].batch_id)

    again = await anchorer.anchor_pending(10)
    assert [r.batch_id for r in again.anchored] == [rows[1].batch_id]
    evm.tester.mine_blocks(2)
    await anchorer.confirm_pending(100)
    for row in await store.list_commitments(stream, anchored=True):
        assert row.anchored_at is not None
        exists, checks = await anchorer.verify(row)
        assert exists and all_match(checks)
        assert await anchorer.chain.receipt_block(bytes(row.chain_tx_hash or b"")) is not None


async def test_an_unauthorized_sender_is_reported_and_not_retried(evm: Evm, store: Store) -> None:
    stream = new_stream()
    (row,) = await committed(store, stream, [2])
    evm.fund(STRANGER_KEY)
    chain = evm.chain(STRANGER_KEY)
    calls = 0
    real = chain._once

    async def counted(fn: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(fn)

    chain._once = counted  # type: ignore[method-assign]
    anchorer = Anchorer(store, chain, confirmations=1)
    with pytest.raises(ChainError) as refused:
        await anchorer.anchor(row)
    assert refused.value.failure is ChainFailure.REVERTED
    assert (
        refused.value.revert is not None and refused.value.revert.name == "NotAuthorizedSequencer"
    )
    assert "NotAuthorizedSequencer" in refused.value.message
    assert calls == 3  # chain id, batchExists, one estimate: no retry
    assert chain.breaker.state is BreakerState.CLOSED  # a node that answers is healthy
    assert (await store.get_commitment(row.batch_id)) == row


async def test_a_state_root_that_does_not_chain_reverts_state_root_mismatch(
    evm: Evm, store: Store
) -> None:
    stream = new_stream()
    rows = await committed(store, stream, [2])
    anchorer = Anchorer(store, evm.chain(), confirmations=1)
    await anchorer.anchor(rows[0])
    await append(store, stream, [make_event(stream, i) for i in range(2, 4)])
    forged = replace(
        (await CommitmentEngine(store, store).create_next(stream, 2)).row,
        batch_id=uuid.uuid4(),
        prev_state_root=bytes([9]) * 32,
    )
    with pytest.raises(ChainError) as refused:
        await anchorer.chain.send_commitment(forged)
    assert refused.value.revert is not None
    assert refused.value.revert.name == "StateRootMismatch"
    assert refused.value.revert.args == (rows[0].new_state_root, bytes([9]) * 32)


async def test_a_stale_nonce_after_a_restart_is_learnt_again(evm: Evm, store: Store) -> None:
    stream = new_stream()
    rows = await committed(store, stream, [1, 1, 1])
    first = evm.chain()
    await first.send_commitment(rows[0])  # holds nonce 1 as its next
    restarted = evm.chain()  # a new process with the same key
    await restarted.send_commitment(rows[1])  # uses nonce 1
    sent = await first.send_commitment(rows[2])  # nonce too low, learnt, sent with 2
    tx = evm.w3.eth.get_transaction(sent.tx_hash)  # type: ignore[arg-type]
    assert tx["nonce"] == 2
    assert await first.head_sequence(stream.tenant_id, stream.store_id) == 3


async def test_verifying_a_transaction_names_what_is_wrong(evm: Evm, store: Store) -> None:
    stream = new_stream()
    rows = await committed(store, stream, [2, 3])
    anchorer = Anchorer(store, evm.chain(), confirmations=1)
    first = (await anchorer.anchor(rows[0])).row
    second = (await anchorer.anchor(rows[1])).row
    tx1 = bytes(first.chain_tx_hash or b"")
    reason, checks, block = await anchorer.verify_transaction(first, tx1)
    assert reason is None and all_match(checks) and block == first.chain_block_number
    assert [c.field for c in checks] == [
        "batch_id",
        "tenant_store_key",
        "events_root",
        "new_state_root",
        "sequence_start",
        "sequence_end",
        "event_count",
    ]
    # A transaction that does not exist; one that logs another batch; one to another address.
    assert (await anchorer.verify_transaction(first, bytes([3]) * 32))[0] == "transaction_not_found"
    assert (await anchorer.verify_transaction(second, tx1))[0] == "no_log_for_this_batch"
    transfer = evm.w3.eth.send_transaction({"from": evm.owner, "to": evm.owner, "value": Wei(1)})
    assert (await anchorer.verify_transaction(first, bytes(transfer)))[0] == (
        "not_a_registry_transaction"
    )
    # The stored commitment altered after anchoring: the fields say which.
    damaged = replace(first, merkle_root=bytes(32))
    reason, checks, _ = await anchorer.verify_transaction(damaged, tx1)
    assert reason is None and not all_match(checks)
    assert [c.field for c in checks if not c.match] == ["events_root"]
    exists, fields = await anchorer.verify(damaged)
    assert exists and [c.field for c in fields if not c.match] == ["events_root"]


async def test_a_transaction_of_another_registry_is_not_ours(evm: Evm, store: Store) -> None:
    stream = new_stream()
    (row,) = await committed(store, stream, [2])
    other = contract.deploy(evm.w3, evm.owner)
    contract.authorize(evm.w3, other, evm.owner, Account.from_key(SEQUENCER_KEY).address)
    theirs = Chain(
        ChainConfig("http://unused.invalid", other, SEQUENCER_KEY, receipt_poll_s=0.0),
        w3=evm.w3,
        sleep=no_wait,
    )
    sent = await theirs.send_commitment(row)
    anchorer = Anchorer(store, evm.chain(), confirmations=1)
    reason, checks, _ = await anchorer.verify_transaction(row, sent.tx_hash)
    assert reason == "not_a_registry_transaction" and checks == []


async def test_a_chain_that_is_away_opens_the_breaker(store: Store) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ChainConfig(
        rpc_url=f"http://127.0.0.1:{port}",
        registry_address="0x" + "11" * 20,
        private_key=SEQUENCER_KEY,
        rpc_timeout_s=2.0,
        retries=2,
    )
    chain = Chain(config, sleep=no_wait)
    try:
        with pytest.raises(ChainError) as away:
            await chain.batch_exists(uuid.uuid4())  # three attempts, three failures
        assert away.value.failure is ChainFailure.UNAVAILABLE
        assert "RPC endpoint unavailable" in away.value.message
        assert chain.status().state is BreakerState.CLOSED
        # The fifth failure, in the second call's retries, opens it: the third attempt
        # is refused without touching the network, and so is every call after.
        for _ in range(2):
            with pytest.raises(ChainError) as open_:
                await chain.batch_exists(uuid.uuid4())
            assert open_.value.failure is ChainFailure.BREAKER_OPEN
        assert "circuit breaker is open" in open_.value.message
        status = chain.status()
        assert status.state is BreakerState.OPEN and status.retry_in_s is not None
    finally:
        chain.close()


def test_calldata_the_client_sends_is_the_vectors_layout(evm: Evm) -> None:
    """Our byte-level calldata decodes, through the committed ABI, to the same values."""
    batch, tenant, store = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    data = anchor.commit_batch_calldata(
        batch_id=batch,
        tenant_id=tenant,
        store_id=store,
        events_root=bytes([1]) * 32,
        prev_state_root=bytes([2]) * 32,
        new_state_root=bytes([3]) * 32,
        sequence_start=5,
        sequence_end=9,
        event_count=5,
    )
    registry = evm.w3.eth.contract(
        address=Web3.to_checksum_address(evm.registry), abi=contract.abi()
    )
    function, args = registry.decode_function_input(data)
    assert function.fn_name == "commitBatch"
    assert args["batchId"] == anchor.uuid_to_bytes32(batch)
    assert args["prevStateRoot"] == bytes([2]) * 32
    assert (args["sequenceStart"], args["sequenceEnd"], args["eventCount"]) == (5, 9, 5)


async def test_a_stuck_stream_does_not_hold_the_others_back(evm: Evm, store: Store) -> None:
    stuck, fine = new_stream(), new_stream()
    stuck_rows = await committed(store, stuck, [1, 1, 1, 1])
    # The stuck stream's first commitment chains from a root the registry will refuse
    # once another batch of that stream is on chain: anchor a forged one first.
    anchorer = Anchorer(store, evm.chain(), confirmations=1)
    forged = replace(stuck_rows[0], batch_id=uuid.uuid4(), new_state_root=bytes([4]) * 32)
    await anchorer.chain.send_commitment(forged)
    fine_rows = await committed(store, fine, [2])
    passed = await anchorer.anchor_pending(2)
    assert [r.batch_id for r in passed.anchored] == [fine_rows[0].batch_id]
    assert [r.batch_id for r, _ in passed.failed] == [stuck_rows[0].batch_id]
    assert "SequenceGap" in passed.failed[0][1] or "StateRootMismatch" in passed.failed[0][1]


async def test_deep_verification_with_the_chain_away_is_a_finding(store: Store) -> None:
    """A store whose commitments are all gone has nothing anchored to compare; with the
    chain away the check must still say it could not look, not pass."""
    stream = new_stream()
    await append(store, stream, [make_event(stream, i) for i in range(3)])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ChainConfig(f"http://127.0.0.1:{port}", "0x" + "11" * 20, SEQUENCER_KEY, retries=0)
    chain = Chain(config, sleep=no_wait)
    try:
        report = await verify_streams(
            store,
            await store.counter_states(stream),
            sequencer_public_key=None,
            deep=True,
            allow_unsigned_receipts=True,
            anchorer=Anchorer(store, chain, confirmations=1),
        )
    finally:
        chain.close()
    codes = [f.code for f in report.findings if f.check == "anchors"]
    assert codes == ["ANCHOR_CHAIN_UNAVAILABLE"]
    assert "1 not reachable" in report.checks["anchors"]

"""The anchor worker in process: two of them on one database (one leads, the other waits),
over our registry on eth-tester. It anchors every commitment in stream order across
streams, turns them final as blocks are mined, and a pass the chain fails is retried."""

from __future__ import annotations

import asyncio

from stateset_sequencer.anchoring.anchorer import Anchorer, all_match
from stateset_sequencer.anchoring.chain import ChainError, ChainFailure
from stateset_sequencer.runtime.anchors import AnchorWorker
from stateset_sequencer.sequencer.commitments import CommitmentEngine
from stateset_sequencer.store.ports import Store
from stateset_sequencer.testing.evm import Evm
from stateset_sequencer.testing.kit import until
from tests.contract.builders import append, make_event, new_stream


def worker(store: Store, anchorer: Anchorer) -> AnchorWorker:
    return AnchorWorker(
        store,
        anchorer,
        interval_seconds=0.02,
        finality_seconds=0.02,
        batch=2,  # smaller than the backlog: a full batch is followed by another at once
        retry_interval=0.05,
    )


async def test_one_leader_anchors_every_stream_in_order_and_confirms(store: Store) -> None:
    evm = Evm.start()
    streams = [new_stream() for _ in range(3)]
    engine = CommitmentEngine(store, store)
    for stream in streams:
        await append(store, stream, [make_event(stream, i) for i in range(6)])
        for _ in range(3):
            await engine.create_next(stream, 2)
    anchorers = [Anchorer(store, evm.chain(), confirmations=2) for _ in range(2)]
    workers = [worker(store, a) for a in anchorers]
    for w in workers:
        w.start()
    try:

        async def final() -> bool:
            rows = [r for s in streams for r in await store.list_commitments(s)]
            if all(r.anchored_at is not None for r in rows):
                return True
            evm.mine(1)
            await asyncio.sleep(0.01)
            return False

        await until(final, "every commitment anchored and final", 60)
    finally:
        for w in workers:
            await w.close()
    assert sorted(w.sent for w in workers) == [0, 9]  # one leader did all of it
    assert sum(w.confirmed for w in workers) == 9
    for stream in streams:
        rows = await store.list_commitments(stream)
        blocks = [r.chain_block_number or 0 for r in rows]
        assert blocks == sorted(blocks)  # each stream went on chain in sequence order
        for row in rows:
            exists, checks = await anchorers[0].verify(row)
            assert exists and all_match(checks)


async def test_a_pass_the_chain_fails_is_retried(store: Store) -> None:
    evm = Evm.start()
    stream = new_stream()
    await append(store, stream, [make_event(stream, i) for i in range(2)])
    row = (await CommitmentEngine(store, store).create_next(stream, 2)).row
    anchorer = Anchorer(store, evm.chain(), confirmations=1)
    real = anchorer.chain.batch_exists
    failures = 0

    async def flaky(batch_id: object) -> bool:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise ChainError(ChainFailure.UNAVAILABLE, "RPC endpoint unavailable: test")
        return await real(batch_id)  # type: ignore[arg-type]

    anchorer.chain.batch_exists = flaky  # type: ignore[method-assign]
    w = worker(store, anchorer)
    w.start()
    try:

        async def sent() -> bool:
            got = await store.get_commitment(row.batch_id)
            return got is not None and got.chain_tx_hash is not None

        await until(sent, "anchored after two failed passes", 30)
    finally:
        await w.close()
    assert failures == 2 and w.passes >= 3

"""Anchor rate on a real node (``make bench-anchor``).

Starts anvil on loopback (from node_modules), deploys our registry, authorizes a sender,
sequences ``--events`` events into ``--streams`` streams on SQLite and commits them in
ranges of ``--batch``. Then:

- **anchor**: the anchoring rules (``anchoring/anchorer.py``) send every commitment,
  streams in order, through the chain client exactly as the worker does (``batchExists``,
  gas estimation, fees, nonce, signing, ``eth_sendRawTransaction``, the receipt), timed
  per commitment (p50/p95/p99);
- **finality**: one pass that confirms them all once ``confirmations`` blocks are mined;
- **floor**: the same number of signed transactions (plain transfers) sent and waited for
  with nothing else, on the same node: the rate of the node's round trips, which no
  anchoring can beat; the ratio is ours over it.

Figures move with the machine's load; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import HTTPProvider, Web3
from web3.exceptions import TransactionNotFound

from stateset_sequencer import logs
from stateset_sequencer.anchoring import contract
from stateset_sequencer.anchoring.anchorer import Anchorer
from stateset_sequencer.anchoring.chain import Chain, ChainConfig
from stateset_sequencer.sequencer.commitments import CommitmentEngine
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.anvil import Anvil, require_anvil

POLL_S = 0.01  # receipt polling, ours and the floor's alike


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def populate(store: Store, streams: int, events: int, batch: int) -> int:
    await kit.register(store)
    seq = kit.sequencer(store)
    engine = CommitmentEngine(store, store)
    made = 0
    try:
        for s in range(streams):
            stream = StreamKey(kit.TENANT, uuid.UUID(int=0xB100 + s))
            for start in range(0, events, 500):
                chunk = [
                    kit.event(i, stream=stream) for i in range(start, min(start + 500, events))
                ]
                result = await seq.ingest(kit.AGENT_ID, chunk)
                assert result.events_rejected == 0, result.rejections
            for _ in range(0, events, batch):
                await engine.create_next(stream, batch)
                made += 1
    finally:
        seq.close()
    return made


def floor(w3: Web3, key: str, count: int) -> float:
    """Seconds for ``count`` signed transfers, each sent and its receipt awaited."""
    account = Account.from_key(key)
    nonce = w3.eth.get_transaction_count(account.address, "pending")
    base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
    started = time.perf_counter()
    for i in range(count):
        tx: Any = {
            "type": 2,
            "chainId": w3.eth.chain_id,
            "nonce": nonce + i,
            "to": account.address,
            "value": 1,
            "gas": 21_000,
            "maxPriorityFeePerGas": 1_000_000_000,
            "maxFeePerGas": 2 * base + 1_000_000_000,
        }
        signed = account.sign_transaction(tx)
        sent = w3.eth.send_raw_transaction(signed.raw_transaction)
        while True:  # polled as the chain client polls (web3's own wait sleeps 0.1 s)
            try:
                w3.eth.get_transaction_receipt(sent)
                break
            except TransactionNotFound:
                time.sleep(POLL_S)
    return time.perf_counter() - started


async def run(streams: int, events: int, batch: int, confirmations: int) -> None:
    with Anvil(binary=require_anvil()) as anvil, tempfile.TemporaryDirectory() as tmp:
        w3 = Web3(HTTPProvider(anvil.url))
        owner, sender, other = anvil.accounts[0], anvil.accounts[1], anvil.accounts[2]
        registry = contract.deploy(w3, owner.address)
        contract.authorize(w3, registry, owner.address, sender.address)
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = await open_store(parse_database_url(url, Path(tmp)))
        await store.migrate()
        try:
            made = await populate(store, streams, events, batch)
            config = ChainConfig(anvil.url, registry, sender.private_key, receipt_poll_s=POLL_S)
            chain = Chain(config)
            anchorer = Anchorer(store, chain, confirmations=confirmations)
            latencies: list[float] = []
            started = time.perf_counter()
            while True:
                pending = await store.pending_commitments(made)
                if not pending:
                    break
                for row in sorted(pending, key=lambda r: (str(r.store_id), r.sequence_start)):
                    t0 = time.perf_counter()
                    await anchorer.anchor(row)
                    latencies.append(time.perf_counter() - t0)
            anchor_s = time.perf_counter() - started
            for _ in range(confirmations):
                anvil.rpc("evm_mine")
            t0 = time.perf_counter()
            final = await anchorer.confirm_pending(made * 2)
            final_s = time.perf_counter() - t0
            chain.close()
            floor_s = floor(w3, other.private_key, made)
        finally:
            await store.close()
    rate = made / anchor_s
    floor_rate = made / floor_s
    print(f"anvil, {streams} stream(s) x {events} events, {made} commitments of <= {batch} events")
    print(
        f"  anchor: {rate:,.1f} commitments/s ({rate * batch:,.0f} events/s anchored); "
        f"per commitment p50 {pct(latencies, 0.5) * 1000:.1f} ms, "
        f"p95 {pct(latencies, 0.95) * 1000:.1f} ms, p99 {pct(latencies, 0.99) * 1000:.1f} ms"
    )
    print(
        f"  finality pass: {len(final.confirmed)} confirmed in {final_s * 1000:.0f} ms "
        f"({len(final.confirmed) / max(final_s, 1e-9):,.0f}/s)"
    )
    print(
        f"  floor (signed transfer + receipt, same node): {floor_rate:,.1f} tx/s; "
        f"ratio {rate / floor_rate:.2f}"
    )
    print(f"  RSS {rss_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--events", type=int, default=2048, help="events per stream")
    parser.add_argument("--batch", type=int, default=64, help="events per commitment")
    parser.add_argument("--confirmations", type=int, default=6)
    args = parser.parse_args()
    logs.configure("warning", "console")  # one "anchored" line per commitment otherwise
    asyncio.run(run(args.streams, args.events, args.batch, args.confirmations))


if __name__ == "__main__":
    main()

"""Protocol-core throughput on typical events (``make bench-core``).

Prints per-second rates for canonicalisation, hashing and verification on one core, the
verification rate with a thread pool on all cores, and the ratio of our full per-event
verification to a bare PyNaCl ``verify`` loop over the same signatures, measured in the
same run. Figures only: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nacl.signing

from stateset_sequencer.ves import envelope, hashing, jcs, signing


def typical_payload(rng: random.Random, i: int) -> dict[str, Any]:
    """An order or inventory event of the size agents send (a few hundred bytes)."""
    lines: list[dict[str, Any]] = [
        {
            "sku": f"SKU-{rng.randrange(10_000):05d}",
            "qty": rng.randrange(1, 9),
            "price": round(rng.uniform(1, 500), 2),
        }
        for _ in range(rng.randrange(1, 6))
    ]
    return {
        "order_id": f"ORD-{i:08d}",
        "customer": {
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "tier": rng.choice(["gold", "silver"]),
        },
        "lines": lines,
        "total": round(sum(line["qty"] * line["price"] for line in lines), 2),
        "currency": "USD",
        "note": "café ☕" if i % 7 == 0 else "",
        "flags": {"gift": i % 3 == 0, "priority": rng.randrange(3)},
    }


def make_events(n: int) -> tuple[list[envelope.VesEventEnvelope], bytes]:
    rng = random.Random(42)
    signer = signing.Signer(bytes(range(32)))
    tenant, store, agent = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)
    events = [
        envelope.sign_event(
            signer=signer,
            tenant_id=tenant,
            store_id=store,
            source_agent_id=agent,
            entity_type="order",
            entity_id=f"ORD-{i:08d}",
            event_type="order.created",
            created_at=f"2025-06-01T12:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
            payload=typical_payload(rng, i),
        )
        for i in range(n)
    ]
    return events, signer.public_key


def best_rate(n: int, fn: Callable[[], object], repeats: int) -> float:
    """Events per second of the fastest of ``repeats`` runs (least disturbed by noise)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / min(times)


def verify_one(env: envelope.VesEventEnvelope, public_key: bytes) -> None:
    """What the sequencer does per event: checks 1–6, then the signature."""
    envelope.verify_signature(env, public_key, envelope.validate(env))


def verify_chunk(chunk: Sequence[envelope.VesEventEnvelope], public_key: bytes) -> None:
    for env in chunk:
        verify_one(env, public_key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, repeats = args.events, args.repeats
    cores = os.cpu_count() or 1

    t0 = time.perf_counter()
    events, public_key = make_events(n)
    build_s = time.perf_counter() - t0
    payloads = [env.payload for env in events]
    fields = [env.signing_fields() for env in events]
    pairs = [(env.signing_hash(), env.agent_signature) for env in events]
    canon_sizes = [len(jcs.canonicalize(p)) for p in payloads]
    verify_key = nacl.signing.VerifyKey(public_key)

    rows: list[tuple[str, float]] = []
    rows.append(
        (
            "canonicalise payload (JCS, fast path)",
            best_rate(n, lambda: [jcs.canonicalize(p) for p in payloads], repeats),
        )
    )
    rows.append(
        (
            "canonicalise payload (JCS, pure Python)",
            best_rate(n, lambda: [jcs.canonicalize_slow(p) for p in payloads], repeats),
        )
    )
    rows.append(
        (
            "payload_plain_hash",
            best_rate(n, lambda: [hashing.payload_plain_hash(p) for p in payloads], repeats),
        )
    )
    rows.append(
        (
            "event_signing_hash",
            best_rate(n, lambda: [hashing.event_signing_hash(f) for f in fields], repeats),
        )
    )

    # The three verification loops share one shape, so their ratios compare like with like.
    def bare_verify() -> None:
        for m, s in pairs:
            verify_key.verify(m, s)

    def ours_verify() -> None:
        for m, s in pairs:
            signing.verify(public_key, m, s)

    def full_verify() -> None:
        for e in events:
            verify_one(e, public_key)

    bare = best_rate(n, bare_verify, repeats)
    rows.append(("bare PyNaCl verify (floor)", bare))
    ours_sig = best_rate(n, ours_verify, repeats)
    rows.append(("signing.verify (signature only)", ours_sig))
    full = best_rate(n, full_verify, repeats)
    rows.append(("full event verification, 1 core", full))

    chunk = max(1, n // (cores * 8))
    chunks = [events[i : i + chunk] for i in range(0, n, chunk)]
    with ThreadPoolExecutor(max_workers=cores) as pool:
        pooled = best_rate(
            n, lambda: list(pool.map(lambda c: verify_chunk(c, public_key), chunks)), repeats
        )
        bare_pooled = best_rate(
            n,
            lambda: list(
                pool.map(
                    lambda c: [verify_key.verify(e.signing_hash(), e.agent_signature) for e in c],
                    chunks,
                )
            ),
            repeats,
        )
    rows.append((f"full event verification, thread pool x{cores}", pooled))

    median_size = statistics.median(canon_sizes)
    print(
        f"bench-core: {n} typical events, payload JCS size median {median_size:.0f} B "
        f"(p95 {sorted(canon_sizes)[int(0.95 * n)]} B), {cores} cores, best of {repeats}; "
        f"built and signed in {build_s:.2f} s"
    )
    print(f"{'operation':<48} {'events/s':>12}")
    for name, rate in rows:
        print(f"{name:<48} {rate:>12,.0f}")
    print()
    print(f"ratio full verification / bare PyNaCl verify, 1 core:  {full / bare:.2f}")
    print(f"ratio signature-only verify / bare PyNaCl verify:        {ours_sig / bare:.2f}")
    print(f"thread-pool speed-up over 1 core (full verification):   {pooled / full:.2f}x")
    print(f"thread-pool bare verify+hash for comparison:            {bare_pooled:,.0f} events/s")


if __name__ == "__main__":
    main()

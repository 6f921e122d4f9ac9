"""How fast a revocation through one node reaches another (issue 11, item 12).

Starts two ``python -m stateset_sequencer serve`` processes, A and B, on loopback over
one scratch PostgreSQL database, with the service's default cache TTLs. Each round
registers a fresh agent key (or mints a fresh API key) through A, warms B's cache with
it, then keeps ``--clients`` requests in flight against B (one-event ingest batches
signed with that key, or ``GET /api/v1/ves/head`` with that API key), revokes the key
through A, and goes on until B refuses. It prints, per round and as p50/max:

* propagation: milliseconds from the revoke's response (at the client) to B's first
  refusal (negative when B refused before A's answer arrived);
* accepted after: requests B accepted that were *sent* after the revoke's response.

Then again with ``CHANGE_FEED=off`` on both, where only the TTLs bound staleness (agent
keys 30 s, API keys 5 s by default; ``--agent-key-ttl`` changes the former). Nothing
asserts on time. Every round is bounded by the TTL plus ``--grace`` seconds.

    .venv/bin/python bench/revocation_propagation.py [--rounds 5] [--off-rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit, pg, serverproc

INGEST = "/api/v1/ves/events/ingest"
HEAD = "/api/v1/ves/head"
AGENT_KEYS = "/api/v1/agents/keys"
ADMIN_KEYS = "/api/v1/admin/api-keys"
WARM_UP_S = 0.3  # hammering before the revoke, so B is busy when it happens


@dataclass
class Round:
    propagation_ms: float | None  # None: B never refused within the bound
    accepted_after: int
    requests: int


Send = Callable[[httpx.AsyncClient], Awaitable[bool]]  # True: B accepted


class Nodes:
    def __init__(self, a: str, b: str, admin_key: str) -> None:
        self.a, self.b = a, b
        self.headers = {"X-API-Key": admin_key}
        self.next_event = 0

    def event_body(self, key_id: int, store_id: uuid.UUID) -> bytes:
        self.next_event += 1
        stream = StreamKey(kit.TENANT, store_id)
        event = kit.event(self.next_event, stream=stream, key_id=key_id)
        return json.dumps({"agentId": str(kit.AGENT_ID), "events": [event.to_wire()]}).encode()


async def hammer(
    client: httpx.AsyncClient,
    send: Send,
    revoke: Callable[[], Awaitable[None]],
    clients: int,
    bound_s: float,
) -> Round:
    revoked_at: float | None = None
    first_refusal: float | None = None
    accepted_after = 0
    requests = 0
    stop = asyncio.Event()

    async def one_client() -> None:
        nonlocal first_refusal, accepted_after, requests
        while not stop.is_set():
            sent = time.monotonic()
            accepted = await send(client)
            answered = time.monotonic()
            requests += 1
            if accepted:
                if revoked_at is not None and sent > revoked_at:
                    accepted_after += 1
            elif first_refusal is None:
                first_refusal = answered
                stop.set()

    async def revoker() -> None:
        nonlocal revoked_at
        await asyncio.sleep(WARM_UP_S)
        await revoke()
        revoked_at = time.monotonic()

    workers = [asyncio.create_task(one_client()) for _ in range(clients)]
    await revoker()
    try:
        await asyncio.wait_for(stop.wait(), bound_s)
    except TimeoutError:
        stop.set()
    await asyncio.gather(*workers)
    assert revoked_at is not None
    propagation = None if first_refusal is None else (first_refusal - revoked_at) * 1000
    return Round(propagation, accepted_after, requests)


async def agent_key_round(nodes: Nodes, key_id: int, clients: int, bound_s: float) -> Round:
    store_id = uuid.uuid4()  # a stream per round: no round waits on another's head
    async with httpx.AsyncClient(timeout=60) as client:
        registered = await client.post(
            nodes.a + AGENT_KEYS,
            json={
                "tenantId": str(kit.TENANT),
                "agentId": str(kit.AGENT_ID),
                "keyId": key_id,
                "publicKey": kit.AGENT.public_key.hex(),
            },
            headers=nodes.headers,
        )
        registered.raise_for_status()

        async def send(c: httpx.AsyncClient) -> bool:
            response = await c.post(
                nodes.b + INGEST,
                content=nodes.event_body(key_id, store_id),
                headers={**nodes.headers, "content-type": "application/json"},
            )
            response.raise_for_status()
            return int(response.json()["eventsAccepted"]) == 1

        if not await send(client):  # B now holds the key in its cache
            raise RuntimeError("B refused a freshly registered key")

        async def revoke() -> None:
            url = f"{nodes.a}{AGENT_KEYS}/{kit.TENANT}/{kit.AGENT_ID}/{key_id}"
            (await client.delete(url, headers=nodes.headers)).raise_for_status()

        return await hammer(client, send, revoke, clients, bound_s)


async def api_key_round(nodes: Nodes, clients: int, bound_s: float) -> Round:
    async with httpx.AsyncClient(timeout=60) as client:
        minted = await client.post(
            nodes.a + ADMIN_KEYS, json={"tenantId": str(kit.TENANT)}, headers=nodes.headers
        )
        minted.raise_for_status()
        key, prefix = minted.json()["apiKey"], minted.json()["keyHashPrefix"]
        params = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}

        async def send(c: httpx.AsyncClient) -> bool:
            response = await c.get(nodes.b + HEAD, params=params, headers={"X-API-Key": key})
            if response.status_code not in (200, 401):
                response.raise_for_status()
            return response.status_code == 200

        if not await send(client):
            raise RuntimeError("B refused a freshly minted key")

        async def revoke() -> None:
            url = f"{nodes.a}{ADMIN_KEYS}/{prefix}"
            (await client.delete(url, headers=nodes.headers)).raise_for_status()

        return await hammer(client, send, revoke, clients, bound_s)


def summary(kind: str, feed: str, rounds: list[Round]) -> None:
    heard = [r.propagation_ms for r in rounds if r.propagation_ms is not None]
    accepted = [r.accepted_after for r in rounds]
    for i, r in enumerate(rounds, 1):
        shown = "never" if r.propagation_ms is None else f"{r.propagation_ms:9.1f} ms"
        print(
            f"  {kind:<9} feed {feed:<3} round {i}: propagation {shown}, "
            f"accepted after revoke {r.accepted_after:5d} (of {r.requests} requests)"
        )
    if heard:
        print(
            f"  {kind:<9} feed {feed:<3} p50 {statistics.median(heard):9.1f} ms  "
            f"max {max(heard):9.1f} ms  accepted after: p50 {statistics.median(accepted):g} "
            f"max {max(accepted)}  ({len(heard)}/{len(rounds)} rounds refused in time)",
            flush=True,
        )


def run(feed: str, rounds: int, args: argparse.Namespace) -> None:
    admin_key = "ss_" + secrets.token_hex(20)
    signing_key = secrets.token_bytes(32).hex()
    name, dsn = pg.create_database("seqrevoke")
    try:
        with tempfile.TemporaryDirectory(prefix="revocation-") as scratch, ExitStack() as stack:
            urls = []
            for node in ("a", "b"):
                folder = Path(scratch) / node
                folder.mkdir()
                env = {
                    "DATABASE_URL": dsn,
                    "DATA_DIR": str(folder),
                    "BOOTSTRAP_ADMIN_API_KEY": admin_key,
                    "VES_SEQUENCER_SIGNING_KEY": signing_key,
                    "SEQUENCER_ENV": "bench",
                    "CHANGE_FEED": feed,
                    "CACHE_AGENT_KEY_TTL_SECS": str(args.agent_key_ttl),
                }
                url, _log = stack.enter_context(serverproc.server(folder, env))
                urls.append(url)
            nodes = Nodes(urls[0], urls[1], admin_key)
            agent_rounds = [
                asyncio.run(
                    agent_key_round(nodes, 100 + i, args.clients, args.agent_key_ttl + args.grace)
                )
                for i in range(rounds)
            ]
            summary("agent key", feed, agent_rounds)
            api_rounds = [
                asyncio.run(api_key_round(nodes, args.clients, 5.0 + args.grace))
                for _ in range(rounds)
            ]
            summary("API key", feed, api_rounds)
    finally:
        pg.drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds with the feed on")
    parser.add_argument("--off-rounds", type=int, default=2, help="rounds with CHANGE_FEED=off")
    parser.add_argument("--clients", type=int, default=4, help="requests in flight against B")
    parser.add_argument("--agent-key-ttl", type=float, default=30.0, help="seconds (default)")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds beyond the TTL")
    args = parser.parse_args()
    print(f"two server processes on one PostgreSQL database, {args.clients} clients on B")
    run("on", args.rounds, args)
    if args.off_rounds:
        run("off", args.off_rounds, args)


if __name__ == "__main__":
    main()

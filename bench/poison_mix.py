"""Good-batch success under the poison mix (issue 11, item 8), against a real server.

Starts ``python -m stateset_sequencer serve`` on loopback, on SQLite and on a scratch
PostgreSQL database, and for ``--duration`` seconds per case runs ``--good`` clients
sending good batches of ``--batch`` events and ``--poison`` clients sending one validly
signed event with something no store can hold in a field its signature does not cover,
all on one stream, each client with one request in flight. Poisons:

* ``bundle``: ``agent_signature_bundle`` = ``{"x": "\\ud800"}`` (a lone surrogate);
* ``scheme``: ``agent_signature_scheme`` = 3000000000 (beyond PostgreSQL's INTEGER).

It prints, per backend and poison, how many good batches got 200 out of how many were
sent, what the poisoned ones got, and whether the stream's head equals the good events
accepted (no gap, nothing poisoned stored). Every request body is signed before the clock
starts; the run is bounded by ``--duration`` and by ``--max-batches`` per good client.
To measure an older tree, point PYTHONPATH at its ``src`` (the server inherits it).

    .venv/bin/python bench/poison_mix.py [--duration 8] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from stateset_sequencer.testing import kit, loadkit, pg, serverproc

INGEST = "/api/v1/ves/events/ingest"
POISONS = {
    "bundle": ("agent_signature_bundle", '{"x": "\\ud800"}'),
    "scheme": ("agent_signature_scheme", "3000000000"),
}


@dataclass
class Tally:
    good_sent: int = 0
    good_ok: int = 0
    good_events_ok: int = 0
    good_status: Counter[int] = field(default_factory=Counter)
    poison_status: Counter[int] = field(default_factory=Counter)
    head: int = -1  # the stream's head after the run


def good_bodies(client: int, count: int, batch: int) -> list[bytes]:
    bodies = []
    for b in range(count):
        events = [kit.event(client * 1_000_000 + b * batch + i).to_wire() for i in range(batch)]
        bodies.append(json.dumps({"agentId": str(kit.AGENT_ID), "events": events}).encode())
    return bodies


def poison_bodies(client: int, count: int, kind: str) -> list[bytes]:
    name, text = POISONS[kind]
    bodies = []
    for b in range(count):
        wire = kit.event(50_000_000 + client * 1_000_000 + b).to_wire()
        wire[name] = "MARKER"
        body = json.dumps({"agentId": str(kit.AGENT_ID), "events": [wire]})
        bodies.append(body.replace('"MARKER"', text).encode())
    return bodies


async def drive(url: str, admin_key: str, args: argparse.Namespace, kind: str) -> Tally:
    good = [good_bodies(c, args.max_batches, args.batch) for c in range(args.good)]
    poison = [poison_bodies(c, args.max_batches, kind) for c in range(args.poison)]
    tally = Tally()
    headers = {"X-API-Key": admin_key, "content-type": "application/json"}
    limits = httpx.Limits(max_connections=args.good + args.poison + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        deadline = time.monotonic() + args.duration

        async def good_client(bodies: list[bytes]) -> None:
            for body in bodies:
                if time.monotonic() > deadline:
                    return
                response = await client.post(INGEST, content=body, headers=headers)
                tally.good_sent += 1
                tally.good_status[response.status_code] += 1
                if response.status_code == 200:
                    tally.good_ok += 1
                    tally.good_events_ok += int(response.json()["eventsAccepted"])

        async def poison_client(bodies: list[bytes]) -> None:
            for body in bodies:
                if time.monotonic() > deadline:
                    return
                response = await client.post(INGEST, content=body, headers=headers)
                tally.poison_status[response.status_code] += 1

        await asyncio.gather(*map(good_client, good), *map(poison_client, poison))
        head = await client.get(
            "/api/v1/ves/head",
            params={"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)},
            headers=headers,
        )
        if head.status_code == 200:
            tally.head = int(head.json()["head_sequence"])
    return tally


def run_case(backend: str, kind: str, args: argparse.Namespace) -> None:
    admin_key = "ss_" + secrets.token_hex(20)
    with tempfile.TemporaryDirectory(prefix="poison-mix-") as scratch:
        folder = Path(scratch)
        name = dsn = None
        if backend == "postgres":
            name, dsn = pg.create_database("seqpoison")
        else:
            dsn = f"sqlite:///{folder / 'poison.db'}"
        env = {
            "DATABASE_URL": dsn,
            "DATA_DIR": str(folder),
            "BOOTSTRAP_ADMIN_API_KEY": admin_key,
            "VES_SEQUENCER_SIGNING_KEY": secrets.token_bytes(32).hex(),
            "SEQUENCER_ENV": "bench",
            "CACHE_AGENT_KEY_TTL_SECS": "60",
        }
        try:
            with serverproc.server(folder, env) as (url, _log):
                loadkit.register_agent(url, admin_key)
                tally = asyncio.run(drive(url, admin_key, args, kind))
        finally:
            if name is not None:
                pg.drop_database(name)
    head = tally.head
    failed = {s: n for s, n in sorted(tally.good_status.items()) if s != 200}
    poisoned = {s: n for s, n in sorted(tally.poison_status.items()) if n}
    gap_free = "yes" if head == tally.good_events_ok else f"NO (head {head})"
    print(
        f"{backend:<9}{kind:<8}{tally.good_ok:>6} of {tally.good_sent:<6} good batches OK"
        f"  failed {failed or 0}  poisoned answered {poisoned}"
        f"  head = good events accepted: {gap_free}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per case")
    parser.add_argument("--good", type=int, default=8, help="good clients")
    parser.add_argument("--poison", type=int, default=2, help="poisoned clients")
    parser.add_argument("--batch", type=int, default=5, help="events per good batch")
    parser.add_argument("--max-batches", type=int, default=300, help="per client, at most")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--poisons", default=",".join(POISONS))
    args = parser.parse_args()
    print(
        f"{args.good} good clients (batches of {args.batch}) + {args.poison} poisoned, "
        f"one stream, {args.duration:g} s per case"
    )
    for backend in args.backends.split(","):
        for kind in args.poisons.split(","):
            run_case(backend, kind, args)


if __name__ == "__main__":
    main()

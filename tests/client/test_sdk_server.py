"""The whole SDK against a real ``serve`` process on SQLite: every method of the async
client and of the blocking one, through the same scenario, each client on its own
tenant, with a dead URL first in its list so that failover to the live one is part of
every run. Anchoring answers 503 here (no chain configured); test_sdk_anchoring.py
anchors for real."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from stateset_sequencer.client import (
    Agent,
    IngestOutcome,
    RetryPolicy,
    SequencerClient,
    SequencerError,
    SyncSequencerClient,
)
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.serverproc import server
from stateset_sequencer.ves import signing
from tests.client.scripted import dead_url

ADMIN_KEY = "ss_00000000" + "clientsdktestsadminkey0000000000"
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["n"],
    "properties": {"n": {"type": "integer"}},
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("sdk")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp / 'sdk.db'}",
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "SEQUENCER_ENV": "test",
        "VES_SEQUENCER_SIGNING_KEY": kit.SEQUENCER_SEED.hex(),
        "PUBLIC_AGENT_REGISTRATION_ENABLED": "true",
        # Commitments are made by the test, so that it knows their ranges.
        "COMMIT_WORKER_ENABLED": "false",
        "PROJECTION_POLL_INTERVAL_MS": "20",
    }
    with server(tmp, env) as (base, _out):
        yield base


class Calls:
    """One client, async or blocking, called by method name, so that one scenario drives
    both; ``used`` collects the names called, to show that none was left out."""

    def __init__(self, client: SequencerClient | SyncSequencerClient, used: set[str]) -> None:
        self.client = client
        self.used = used

    async def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.used.add(name)
        method = getattr(self.client, name)
        if isinstance(self.client, SyncSequencerClient):
            result = method(*args, **kwargs)
            return list(result) if name == "iter_events" else result
        if name == "iter_events":
            return [item async for item in method(*args, **kwargs)]
        return await method(*args, **kwargs)


Opener = Callable[[str | None], AbstractAsyncContextManager[Calls]]


def opener(kind: str, base: str, used: set[str]) -> Opener:
    @asynccontextmanager
    async def opened(key: str | None) -> AsyncIterator[Calls]:
        urls = [dead_url(), base]
        if kind == "async":
            async with SequencerClient(urls, key, retry=FAST) as client:
                yield Calls(client, used)
                assert client.base_url == base
        else:
            with SyncSequencerClient(urls, key, retry=FAST) as blocking:
                yield Calls(blocking, used)
                assert blocking.base_url == base

    return opened


async def refused(call: Calls, name: str, *args: Any, **kwargs: Any) -> SequencerError:
    try:
        await call(name, *args, **kwargs)
    except SequencerError as exc:
        return exc
    raise AssertionError(f"{name} was not refused")


async def scenario(open_: Opener) -> None:
    tenant, store, agent_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    signer = signing.Signer(os.urandom(32))
    agent = Agent(signer, tenant, store, agent_id)

    # --- what needs no credential -------------------------------------------------------
    async with open_(None) as anonymous:
        assert (await anonymous("health"))["status"] == "healthy"
        assert (await anonymous("ready"))["status"] == "ready"
        joined = await anonymous("register_agent", "sdk-test", description="an SDK test")
        assert joined["success"] is True and joined["apiKey"].startswith("ss_")

    # --- the operator sets the tenant up ------------------------------------------------
    async with open_(ADMIN_KEY) as admin:
        assert (await admin("health_detailed"))["components"]["database"]["name"] == "sqlite"
        assert "sequencer_uptime_seconds" in await admin("metrics")
        paths = (await admin("openapi"))["paths"]
        assert "/api/v1/ves/cursors/{agent_id}" in paths and "/api/v1/ves/anchor" in paths
        assert (await admin("sequencer_info"))["signatureAlg"] == "ed25519"
        assert await admin("use_sequencer_key") == signing.Signer(kit.SEQUENCER_SEED).public_key

        registered = await admin("register_agent_key", tenant, agent_id, 1, signer.public_key)
        assert registered["message"] == "Agent key registered"
        again = await admin("register_agent_key", tenant, agent_id, 1, signer.public_key)
        assert again["message"] == "Agent key already registered"
        (listed,) = await admin("list_agent_keys", tenant, agent_id)
        assert listed["publicKey"] == signer.public_key.hex()

        put = await admin(
            "put_policy",
            tenant,
            agent_id,
            allowed_event_types=["order.*"],
            allowed_entity_types=["order"],
            require_base_version=False,
            max_payload_bytes=4096,
        )
        assert put["allowedEventTypes"] == ["order.*"] and put["maxPayloadBytes"] == 4096
        assert (await admin("get_policy", tenant, agent_id))["enabled"] is True

        minted = await admin(
            "mint_api_key", tenant, store_ids=[store], write=True, agent_id=agent_id
        )
        tenant_admin = await admin("create_api_key", tenant, admin=True)
        prefixes = {k["keyHashPrefix"] for k in await admin("list_api_keys", tenant)}
        assert minted["keyHashPrefix"] in prefixes and len(prefixes) == 2

    # --- the agent writes and reads its stream ------------------------------------------
    async with open_(minted["apiKey"]) as client:
        first, outcome = await client("record", agent, "order", "o-1", "order.created", {"n": 1})
        assert isinstance(outcome, IngestOutcome) and outcome.events_accepted == 1
        later = [agent.event("order", f"o-{n}", "order.created", {"n": n}) for n in (2, 3, 4)]
        sent = await client("ingest", agent_id, later)
        assert (sent.events_accepted, sent.head_sequence) == (3, 4)
        replay = await client("ingest", agent_id, later)
        assert replay.replayed == 3 and replay.receipts == sent.receipts
        refused_event = agent.event("refund", "r-1", "refund.created", {"n": 0})
        barred = await client("ingest", agent_id, [refused_event])
        assert barred.events_rejected == 1  # the policy allows order.* only

        assert await client("head", tenant, store) == 4
        assert [e["sequence_number"] for e in await client("events", tenant, store, 2, 2)] == [2, 3]
        every = await client("iter_events", tenant, store, page=3)
        assert [e["event_id"] for e in every] == [str(e.event_id) for e in (first, *later)]
        detail = await client("event", first.event_id)
        assert detail["receipt"]["receiptHash"] == outcome.receipts[0].receipt_hash.hex()
        assert (await client("entity", tenant, store, "order", "o-1"))["current_version"] == 1
        raw = await client(
            "request", "GET", "/api/v1/ves/head", params={"tenant_id": tenant, "store_id": store}
        )
        assert raw == {"head_sequence": 4}

        assert (await client("get_cursor", tenant, store, agent_id))["acknowledgedSequence"] == 0
        cursor = await client("put_cursor", tenant, store, agent_id, 3)
        assert (cursor["acknowledgedSequence"], cursor["lag"]) == (3, 1)
        lower = await client("put_cursor", tenant, store, agent_id, 1)
        assert lower["acknowledgedSequence"] == 3  # only ever raised

        document = await until_projected(client, tenant, store)
        assert document["version"] == 1 and document["document"] is not None

        assert (await client("get_agent", agent_id))["agentId"] == str(agent_id)
        own = await client("create_agent_api_key", agent_id, read_only=True)
        assert own["permissions"] == "read"
        owned = {k["keyHashPrefix"] for k in await client("list_agent_api_keys", agent_id)}
        assert own["keyHashPrefix"] in owned
        dropped = await client("revoke_agent_api_key", agent_id, own["keyHashPrefix"])
        assert dropped["success"] is True

    async with open_(tenant_admin) as scoped:
        assert {k["tenantId"] for k in await scoped("list_api_keys")} == {str(tenant)}

    # --- schemas, commitments, proofs, anchoring -----------------------------------------
    async with open_(ADMIN_KEY) as admin:
        made = await admin("register_schema", tenant, "order.created", ORDER_SCHEMA)
        assert made["version"] == 1
        assert [s["id"] for s in await admin("list_schemas", tenant)] == [made["id"]]
        check = await admin("validate_payload", tenant, "order.created", {"n": "x"})
        assert check["valid"] is False and check["errors"]
        assert (await admin("get_latest_schema", tenant, "order.created"))["id"] == made["id"]
        (one,) = await admin("list_event_type_schemas", tenant, "order.created", version=1)
        assert one["id"] == made["id"]
        assert (await admin("get_schema", made["id"]))["eventType"] == "order.created"
        assert (await admin("set_schema_status", made["id"], "deprecated"))[
            "status"
        ] == "deprecated"
        assert (await admin("delete_schema", made["id"]))["success"] is True

        commitment = await admin("create_commitment", tenant, store, 1, 4)
        batch = uuid.UUID(commitment["batch_id"])
        again = await admin("create_commitment", tenant, store, 1, 4)
        assert again["batch_id"] == commitment["batch_id"]
        assert [c["batch_id"] for c in await admin("list_commitments", tenant, store)] == [
            commitment["batch_id"]
        ]
        assert await admin("list_commitments", tenant, store, anchored=True) == []
        assert len(await admin("list_commitments", tenant, store, anchored=None)) == 1
        assert (await admin("get_commitment", batch))["leaf_count"] == 4
        proof = await admin("get_proof", tenant, store, 2, batch_id=batch)
        assert proof["merkle_root"] == commitment["merkle_root"]
        by_event = await admin("get_event_proof", first.event_id)
        assert by_event["sequence_number"] == 1
        assert (await admin("verify_proof", proof))["valid"] is True
        assert (await admin("verify_proof", {**proof, "leaf_hash": "00" * 32}))["valid"] is False

        for name, args in (
            ("anchor", (batch,)),
            ("commit_and_anchor", (tenant, store)),
            ("verify_anchor", (batch,)),
            ("verify_anchor_transaction", (batch, "ab" * 32)),
        ):
            unconfigured = await refused(admin, name, *args)
            assert unconfigured.status == 503, name
            assert unconfigured.reason == "ANCHORING_NOT_CONFIGURED", name

        gone = await admin("revoke_api_key", minted["keyHashPrefix"])
        assert gone["keyHashPrefix"] == minted["keyHashPrefix"]
        revoked = await admin("revoke_agent_key", tenant, agent_id, 1)
        assert revoked["key"]["status"] == "revoked"


async def until_projected(client: Calls, tenant: uuid.UUID, store: uuid.UUID) -> Any:
    """The projection of ``order/o-1``, once the worker has folded it."""
    for _ in range(500):
        try:
            return await client("get_projection", tenant, store, "order", "o-1")
        except SequencerError as exc:
            if exc.status != 404:
                raise
        await asyncio.sleep(0.02)
    raise AssertionError("order/o-1 was never projected")


def covered() -> set[str]:
    return {
        name
        for name in dir(SequencerClient)
        if not name.startswith("_") and callable(getattr(SequencerClient, name))
    } - {"close", "tail"}  # tail follows a live stream: tests/client/test_tail.py


@pytest.mark.parametrize("kind", ["async", "blocking"])
async def test_every_method_against_a_real_server(url: str, kind: str) -> None:
    used: set[str] = set()
    await scenario(opener(kind, url, used))
    assert used == covered()

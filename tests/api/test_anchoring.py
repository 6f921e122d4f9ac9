"""The anchoring routes in process, over our registry on an in-process chain (eth-tester):
shapes, stream order, both verifications, bad and hostile input, another tenant, reverts,
a chain that is away, and the 503 every one of them gives without anchoring configured.
The same flow against a real node and server process is tests/anchoring/test_anchor_e2e.py.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import httpx
import pytest

from stateset_sequencer.anchoring.anchorer import Anchorer
from stateset_sequencer.anchoring.chain import Chain, ChainConfig
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.evm import STRANGER_KEY, Evm, no_wait
from tests.api.conftest import Api, MakeApi
from tests.api.test_auth import api_error

VES = "/api/v1/ves"
OTHER_TENANT = uuid.UUID("00000000-0000-0000-0000-00000000e7e7")


def attach(api: Api, chain: Chain, confirmations: int = 2) -> Anchorer:
    """Give the running services a chain, as start-up does when anchoring is configured."""
    api.services.chain = chain
    api.services.anchorer = Anchorer(api.store, chain, confirmations=confirmations)
    return api.services.anchorer


@pytest.fixture
def evm() -> Evm:
    return Evm.start()


@pytest.fixture
async def anchored_api(make_api: MakeApi, evm: Evm) -> Api:
    api = await make_api("sqlite")
    attach(api, evm.chain())
    await api.register_agent()
    assert (await api.ingest([kit.event(i) for i in range(6)])).status_code == 200
    return api


async def commit(api: Api, start: int, end: int) -> str:
    response = await api.client.post(
        f"{VES}/commitments",
        json={
            "tenant_id": str(kit.TENANT),
            "store_id": str(kit.STORE_ID),
            "sequence_start": start,
            "sequence_end": end,
        },
        headers=api.headers(),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["batch_id"])


async def anchor(api: Api, batch: Any, key: str | None = None) -> httpx.Response:
    headers = api.headers() if key is None else api.headers(key)
    return await api.client.post(f"{VES}/anchor", json={"batch_id": batch}, headers=headers)


async def test_anchor_then_verify_both_ways(anchored_api: Api, evm: Evm) -> None:
    api = anchored_api
    first, second = await commit(api, 1, 3), await commit(api, 4, 6)
    out_of_order = await anchor(api, second)
    api_error(out_of_order, 409, "SEQUENCE_GAP", "ANCHOR_OUT_OF_ORDER")
    assert first in out_of_order.json()["message"]

    sent = await anchor(api, first)
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert body["status"] == "anchored" and body["final"] is False
    assert (body["sequence_start"], body["sequence_end"], body["chain_id"]) == (
        1,
        3,
        evm.w3.eth.chain_id,
    )
    assert len(body["chain_tx_hash"]) == 64 and body["gas_used"] > 21_000
    again = (await anchor(api, first)).json()
    assert again["status"] == "already_anchored"
    assert again["chain_tx_hash"] == body["chain_tx_hash"]
    assert (await anchor(api, second)).json()["status"] == "anchored"

    verified = await api.client.get(f"{VES}/anchor/{first}/verify", headers=api.headers())
    assert verified.status_code == 200, verified.text
    v = verified.json()
    assert v["anchored_on_chain"] is True and v["verified"] is True
    assert [f["field"] for f in v["fields"]] == [
        "events_root",
        "new_state_root",
        "sequence_start",
        "sequence_end",
        "event_count",
    ]
    assert all(f["match"] and f["stored"] == f["on_chain"] for f in v["fields"])

    checked = await api.client.post(
        f"{VES}/commitments/verify",
        json={"batch_id": first, "chain_tx_hash": "0x" + body["chain_tx_hash"]},
        headers=api.headers(),
    )
    assert checked.status_code == 200, checked.text
    c = checked.json()
    assert c["valid"] is True and c["reason"] is None
    assert c["block_number"] == body["chain_block_number"]
    # The first batch's transaction does not hold the second batch's log.
    crossed = await api.client.post(
        f"{VES}/commitments/verify",
        json={"batch_id": second, "chain_tx_hash": body["chain_tx_hash"]},
        headers=api.headers(),
    )
    assert crossed.json()["valid"] is False
    assert crossed.json()["reason"] == "no_log_for_this_batch"
    missing = await api.client.post(
        f"{VES}/commitments/verify",
        json={"batch_id": first, "chain_tx_hash": "ab" * 32},
        headers=api.headers(),
    )
    assert (missing.json()["valid"], missing.json()["reason"]) == (False, "transaction_not_found")

    # Finality: blocks on top, then the worker's pass (run here by hand).
    evm.tester.mine_blocks(2)
    assert api.services.anchorer is not None
    await api.services.anchorer.confirm_pending(100)
    stored = await api.client.get(f"{VES}/commitments/{first}", headers=api.headers())
    assert stored.json()["is_anchored"] is True and stored.json()["anchored_at"]


async def test_commit_and_anchor_in_one_call(anchored_api: Api) -> None:
    api = anchored_api
    body = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID), "max_events": 4}
    made = await api.client.post(f"{VES}/commitments/anchor", json=body, headers=api.headers())
    assert made.status_code == 200, made.text
    assert (made.json()["sequence_start"], made.json()["sequence_end"]) == (1, 4)
    rest = await api.client.post(
        f"{VES}/commitments/anchor",
        json=body | {"sequence_start": 5, "sequence_end": 6},
        headers=api.headers(),
    )
    assert rest.json()["status"] == "anchored"
    assert rest.json()["prev_state_root"] == made.json()["new_state_root"]
    nothing = await api.client.post(f"{VES}/commitments/anchor", json=body, headers=api.headers())
    api_error(nothing, 400, "INVALID_FIELD_VALUE", "NOTHING_TO_COMMIT")
    half = await api.client.post(
        f"{VES}/commitments/anchor", json=body | {"sequence_start": 7}, headers=api.headers()
    )
    api_error(half, 400, "INVALID_FIELD_VALUE", "INVALID_RANGE")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"batch_id": "not-a-uuid"},
        {"batch_id": 12},
        {"batch_id": None},
        {"batch_id": ["00000000-0000-0000-0000-000000000001"]},
    ],
)
async def test_bad_anchor_bodies_are_422_and_change_nothing(
    anchored_api: Api, body: dict[str, Any]
) -> None:
    before = await kit.snapshot(anchored_api.store)
    response = await anchored_api.client.post(
        f"{VES}/anchor", json=body, headers=anchored_api.headers()
    )
    assert response.status_code == 422, response.text
    assert await kit.snapshot(anchored_api.store) == before


@pytest.mark.parametrize(
    "tx", ["", "0x", "zz" * 32, "ab" * 31, "ab" * 33, "0x" + "ab" * 32 + "00", 7]
)
async def test_bad_transaction_hashes_are_422(anchored_api: Api, tx: Any) -> None:
    batch = await commit(anchored_api, 1, 2)
    response = await anchored_api.client.post(
        f"{VES}/commitments/verify",
        json={"batch_id": batch, "chain_tx_hash": tx},
        headers=anchored_api.headers(),
    )
    assert response.status_code == 422, response.text


async def test_unknown_and_foreign_commitments(anchored_api: Api) -> None:
    api = anchored_api
    batch = await commit(api, 1, 3)
    unknown = str(uuid.uuid4())
    api_error(await anchor(api, unknown), 404, "BATCH_NOT_FOUND", "COMMITMENT_NOT_FOUND")
    outsider = await api.key(OTHER_TENANT, write=True, admin=True)
    before = await kit.snapshot(api.store)
    refused = await anchor(api, batch, outsider)
    api_error(refused, 403, "INSUFFICIENT_PERMISSIONS")
    assert "merkle_root" not in refused.text
    for response in (
        await api.client.get(f"{VES}/anchor/{batch}/verify", headers=api.headers(outsider)),
        await api.client.post(
            f"{VES}/commitments/verify",
            json={"batch_id": batch, "chain_tx_hash": "ab" * 32},
            headers=api.headers(outsider),
        ),
        await api.client.post(
            f"{VES}/commitments/anchor",
            json={"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)},
            headers=api.headers(outsider),
        ),
    ):
        api_error(response, 403, "INSUFFICIENT_PERMISSIONS")
    # A writer that is no admin may not spend the sequencer's gas.
    writer = await api.key(kit.TENANT, write=True)
    api_error(await anchor(api, batch, writer), 403, "INSUFFICIENT_PERMISSIONS")
    assert await kit.snapshot(api.store) == before


async def test_a_revert_is_reported_by_name_and_nothing_is_recorded(
    anchored_api: Api, evm: Evm
) -> None:
    api = anchored_api
    evm.fund(STRANGER_KEY)
    attach(api, evm.chain(STRANGER_KEY))
    batch = await commit(api, 1, 2)
    before = await kit.snapshot(api.store)
    refused = await anchor(api, batch)
    api_error(refused, 502, "INTERNAL_ERROR", "CHAIN_REVERTED")
    details = refused.json()["error"]["details"]
    assert details["revert"] == "NotAuthorizedSequencer" and details["revert_args"] == []
    assert "Retry-After" not in refused.headers
    assert await kit.snapshot(api.store) == before


async def test_a_chain_that_is_away_answers_503_and_the_rest_works(anchored_api: Api) -> None:
    api = anchored_api
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ChainConfig(
        rpc_url=f"http://127.0.0.1:{port}",
        registry_address="0x" + "11" * 20,
        private_key="0x" + "5e" * 32,
        rpc_timeout_s=2.0,
        retries=1,
    )
    attach(api, Chain(config, sleep=no_wait))
    batch = await commit(api, 1, 2)
    first = await anchor(api, batch)
    api_error(first, 503, "SERVICE_UNAVAILABLE", "CHAIN_UNAVAILABLE")
    assert int(first.headers["Retry-After"]) >= 1
    statuses = set()
    for _ in range(4):
        statuses.add(
            (await api.client.get(f"{VES}/anchor/{batch}/verify", headers=api.headers())).json()[
                "error"
            ]["details"]["reason"]
        )
    assert "ANCHOR_BREAKER_OPEN" in statuses
    health = await api.client.get("/health/detailed", headers=api.headers())
    assert health.status_code == 200
    component = health.json()["components"]["anchoring"]
    assert component["status"] == "degraded"
    assert component["circuit_breaker"]["state"] == "open"
    assert "unavailable" in component["circuit_breaker"]["last_error"]
    assert health.json()["status"] == "degraded"
    # Sequencing and commitments go on.
    assert (await api.ingest([kit.event(6)])).status_code == 200
    await commit(api, 3, 7)
    row = await api.store.get_commitment(uuid.UUID(batch))
    assert row is not None and row.chain_tx_hash is None


async def test_without_anchoring_every_anchoring_route_is_503(sqlite_api: Api) -> None:
    api = sqlite_api
    await api.register_agent()
    await api.ingest([kit.event(i) for i in range(2)])
    batch = await commit(api, 1, 2)
    calls = [
        api.client.post(f"{VES}/anchor", json={"batch_id": batch}, headers=api.headers()),
        api.client.post(
            f"{VES}/commitments/anchor",
            json={"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)},
            headers=api.headers(),
        ),
        api.client.get(f"{VES}/anchor/{batch}/verify", headers=api.headers()),
        api.client.post(
            f"{VES}/commitments/verify",
            json={"batch_id": batch, "chain_tx_hash": "ab" * 32},
            headers=api.headers(),
        ),
    ]
    for call in calls:
        api_error(await call, 503, "SERVICE_UNAVAILABLE", "ANCHORING_NOT_CONFIGURED")
    health = (await api.client.get("/health/detailed", headers=api.headers())).json()
    assert health["components"]["anchoring"]["status"] == "disabled"
    assert health["status"] == "healthy"
    listed = await api.client.get(
        f"{VES}/commitments",
        params={"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)},
        headers=api.headers(),
    )
    assert listed.json()["count"] == 1
    assert StreamKey(kit.TENANT, kit.STORE_ID) == kit.STREAM


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({"L2_RPC_URL": "http://127.0.0.1:1"}, "SET_REGISTRY_ADDRESS, SEQUENCER_PRIVATE_KEY"),
        (
            {"L2_RPC_URL": "http://127.0.0.1:1", "SET_REGISTRY_ADDRESS": "0x" + "11" * 20},
            "SEQUENCER_PRIVATE_KEY",
        ),
        ({"SEQUENCER_PRIVATE_KEY": "11" * 32}, "L2_RPC_URL, SET_REGISTRY_ADDRESS"),
    ],
)
async def test_a_partial_anchoring_configuration_refuses_to_start(
    make_api: MakeApi, settings: dict[str, str], missing: str
) -> None:
    from stateset_sequencer.runtime.service import StartupError

    with pytest.raises(StartupError) as refused:
        await make_api("sqlite", **settings)
    assert missing in str(refused.value)
    assert "11" * 32 not in str(refused.value)  # the key is never echoed


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("L2_RPC_URL", "ftp://127.0.0.1:1", "http"),
        ("SET_REGISTRY_ADDRESS", "0x1234", "20-byte"),
        ("SEQUENCER_PRIVATE_KEY", "zz" * 32, "32 bytes"),
        ("SEQUENCER_PRIVATE_KEY", "00" * 32, "32 bytes"),
        ("L2_CHAIN_ID", "-5", "positive"),
    ],
)
async def test_malformed_anchoring_settings_refuse_to_start(
    make_api: MakeApi, name: str, value: str, why: str
) -> None:
    from stateset_sequencer.runtime.service import StartupError

    good = {
        "L2_RPC_URL": "http://127.0.0.1:1",
        "SET_REGISTRY_ADDRESS": "0x" + "11" * 20,
        "SEQUENCER_PRIVATE_KEY": "22" * 32,
    }
    with pytest.raises(StartupError) as refused:
        await make_api("sqlite", **(good | {name: value}))
    assert why in str(refused.value)
    assert "22" * 32 not in str(refused.value)

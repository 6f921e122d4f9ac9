"""``/api/v1/ves/cursors/{agent_id}`` on both backends: the reference's shape, monotonic
acknowledgements, the head bound, and every refusal (bad input, another agent, another
tenant or store) with its exact status and reason and the store left as it was."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from tests.api.conftest import ADMIN_KEY, Api

CURSORS = "/api/v1/ves/cursors"
OTHER_AGENT = uuid.UUID("33333333-3333-3333-3333-333333333333")
TENANT_B = uuid.UUID("00000000-0000-0000-0000-0000000000a2")
STORE_2 = uuid.UUID("00000000-0000-0000-0000-0000000000b2")
SHAPE = {
    "tenantId",
    "storeId",
    "agentId",
    "acknowledgedSequence",
    "headSequence",
    "lag",
    "updatedAt",
}


def url(agent_id: uuid.UUID = kit.AGENT_ID) -> str:
    return f"{CURSORS}/{agent_id}"


def query(stream: StreamKey = kit.STREAM) -> dict[str, str]:
    return {"tenant_id": str(stream.tenant_id), "store_id": str(stream.store_id)}


def body(sequence: Any, stream: StreamKey = kit.STREAM) -> dict[str, Any]:
    return {
        "tenantId": str(stream.tenant_id),
        "storeId": str(stream.store_id),
        "sequenceNumber": sequence,
    }


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"ApiKey {key}"}


async def put(
    api: Api, key: str, payload: Any, agent_id: uuid.UUID = kit.AGENT_ID
) -> httpx.Response:
    return await api.client.put(url(agent_id), json=payload, headers=headers(key))


async def get(
    api: Api, key: str, agent_id: uuid.UUID = kit.AGENT_ID, stream: StreamKey = kit.STREAM
) -> httpx.Response:
    return await api.client.get(url(agent_id), params=query(stream), headers=headers(key))


def refused(response: httpx.Response, status: int, code: str, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["details"]["reason"] == reason
    assert response.headers["x-error-code"] == code
    return error


async def with_events(api: Api, count: int) -> None:
    await api.register_agent()
    response = await api.ingest([kit.event(i) for i in range(count)])
    assert response.status_code == 200, response.text
    assert response.json()["eventsAccepted"] == count


async def agent_key(api: Api, agent_id: uuid.UUID = kit.AGENT_ID) -> str:
    # Read only, bound to the agent: what a consumer agent holds.
    return await api.key(agent_id=agent_id)


async def test_a_cursor_starts_at_zero_and_follows_acknowledgements(api: Api) -> None:
    key = await agent_key(api)
    empty = await get(api, key)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {
        "tenantId": str(kit.TENANT),
        "storeId": str(kit.STORE_ID),
        "agentId": str(kit.AGENT_ID),
        "acknowledgedSequence": 0,
        "headSequence": 0,
        "lag": 0,
        "updatedAt": None,
    }

    await with_events(api, 3)
    behind = (await get(api, key)).json()
    assert (behind["acknowledgedSequence"], behind["headSequence"], behind["lag"]) == (0, 3, 3)

    acked = await put(api, key, body(2))
    assert acked.status_code == 200, acked.text
    answer = acked.json()
    assert set(answer) == SHAPE
    assert (answer["acknowledgedSequence"], answer["headSequence"], answer["lag"]) == (2, 3, 1)
    assert isinstance(answer["updatedAt"], str) and answer["updatedAt"].endswith("+00:00")
    assert (await get(api, key)).json() == answer


async def test_zero_may_be_acknowledged_on_an_empty_stream(api: Api) -> None:
    key = await agent_key(api)
    response = await put(api, key, body(0))
    assert response.status_code == 200, response.text
    assert response.json()["acknowledgedSequence"] == 0
    assert response.json()["updatedAt"] is not None


async def test_a_lower_or_equal_acknowledgement_keeps_the_stored_value(api: Api) -> None:
    await with_events(api, 5)
    key = await agent_key(api)
    assert (await put(api, key, body(4))).json()["acknowledgedSequence"] == 4
    for older in (1, 4, 0):
        response = await put(api, key, body(older))
        assert response.status_code == 200, response.text
        assert response.json()["acknowledgedSequence"] == 4
        assert response.json()["lag"] == 1
    assert (await put(api, key, body(5))).json()["lag"] == 0


async def test_past_the_head_is_400_and_writes_nothing(api: Api) -> None:
    await with_events(api, 3)
    key = await agent_key(api)
    await put(api, key, body(2))
    before = await kit.snapshot(api.store)
    for past in (4, 2**63 - 1, 2**63, 2**64 - 1):
        error = refused(
            await put(api, key, body(past)), 400, "INVALID_FIELD_VALUE", "AHEAD_OF_HEAD"
        )
        assert error["message"] == "sequenceNumber cannot exceed the stream head"
    assert await kit.snapshot(api.store) == before
    assert (await get(api, key)).json()["acknowledgedSequence"] == 2


@pytest.mark.parametrize(
    "sequence",
    [-1, 1.5, 2.0, "2", True, None, [1], {"n": 1}, 2**64, -(2**64)],
    ids=[
        "negative",
        "fraction",
        "float",
        "string",
        "bool",
        "null",
        "list",
        "object",
        "2^64",
        "-2^64",
    ],
)
async def test_a_sequence_that_is_no_u64_is_422(api: Api, sequence: Any) -> None:
    await with_events(api, 3)
    key = await agent_key(api)
    before = await kit.snapshot(api.store)
    response = await put(api, key, body(sequence))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "INVALID_FIELD_VALUE"
    assert "sequenceNumber" in error["message"]
    assert await kit.snapshot(api.store) == before


@pytest.mark.parametrize("missing", ["tenantId", "storeId", "sequenceNumber"])
async def test_a_missing_field_is_422(api: Api, missing: str) -> None:
    key = await agent_key(api)
    payload = body(0)
    del payload[missing]
    before = await kit.snapshot(api.store)
    response = await put(api, key, payload)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "MISSING_REQUIRED_FIELD"
    assert missing in response.json()["error"]["message"]
    assert await kit.snapshot(api.store) == before


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"tenantId": ', b"not json", b"[]", b'"text"', b"\xff\xfe"],
    ids=["open", "cut", "words", "array", "string", "bytes"],
)
async def test_malformed_bodies_are_refused(api: Api, raw: bytes) -> None:
    key = await agent_key(api)
    before = await kit.snapshot(api.store)
    response = await api.client.put(
        url(), content=raw, headers={**headers(key), "Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["code"] in ("INVALID_REQUEST_BODY", "INVALID_FIELD_VALUE")
    assert await kit.snapshot(api.store) == before


async def test_bad_identifiers_are_refused(api: Api) -> None:
    key = await agent_key(api)
    before = await kit.snapshot(api.store)
    bad_tenant = {**body(0), "tenantId": "not-a-uuid"}
    assert (await put(api, key, bad_tenant)).status_code == 422
    path = await api.client.put(f"{CURSORS}/not-a-uuid", json=body(0), headers=headers(key))
    assert path.status_code == 400, path.text
    no_query = await api.client.get(url(), headers=headers(key))
    assert no_query.status_code == 400, no_query.text
    assert await kit.snapshot(api.store) == before


async def test_an_oversized_body_is_413_at_the_edge(api: Api) -> None:
    key = await agent_key(api)
    limit = api.services.settings.MAX_JSON_BODY_BYTES
    padded = {**body(0), "padding": "x" * limit}
    response = await put(api, key, padded)
    assert response.status_code == 413, response.text
    assert await api.store.get_cursor(kit.STREAM, kit.AGENT_ID) is None


async def test_another_agents_cursor_is_403_for_an_agent_key(api: Api) -> None:
    await with_events(api, 3)
    mine = await agent_key(api)
    theirs = await agent_key(api, OTHER_AGENT)
    await put(api, theirs, body(1), OTHER_AGENT)
    before = await kit.snapshot(api.store)
    for response in (
        await get(api, mine, OTHER_AGENT),
        await put(api, mine, body(3), OTHER_AGENT),
    ):
        error = refused(response, 403, "INSUFFICIENT_PERMISSIONS", "agent_access_denied")
        assert error["message"] == "Agent access denied"
    # A read key bound to no agent owns no cursor either; write permission changes nothing.
    unbound = await api.key()
    writer = await api.key(write=True, agent_id=kit.AGENT_ID)
    for key, agent in ((unbound, kit.AGENT_ID), (writer, OTHER_AGENT)):
        refused(
            await put(api, key, body(3), agent),
            403,
            "INSUFFICIENT_PERMISSIONS",
            "agent_access_denied",
        )
        refused(await get(api, key, agent), 403, "INSUFFICIENT_PERMISSIONS", "agent_access_denied")
    assert await kit.snapshot(api.store) == before
    assert (await get(api, theirs, OTHER_AGENT)).json()["acknowledgedSequence"] == 1


async def test_another_tenant_or_store_is_403(api: Api) -> None:
    await with_events(api, 3)
    other_tenant = await api.key(TENANT_B, agent_id=kit.AGENT_ID)
    other_store = await api.key(store_ids=(STORE_2,), agent_id=kit.AGENT_ID)
    before = await kit.snapshot(api.store)
    refused(
        await put(api, other_tenant, body(1)),
        403,
        "INSUFFICIENT_PERMISSIONS",
        "tenant_access_denied",
    )
    refused(await get(api, other_tenant), 403, "INSUFFICIENT_PERMISSIONS", "tenant_access_denied")
    refused(
        await put(api, other_store, body(1)), 403, "INSUFFICIENT_PERMISSIONS", "store_access_denied"
    )
    refused(await get(api, other_store), 403, "INSUFFICIENT_PERMISSIONS", "store_access_denied")
    assert await kit.snapshot(api.store) == before
    # Its own tenant's stream with the same store id is a different cursor.
    own = await put(api, other_tenant, body(0, StreamKey(TENANT_B, kit.STORE_ID)))
    assert own.status_code == 200, own.text
    assert await api.store.get_cursor(kit.STREAM, kit.AGENT_ID) is None


async def test_no_credential_is_401(api: Api) -> None:
    response = await api.client.put(url(), json=body(0))
    assert response.status_code == 401, response.text
    assert await api.store.get_cursor(kit.STREAM, kit.AGENT_ID) is None


async def test_admins_may_read_and_move_any_agents_cursor(api: Api) -> None:
    await with_events(api, 4)
    tenant_admin = await api.key(admin=True)
    assert (await put(api, tenant_admin, body(2), OTHER_AGENT)).json()["acknowledgedSequence"] == 2
    assert (await get(api, tenant_admin, OTHER_AGENT)).json()["lag"] == 2
    moved = await put(api, ADMIN_KEY, body(4), OTHER_AGENT)
    assert moved.status_code == 200, moved.text
    assert moved.json()["acknowledgedSequence"] == 4
    # A tenant admin is still held to its tenant.
    refused(
        await get(api, tenant_admin, OTHER_AGENT, StreamKey(TENANT_B, kit.STORE_ID)),
        403,
        "INSUFFICIENT_PERMISSIONS",
        "tenant_access_denied",
    )

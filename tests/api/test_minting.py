"""The one minting rule, on every route that mints: a minted key never exceeds its minter's
tenant, stores, agent, permissions or rate limit, whoever the minter is; only the global
admin (nil tenant) is unbounded. Also the keys that would outlive their minters: the cap
per agent, revocation of what a key minted, and the last global admin key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from stateset_sequencer.sequencer import api_keys
from stateset_sequencer.sequencer.api_keys import KeySpec
from stateset_sequencer.sequencer.auth import NIL, context_from_record, hash_api_key
from stateset_sequencer.store.records import ApiKeyRecord
from stateset_sequencer.testing import kit
from tests.api.conftest import ADMIN_KEY, Api, MakeApi
from tests.api.test_auth import ADMIN_KEYS, TENANT_B, agent_error, apikey, auth_failure

S1 = kit.STORE_ID
S2 = uuid.UUID("00000000-0000-0000-0000-0000000000b2")
AGENT = kit.AGENT_ID
AGENT_KEYS = f"/api/v1/agents/{AGENT}/api-keys"
MINTER_RATE = 50


@dataclass(frozen=True)
class Minter:
    admin: bool = False
    write: bool = False
    stores: tuple[uuid.UUID, ...] = ()
    agent: bool = False
    rate_limit: int | None = None


MINTERS: dict[str, Minter | None] = {
    "global-admin": None,  # the bootstrap key: nil tenant
    "tenant-admin": Minter(admin=True, write=True),
    "store-admin": Minter(admin=True, write=True, stores=(S1,)),
    "read-write-agent": Minter(write=True, stores=(S1,), agent=True),
    "read-agent": Minter(stores=(S1,), agent=True),
    "rate-limited": Minter(write=True, stores=(S1,), agent=True, rate_limit=MINTER_RATE),
}
REQUESTS = (
    "wider-stores",
    "empty-stores",
    "admin",
    "write",
    "higher-rate-limit",
    "no-rate-limit",
)
OK = (200, None)
FORBIDDEN = (403, "FORBIDDEN")  # the admin route's "admin permission required"
STORES = (403, "STORE_SCOPE_WIDENED")
# (minter, route) -> the answer to each request, in REQUESTS order. Written out, not
# derived, so that the table is the specification the code is held to.
EXPECTED: dict[tuple[str, str], tuple[tuple[int, str | None], ...]] = {
    ("global-admin", "admin"): (OK, OK, OK, OK, OK, OK),
    ("global-admin", "agent"): (OK, OK, OK, OK, OK, OK),
    ("tenant-admin", "admin"): (OK, OK, OK, OK, OK, OK),
    ("tenant-admin", "agent"): (OK, OK, OK, OK, OK, OK),
    ("store-admin", "admin"): (STORES, STORES, OK, OK, OK, OK),
    ("store-admin", "agent"): (STORES, STORES, OK, OK, OK, OK),
    ("read-write-agent", "admin"): (FORBIDDEN,) * 6,
    ("read-write-agent", "agent"): (STORES, STORES, (403, "ADMIN_NOT_ALLOWED"), OK, OK, OK),
    ("read-agent", "admin"): (FORBIDDEN,) * 6,
    ("read-agent", "agent"): (
        STORES,
        STORES,
        (403, "ADMIN_NOT_ALLOWED"),
        (403, "WRITE_NOT_ALLOWED"),
        OK,
        OK,
    ),
    ("rate-limited", "admin"): (FORBIDDEN,) * 6,
    ("rate-limited", "agent"): (
        STORES,
        STORES,
        (403, "ADMIN_NOT_ALLOWED"),
        OK,
        (403, "RATE_LIMIT_WIDENED"),
        OK,
    ),
}


def _request(kind: str, minter: Minter | None, route: str) -> dict[str, Any]:
    """A request widening the minter in one respect only (its own stores otherwise)."""
    own = [str(s) for s in (minter.stores if minter else ())]
    stores = {"wider-stores": [str(S1), str(S2)], "empty-stores": []}.get(kind, own)
    admin = kind == "admin"
    write = kind in ("admin", "write")
    body: dict[str, Any] = {"storeIds": stores, "admin": admin}
    if route == "admin":
        body |= {"tenantId": str(kit.TENANT), "write": write}
        if minter is not None and minter.agent:
            body["agentId"] = str(AGENT)
    else:
        body["readOnly"] = not write
    if kind == "higher-rate-limit":
        body["rateLimit"] = MINTER_RATE * 2
    return body


async def _make_minter(api: Api, minter: Minter | None) -> tuple[str, ApiKeyRecord]:
    # An agent key exists in any case: the global admin's agent route looks the agent up.
    await api.key(agent_id=AGENT, store_ids=(S1,))
    if minter is None:
        key = ADMIN_KEY
    else:
        key = await api.key(
            admin=minter.admin,
            write=minter.write,
            store_ids=minter.stores,
            agent_id=AGENT if minter.agent else None,
            rate_limit=minter.rate_limit,
        )
    record = await api.store.get_api_key(hash_api_key(key))
    assert record is not None
    return key, record


def _assert_within(minted: ApiKeyRecord, minter: ApiKeyRecord) -> None:
    """The minted key is no wider than its minter, and names it as its parent."""
    assert minted.parent_key_hash == minter.key_hash
    if minter.tenant_id == NIL:
        return
    assert minted.tenant_id == minter.tenant_id
    if minter.store_ids:
        assert minted.store_ids and set(minted.store_ids) <= set(minter.store_ids)
    assert minter.can_admin or not minted.can_admin
    assert minter.can_write or not minted.can_write
    if minter.agent_id is not None:
        assert minted.agent_id == minter.agent_id
    if minter.rate_limit is not None:
        assert minted.rate_limit is not None and minted.rate_limit <= minter.rate_limit


@pytest.mark.parametrize("route", ["admin", "agent"])
@pytest.mark.parametrize("minter_name", list(MINTERS))
async def test_minting_matrix(api: Api, minter_name: str, route: str) -> None:
    minter = MINTERS[minter_name]
    key, minter_record = await _make_minter(api, minter)
    path = ADMIN_KEYS if route == "admin" else AGENT_KEYS
    for kind, (status, code) in zip(REQUESTS, EXPECTED[(minter_name, route)], strict=True):
        before = await api.store.list_api_keys(None)
        body = _request(kind, minter, route)
        response = await api.client.post(path, json=body, headers=apikey(key))
        where = (minter_name, route, kind, response.text)
        if code is not None:
            assert code is not None
            agent_error(response, status, code)
            assert await api.store.list_api_keys(None) == before, where
            continue
        assert response.status_code == 200, where
        minted = await api.store.get_api_key(hash_api_key(response.json()["apiKey"]))
        assert minted is not None, where
        _assert_within(minted, minter_record)
        assert response.json()["key"]["parentKeyHashPrefix"] == minter_record.key_hash[:16]
        if kind == "no-rate-limit":  # an omitted limit is the minter's own, never none
            assert minted.rate_limit == minter_record.rate_limit, where
        assert len(await api.store.list_api_keys(None)) == len(before) + 1, where


async def test_store_admin_cannot_escalate_through_an_unknown_agent(api: Api) -> None:
    """The reproduction: an admin of S1 asked the agent route of an agent never seen for
    an unscoped admin key, got one, read S2 and minted an unscoped tenant admin."""
    store_admin = await api.key(admin=True, write=True, store_ids=(S1,))
    before = await api.store.list_api_keys(None)
    response = await api.client.post(
        f"/api/v1/agents/{uuid.uuid4()}/api-keys",
        json={"storeIds": [], "admin": True},
        headers=apikey(store_admin),
    )
    agent_error(response, 403, "STORE_SCOPE_WIDENED")
    response = await api.client.post(
        ADMIN_KEYS,
        json={"tenantId": str(kit.TENANT), "storeIds": [], "admin": True},
        headers=apikey(store_admin),
    )
    agent_error(response, 403, "STORE_SCOPE_WIDENED")
    assert await api.store.list_api_keys(None) == before


async def test_a_tenant_admin_cannot_mint_for_another_tenant(api: Api) -> None:
    tenant_admin = await api.key(admin=True, write=True)
    before = await api.store.list_api_keys(None)
    for tenant in (TENANT_B, NIL):
        response = await api.client.post(
            ADMIN_KEYS,
            json={"tenantId": str(tenant), "admin": True, "write": True},
            headers=apikey(tenant_admin),
        )
        # Answered like every cross-tenant request, before the minting rule is asked.
        agent_error(response, 403, "FORBIDDEN")
    assert await api.store.list_api_keys(None) == before
    # The rule itself refuses it too, for any caller of create_key (registration, tools).
    record = await api.store.get_api_key(hash_api_key(tenant_admin))
    assert record is not None
    with pytest.raises(api_keys.KeyRequestError) as refused:
        await api_keys.create_key(
            api.store,
            KeySpec(TENANT_B, admin=True, write=True),
            actor="test",
            actor_type="test",
            minter=context_from_record(record),
        )
    assert refused.value.reason is api_keys.KeyReason.TENANT_WIDENED
    assert await api.store.list_api_keys(None) == before


async def test_an_agent_bound_admin_mints_for_its_agent_only(sqlite_api: Api) -> None:
    api = sqlite_api
    bound = await api.key(admin=True, write=True, agent_id=AGENT)
    before = await api.store.list_api_keys(None)
    other = await api.client.post(
        f"/api/v1/agents/{uuid.uuid4()}/api-keys", json={}, headers=apikey(bound)
    )
    agent_error(other, 403, "AGENT_SCOPE_WIDENED")
    unbound = await api.client.post(
        ADMIN_KEYS, json={"tenantId": str(kit.TENANT)}, headers=apikey(bound)
    )
    agent_error(unbound, 403, "AGENT_SCOPE_WIDENED")
    assert await api.store.list_api_keys(None) == before


# --- keys that outlive their minters -----------------------------------------------------


async def _mint_agent_key(api: Api, key: str, **body: Any) -> httpx.Response:
    return await api.client.post(AGENT_KEYS, json=body, headers=apikey(key))


async def test_keys_per_agent_are_capped(make_api: MakeApi) -> None:
    api = await make_api("sqlite", MAX_API_KEYS_PER_AGENT="3")
    first = await api.key(write=True, agent_id=AGENT)
    for _ in range(2):
        assert (await _mint_agent_key(api, first)).status_code == 200
    before = await api.store.list_api_keys(None)
    for minter in (first, ADMIN_KEY):  # whoever mints: the agent itself or the admin
        agent_error(await _mint_agent_key(api, minter), 409, "KEY_LIMIT_REACHED")
        over = await api.client.post(
            ADMIN_KEYS,
            json={"tenantId": str(kit.TENANT), "agentId": str(AGENT)},
            headers=apikey(ADMIN_KEY),
        )
        agent_error(over, 409, "KEY_LIMIT_REACHED")
    assert await api.store.list_api_keys(None) == before
    # Revoked keys do not count: revoking one makes room for one.
    (last,) = [k for k in before if k.agent_id == AGENT][-1:]
    revoked = await api.client.delete(
        f"{AGENT_KEYS}/{last.key_hash[:16]}", headers=apikey(ADMIN_KEY)
    )
    assert revoked.status_code == 200, revoked.text
    assert (await _mint_agent_key(api, first)).status_code == 200


async def test_revoking_a_key_revokes_what_it_minted(api: Api) -> None:
    parent = await api.key(write=True, agent_id=AGENT)
    child = (await _mint_agent_key(api, parent)).json()
    grandchild = (await _mint_agent_key(api, child["apiKey"], readOnly=True)).json()
    sibling = await api.key(write=True, agent_id=AGENT)  # minted by the admin: unrelated
    parent_prefix = hash_api_key(parent)[:16]
    assert child["key"]["parentKeyHashPrefix"] == parent_prefix
    assert grandchild["key"]["parentKeyHashPrefix"] == child["keyHashPrefix"]
    listed = await api.client.get(ADMIN_KEYS, headers=apikey(ADMIN_KEY))
    parents = {k["keyHashPrefix"]: k["parentKeyHashPrefix"] for k in listed.json()["keys"]}
    assert parents[child["keyHashPrefix"]] == parent_prefix

    response = await api.client.delete(f"{ADMIN_KEYS}/{parent_prefix}", headers=apikey(ADMIN_KEY))
    assert response.status_code == 200, response.text
    assert response.json()["revokedChildren"] == [
        child["keyHashPrefix"],
        grandchild["keyHashPrefix"],
    ]
    for key in (parent, child["apiKey"], grandchild["apiKey"]):
        auth_failure(
            await api.client.get(f"/api/v1/agents/{AGENT}", headers=apikey(key)),
            401,
            "invalid_api_key",
        )
    still = await api.client.get(f"/api/v1/agents/{AGENT}", headers=apikey(sibling))
    assert still.status_code == 200, still.text
    audit = await api.store.list_audit(50, "api_key.revoke")
    assert {e.resource_id for e in audit} == {
        parent_prefix,
        child["keyHashPrefix"],
        grandchild["keyHashPrefix"],
    }


async def test_the_last_global_admin_key_cannot_be_revoked_over_http(api: Api) -> None:
    bootstrap = hash_api_key(ADMIN_KEY)[:16]
    before = await api.store.list_api_keys(None)
    response = await api.client.delete(f"{ADMIN_KEYS}/{bootstrap}", headers=apikey(ADMIN_KEY))
    agent_error(response, 409, "LAST_ADMIN_KEY")
    assert await api.store.list_api_keys(None) == before
    # A global admin minted by the bootstrap key would go with it: still the last one.
    minted = await api.client.post(
        ADMIN_KEYS, json={"tenantId": str(NIL), "admin": True}, headers=apikey(ADMIN_KEY)
    )
    assert minted.status_code == 200, minted.text
    response = await api.client.delete(f"{ADMIN_KEYS}/{bootstrap}", headers=apikey(ADMIN_KEY))
    agent_error(response, 409, "LAST_ADMIN_KEY")
    # One minted on the database (no parent) is another: now the bootstrap key may go.
    other, _ = await api_keys.create_key(
        api.store, KeySpec(NIL, admin=True), actor="test", actor_type="cli"
    )
    response = await api.client.delete(f"{ADMIN_KEYS}/{bootstrap}", headers=apikey(other))
    assert response.status_code == 200, response.text
    assert response.json()["revokedChildren"] == [minted.json()["keyHashPrefix"]]
    last = hash_api_key(other)[:16]
    response = await api.client.delete(f"{ADMIN_KEYS}/{last}", headers=apikey(other))
    agent_error(response, 409, "LAST_ADMIN_KEY")
    record = await api.store.get_api_key(hash_api_key(other))
    assert record is not None and record.active

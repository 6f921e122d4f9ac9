"""API-key expiry, on both backends: ``expiresAt`` (RFC 3339 with an offset) or
``ttlSeconds`` at mint time on the admin and agent routes, shown in listings, refused at
authentication once passed (401 ``api_key_expired``, the auth body, even from the key
cache), never longer than the key that minted it, and every malformed expiry refused with
its reason and no key created."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from stateset_sequencer.sequencer.auth import hash_api_key, mint_api_key
from stateset_sequencer.store.records import ApiKeyRecord
from stateset_sequencer.testing import kit
from tests.api.conftest import Api, MakeApi
from tests.api.test_auth import agent_error, apikey, auth_failure

ADMIN_KEYS = "/api/v1/admin/api-keys"
AGENT_KEYS = f"/api/v1/agents/{kit.AGENT_ID}/api-keys"
HEAD = f"/api/v1/ves/head?tenant_id={kit.TENANT}&store_id={kit.STORE_ID}"
POLL_SECONDS = 0.05
POLL_LIMIT = 400


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def mint(api: Api, key: str | None = None, path: str = ADMIN_KEYS, **body: Any) -> Any:
    if path == ADMIN_KEYS:
        body.setdefault("tenantId", str(kit.TENANT))
    headers = api.headers() if key is None else apikey(key)
    return await api.client.post(path, json=body, headers=headers)


async def listed(api: Api, prefix: str) -> dict[str, Any]:
    response = await api.client.get(ADMIN_KEYS, headers=api.headers())
    assert response.status_code == 200, response.text
    (found,) = [k for k in response.json()["keys"] if k["keyHashPrefix"] == prefix]
    return dict(found)


async def test_a_key_minted_with_an_expiry_lists_it_and_works_before_it(api: Api) -> None:
    expires = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=123000)
    response = await mint(api, expiresAt=rfc3339(expires))
    assert response.status_code == 200, response.text
    created = response.json()
    assert datetime.fromisoformat(created["key"]["expiresAt"]) == expires
    entry = await listed(api, created["keyHashPrefix"])
    assert datetime.fromisoformat(entry["expiresAt"]) == expires
    assert (await api.client.get(HEAD, headers=apikey(created["apiKey"]))).status_code == 200
    # Offsets other than Z name the same instant.
    plus_two = expires.astimezone(timezone(timedelta(hours=2))).isoformat()
    again = await mint(api, expiresAt=plus_two)
    assert datetime.fromisoformat(again.json()["key"]["expiresAt"]) == expires


async def test_a_key_without_expiry_never_expires(api: Api) -> None:
    response = await mint(api)
    assert response.json()["key"]["expiresAt"] is None
    stored = await api.store.get_api_key(hash_api_key(response.json()["apiKey"]))
    assert stored.expires_at is None


async def test_ttl_seconds_sets_the_expiry_from_now(api: Api) -> None:
    before = datetime.now(UTC)
    response = await mint(api, ttlSeconds=3600)
    assert response.status_code == 200, response.text
    expires = datetime.fromisoformat(response.json()["key"]["expiresAt"])
    assert before + timedelta(seconds=3600) <= expires
    assert expires <= datetime.now(UTC) + timedelta(seconds=3600)


async def test_an_expired_key_is_refused_with_its_own_reason(api: Api) -> None:
    key = mint_api_key(kit.TENANT)
    await api.store.put_api_key(
        ApiKeyRecord(
            key_hash=hash_api_key(key),
            tenant_id=kit.TENANT,
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
    )
    response = await api.client.get(HEAD, headers=apikey(key))
    auth_failure(response, 401, "api_key_expired")
    # Still listed (and revocable), with its expiry: expiry is not revocation.
    entry = await listed(api, hash_api_key(key)[:16])
    assert entry["active"] is True and entry["expiresAt"] is not None


async def test_the_key_cache_never_serves_a_key_past_its_expiry(make_api: MakeApi) -> None:
    api = await make_api("sqlite", API_KEY_CACHE_TTL_SECS=3600)
    response = await mint(api, ttlSeconds=1)
    key = response.json()["apiKey"]
    # The first use caches the row for an hour; the expiry must still win.
    for _ in range(POLL_LIMIT):
        answer = await api.client.get(HEAD, headers=apikey(key))
        if answer.status_code == 401:
            auth_failure(answer, 401, "api_key_expired")
            return
        assert answer.status_code == 200, answer.text
        await asyncio.sleep(POLL_SECONDS)
    pytest.fail("an expired key kept working from the cache")


async def test_a_key_minted_by_an_expiring_key_cannot_outlive_it(api: Api) -> None:
    parent_expiry = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    parent = await mint(api, admin=True, write=True, expiresAt=rfc3339(parent_expiry))
    parent_key = parent.json()["apiKey"]
    # Omitted: the parent's own expiry, as an omitted rateLimit inherits the parent's.
    child = await mint(api, parent_key)
    assert child.status_code == 200, child.text
    assert datetime.fromisoformat(child.json()["key"]["expiresAt"]) == parent_expiry
    sooner = await mint(api, parent_key, ttlSeconds=60)
    assert sooner.status_code == 200, sooner.text
    keys_before = await api.store.list_api_keys()
    later = await mint(api, parent_key, expiresAt=rfc3339(parent_expiry + timedelta(seconds=1)))
    agent_error(later, 403, "EXPIRY_WIDENED")
    assert await api.store.list_api_keys() == keys_before


async def test_the_agent_route_takes_an_expiry(api: Api) -> None:
    await mint(api, agentId=str(kit.AGENT_ID), write=True)  # the agent exists
    response = await mint(api, path=AGENT_KEYS, ttlSeconds=120)
    assert response.status_code == 200, response.text
    assert response.json()["key"]["expiresAt"] is not None
    listing = await api.client.get(AGENT_KEYS, headers=api.headers())
    assert any(k["expiresAt"] is not None for k in listing.json()["keys"])
    bad = await mint(api, path=AGENT_KEYS, expiresAt="2020-01-01T00:00:00Z")
    agent_error(bad, 400, "EXPIRY_IN_PAST")


def _past() -> str:
    return rfc3339(datetime.now(UTC) - timedelta(minutes=5))


BAD_EXPIRIES: list[tuple[dict[str, Any], str]] = [
    ({"expiresAt": "2020-01-01T00:00:00Z"}, "EXPIRY_IN_PAST"),
    ({"expiresAt": "__past__"}, "EXPIRY_IN_PAST"),
    ({"expiresAt": "2030-01-01T00:00:00"}, "EXPIRY_INVALID"),  # naive
    ({"expiresAt": "2030-01-01"}, "EXPIRY_INVALID"),  # a date only
    ({"expiresAt": "tomorrow"}, "EXPIRY_INVALID"),
    ({"expiresAt": ""}, "EXPIRY_INVALID"),
    ({"expiresAt": "2030-13-01T00:00:00Z"}, "EXPIRY_INVALID"),
    ({"expiresAt": "2030-01-01T00:00:00+25:00"}, "EXPIRY_INVALID"),
    ({"expiresAt": "2030-01-01T00:00:00Z\n"}, "EXPIRY_INVALID"),
    ({"expiresAt": "2030-01-01T00:00:00Z" + "0" * 10_000}, "EXPIRY_INVALID"),
    ({"expiresAt": "9999-12-31T23:59:59Z"}, "EXPIRY_TOO_FAR"),
    ({"expiresAt": "9999-12-31T23:59:59-01:00"}, "EXPIRY_INVALID"),  # past year 9999
    ({"expiresAt": 1893456000}, "EXPIRY_INVALID"),  # a number, not RFC 3339
    ({"expiresAt": True}, "EXPIRY_INVALID"),
    ({"expiresAt": ["2030-01-01T00:00:00Z"]}, "EXPIRY_INVALID"),
    ({"expiresAt": {"at": "2030-01-01T00:00:00Z"}}, "EXPIRY_INVALID"),
    ({"ttlSeconds": 0}, "EXPIRY_IN_PAST"),
    ({"ttlSeconds": -60}, "EXPIRY_IN_PAST"),
    ({"ttlSeconds": 10**12}, "EXPIRY_TOO_FAR"),
    ({"ttlSeconds": "60"}, "EXPIRY_INVALID"),
    ({"ttlSeconds": 60.5}, "EXPIRY_INVALID"),
    ({"ttlSeconds": True}, "EXPIRY_INVALID"),
    ({"ttlSeconds": 60, "expiresAt": "2030-01-01T00:00:00Z"}, "EXPIRY_INVALID"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_EXPIRIES)
async def test_a_bad_expiry_is_refused_and_creates_no_key(
    api: Api, body: dict[str, Any], reason: str
) -> None:
    if body.get("expiresAt") == "__past__":
        body = {"expiresAt": _past()}
    await mint(api, agentId=str(kit.AGENT_ID), write=True)  # the agent route's agent
    keys_before = await api.store.list_api_keys()
    audit_before = await api.store.list_audit(limit=1000)
    events_before = await kit.snapshot(api.store)
    for path in (ADMIN_KEYS, AGENT_KEYS):
        response = await mint(api, path=path, **body)
        agent_error(response, 400, reason)
    assert await api.store.list_api_keys() == keys_before
    assert await api.store.list_audit(limit=1000) == audit_before
    assert await kit.snapshot(api.store) == events_before


async def test_an_expired_minter_cannot_mint(api: Api) -> None:
    key = mint_api_key(kit.TENANT)
    await api.store.put_api_key(
        ApiKeyRecord(
            key_hash=hash_api_key(key),
            tenant_id=kit.TENANT,
            can_write=True,
            can_admin=True,
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
    )
    keys_before = await api.store.list_api_keys()
    auth_failure(await mint(api, key, ttlSeconds=60), 401, "api_key_expired")
    assert await api.store.list_api_keys() == keys_before

"""Public agent self-registration, ``POST /api/v1/agents/register`` (REFERENCE_MAP §1.6):
off by default, no credential, a per-client budget, the reference's codes, a new tenant
and agent with a key that works there only, and nothing stored for a refusal."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from stateset_sequencer.api.http.app import create_app
from stateset_sequencer.api.http.registration import MAX_BODY_BYTES
from stateset_sequencer.sequencer import registration
from stateset_sequencer.sequencer.auth import hash_api_key
from stateset_sequencer.testing import kit
from tests.api.conftest import Api, MakeApi
from tests.api.test_auth import agent_error, api_error, apikey

REGISTER = "/api/v1/agents/register"
ENABLED = {"PUBLIC_AGENT_REGISTRATION_ENABLED": "true"}
TENANT, STORE = str(kit.TENANT), str(kit.STORE_ID)


async def stored(api: Api) -> tuple[int, int]:
    """(API keys, audit rows) in the store."""
    keys = await api.store.list_api_keys(None)
    audit = await api.store.list_audit(limit=10_000)
    return len(keys), len(audit)


def registrations(api: Api, outcome: str, reason: str) -> float:
    value = api.services.metrics.registry.get_sample_value(
        "sequencer_agent_registration_total", {"outcome": outcome, "reason": reason}
    )
    return value or 0.0


async def register(api: Api, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return await api.client.post(
        REGISTER,
        content=json.dumps(body),
        headers={"content-type": "application/json", **(headers or {})},
    )


@pytest.fixture
async def open_api(make_api: MakeApi) -> Api:
    return await make_api("sqlite", **ENABLED)


@pytest.fixture(params=["sqlite", "postgres"])
async def open_api_both(request: pytest.FixtureRequest, make_api: MakeApi) -> Api:
    return await make_api(request.param, **ENABLED)


async def test_off_by_default_and_refusal_stores_nothing(sqlite_api: Api) -> None:
    before = await stored(sqlite_api)
    response = await register(sqlite_api, {"name": "bot"})
    agent_error(response, 403, "REGISTRATION_DISABLED")
    # Refused before the body is read: not even a malformed body gets further.
    agent_error(
        await sqlite_api.client.post(REGISTER, content=b"{not json"), 403, "REGISTRATION_DISABLED"
    )
    assert await stored(sqlite_api) == before
    assert registrations(sqlite_api, "error", "REGISTRATION_DISABLED") == 2


async def test_registers_a_new_tenant_and_agent_with_a_working_key(open_api_both: Api) -> None:
    api = open_api_both
    before_keys, _ = await stored(api)
    response = await register(
        api, {"name": "  pricing-bot  ", "description": "quotes", "rateLimit": 100}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "agentId", "tenantId", "apiKey", "permissions", "message"}
    assert body["success"] is True and body["permissions"] == "read_write"
    tenant, agent = uuid.UUID(body["tenantId"]), uuid.UUID(body["agentId"])
    assert tenant != kit.TENANT and tenant != uuid.UUID(int=0)
    assert body["apiKey"].startswith("ss_" + str(tenant)[:8])
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["ratelimit-limit"] == str(registration.DEFAULT_PER_MINUTE)
    assert response.headers["ratelimit-remaining"] == str(registration.DEFAULT_PER_MINUTE - 1)
    assert int(response.headers["ratelimit-reset"]) >= 1

    keys = [k for k in await api.store.list_api_keys(None) if k.tenant_id == tenant]
    assert len(keys) == 1 and len(await api.store.list_api_keys(None)) == before_keys + 1
    key = keys[0]
    assert key.key_hash == hash_api_key(body["apiKey"])
    assert key.agent_id == agent and key.rate_limit == 100
    assert (key.can_read, key.can_write, key.can_admin) == (True, True, False)
    rows = await api.store.list_audit(limit=100, action="agent.register")
    assert [r.resource_id for r in rows] == [str(agent)]
    assert rows[0].tenant_id == tenant and rows[0].details["name"] == "pricing-bot"
    assert registrations(api, "success", "REGISTERED") == 1

    # The key reads its own new tenant ...
    own = {"tenant_id": str(tenant), "store_id": str(uuid.uuid4())}
    ok = await api.client.get("/api/v1/ves/head", params=own, headers=apikey(body["apiKey"]))
    assert ok.status_code == 200, ok.text
    # ... and nothing else: not another tenant, not an admin route.
    other = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}
    refused = await api.client.get("/api/v1/ves/head", params=other, headers=apikey(body["apiKey"]))
    api_error(refused, 403, "INSUFFICIENT_PERMISSIONS")
    admin = await api.client.get(
        "/api/v1/admin/api-keys", params={"tenant_id": str(tenant)}, headers=apikey(body["apiKey"])
    )
    agent_error(admin, 403, "FORBIDDEN")


async def test_read_only_registration(open_api: Api) -> None:
    response = await register(open_api, {"name": "reader", "readOnly": True})
    assert response.status_code == 200, response.text
    assert response.json()["permissions"] == "read"
    (key,) = [k for k in await open_api.store.list_api_keys(None) if k.agent_id is not None]
    assert (key.can_read, key.can_write, key.can_admin) == (True, False, False)


REFUSALS: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty name", {"name": "   "}, 400, "INVALID_NAME"),
    ("NUL in name", {"name": "a\x00b"}, 400, "INVALID_NAME"),
    ("name of 129 bytes", {"name": "n" * 129}, 400, "NAME_TOO_LONG"),
    # 65 characters, 130 bytes: the limit is in bytes, as the reference counts it.
    ("name of 130 bytes in 65 chars", {"name": "é" * 65}, 400, "NAME_TOO_LONG"),
    ("long description", {"name": "a", "description": "d" * 1025}, 400, "DESCRIPTION_TOO_LONG"),
    ("NUL in description", {"name": "a", "description": "\x00"}, 400, "INVALID_DESCRIPTION"),
    (
        "51 stores",
        {"name": "a", "storeIds": [str(uuid.uuid4()) for _ in range(51)]},
        400,
        "STORE_IDS_TOO_MANY",
    ),
    ("repeated store", {"name": "a", "storeIds": [STORE] * 2}, 400, "STORE_IDS_DUPLICATE"),
    ("rate limit 0", {"name": "a", "rateLimit": 0}, 400, "RATE_LIMIT_INVALID"),
    ("rate limit 10001", {"name": "a", "rateLimit": 10_001}, 400, "RATE_LIMIT_INVALID"),
    ("tenant id", {"name": "a", "tenantId": str(kit.TENANT)}, 400, "TENANT_ID_NOT_ALLOWED"),
    ("admin", {"name": "a", "admin": True}, 403, "ADMIN_NOT_ALLOWED"),
    # Several faults: the reference's order decides the code.
    ("name before admin", {"name": "", "admin": True}, 400, "INVALID_NAME"),
    ("tenant 1st", {"name": "a", "tenantId": TENANT, "admin": True}, 400, "TENANT_ID_NOT_ALLOWED"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_each_refusal_has_its_code_and_stores_nothing(
    open_api: Api, case: str, body: dict[str, Any], status: int, code: str
) -> None:
    before = await stored(open_api)
    response = await register(open_api, body)
    agent_error(response, status, code)
    assert response.headers["x-error-code"] == code
    assert await stored(open_api) == before, case
    assert registrations(open_api, "error", code) == 1


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "INVALID_REQUEST_BODY"),
        # A lone surrogate is not text: the JSON itself is refused.
        (b'{"name": "a\\ud800"}', 400, "INVALID_REQUEST_BODY"),
        (b'{"description": "no name"}', 422, "MISSING_REQUIRED_FIELD"),
        (b'{"name": 5}', 422, "INVALID_FIELD_VALUE"),
        (b'{"name": "a", "rateLimit": 1.5}', 422, "INVALID_FIELD_VALUE"),
        (b'{"name": "a", "readOnly": "yes"}', 422, "INVALID_FIELD_VALUE"),
        (b'{"name": "a", "tenantId": "not-a-uuid"}', 422, "INVALID_FIELD_VALUE"),
        (b'{"name": "a", "extra": 1}', 422, "INVALID_FIELD_VALUE"),
    ],
)
async def test_bodies_that_are_not_the_documented_json(
    open_api: Api, content: bytes, status: int, code: str
) -> None:
    before = await stored(open_api)
    response = await open_api.client.post(
        REGISTER, content=content, headers={"content-type": "application/json"}
    )
    api_error(response, status, code)
    assert await stored(open_api) == before


async def test_a_body_over_the_small_limit_is_413_unread(open_api: Api) -> None:
    before = await stored(open_api)
    big = b'{"name": "a", "description": "' + b"x" * 20_000 + b'"}'
    response = await open_api.client.post(
        REGISTER, content=big, headers={"content-type": "application/json"}
    )
    # The edge's per-route limit or the route's own, whichever is smaller, refuses it.
    assert len(big) > MAX_BODY_BYTES
    api_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert await stored(open_api) == before


async def test_rate_limit_per_client_address(make_api: MakeApi) -> None:
    api = await make_api("sqlite", **ENABLED, PUBLIC_AGENT_REGISTRATION_RATE_LIMIT_PER_MINUTE=2)
    first = await register(api, {"name": "a"})
    second = await register(api, {"name": "b"})
    assert (first.status_code, second.status_code) == (200, 200)
    assert [r.headers["ratelimit-remaining"] for r in (first, second)] == ["1", "0"]
    before = await stored(api)
    third = await register(api, {"name": "c"})
    agent_error(third, 429, "RATE_LIMIT_EXCEEDED")
    assert third.headers["ratelimit-limit"] == "2"
    assert third.headers["ratelimit-remaining"] == "0"
    assert int(third.headers["retry-after"]) >= 1
    assert third.headers["ratelimit-reset"] == third.headers["retry-after"]
    assert await stored(api) == before
    assert registrations(api, "error", "RATE_LIMIT_EXCEEDED") == 1
    # Refused before the body is read, and the budget counts every attempt, good or bad.
    agent_error(await api.client.post(REGISTER, content=b"{"), 429, "RATE_LIMIT_EXCEEDED")

    # Another client address has its own budget.
    transport = httpx.ASGITransport(app=create_app(api.services), client=("127.0.0.2", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=str(api.client.base_url)) as other:
        response = await other.post(REGISTER, json={"name": "d"})
    assert response.status_code == 200, response.text


async def test_registration_needs_no_credential_and_ignores_one(open_api: Api) -> None:
    response = await register(open_api, {"name": "a"}, headers=apikey("ss_" + "x" * 40))
    assert response.status_code == 200, response.text

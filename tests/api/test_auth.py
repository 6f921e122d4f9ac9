"""The auth matrix of the HTTP API (REFERENCE_MAP §0 error bodies, §1 routes, §6 auth).

Every refusal is checked for its exact status and body shape, and every refused write for
leaving the store as it was.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from stateset_sequencer.runtime import StartupError, start_services
from stateset_sequencer.sequencer.auth import JwtSettings, hash_api_key, issue_jwt
from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from tests.api.conftest import ADMIN_KEY, Api, MakeApi, settings_for

TENANT_B = uuid.UUID("00000000-0000-0000-0000-0000000000a2")
STORE_2 = uuid.UUID("00000000-0000-0000-0000-0000000000b2")
STREAM_B = StreamKey(TENANT_B, kit.STORE_ID)
STREAM_2 = StreamKey(kit.TENANT, STORE_2)
AGENT_B = uuid.UUID("33333333-3333-3333-3333-333333333333")
JWT_SECRET = "test-jwt-secret-0123456789abcdefghijklmnopqrstuvwxyz"
JWT = JwtSettings(JWT_SECRET)
HEAD = "/api/v1/ves/head"
INGEST = "/api/v1/ves/events/ingest"
ADMIN_KEYS = "/api/v1/admin/api-keys"


# --- body-shape assertions ----------------------------------------------------------------


def auth_failure(response: httpx.Response, status: int, code: str) -> None:
    """The auth middleware's body: exactly ``{"error": msg, "code": code}``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    assert response.headers["x-error-code"] == code


def api_error(response: httpx.Response, status: int, code: str, reason: str | None = None) -> None:
    """The ApiError body: ``{"error": {"code", "numeric_code", "message", ...}}``, with
    ``message`` and ``code`` repeated flat for the reference's 0.8 SDK."""
    assert response.status_code == status, response.text
    body = response.json()
    error = body["error"]
    assert isinstance(error, dict), error
    assert (body["message"], body["code"]) == (error["message"], error["code"])
    assert error["code"] == code
    assert isinstance(error["numeric_code"], int)
    assert isinstance(error["message"], str)
    assert response.headers["x-error-code"] == code
    if reason is not None:
        assert error["details"]["reason"] == reason


def agent_error(response: httpx.Response, status: int, code: str) -> None:
    """The agent/admin handlers' body: ``{"success": false, "error", "code"}``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error", "code"}, body
    assert body["success"] is False
    assert body["code"] == code


def stream_params(stream: StreamKey = kit.STREAM) -> dict[str, str]:
    return {"tenant_id": str(stream.tenant_id), "store_id": str(stream.store_id)}


async def head(api: Api, headers: dict[str, str], stream: StreamKey = kit.STREAM) -> httpx.Response:
    return await api.client.get(HEAD, params=stream_params(stream), headers=headers)


def apikey(key: str) -> dict[str, str]:
    return {"Authorization": f"ApiKey {key}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def mint(api: Api, **body: Any) -> dict[str, Any]:
    """Create a key as the bootstrap admin and return the whole response body."""
    body.setdefault("tenantId", str(kit.TENANT))
    response = await api.client.post(ADMIN_KEYS, json=body, headers=api.headers())
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


# --- credential presentation --------------------------------------------------------------


async def test_api_key_presentations_are_accepted(sqlite_api: Api) -> None:
    api = sqlite_api
    key = await api.key()
    for headers in (
        {"Authorization": f"ApiKey {key}"},
        {"Authorization": f"apikey {key}"},
        {"Authorization": key},
        {"X-API-Key": key},
    ):
        response = await head(api, headers)
        assert response.status_code == 200, (headers, response.text)
        assert response.json() == {"head_sequence": 0}


async def test_x_api_key_is_used_only_without_authorization(sqlite_api: Api) -> None:
    api = sqlite_api
    key = await api.key()
    # A bad Authorization wins over a good X-API-Key ...
    refused = await head(api, {"Authorization": "ApiKey ss_nope", "X-API-Key": key})
    auth_failure(refused, 401, "invalid_api_key")
    # ... and a good Authorization is not spoiled by a bad X-API-Key.
    accepted = await head(api, {"Authorization": f"ApiKey {key}", "X-API-Key": "garbage"})
    assert accepted.status_code == 200, accepted.text


async def test_missing_credentials_are_401_missing_auth(sqlite_api: Api) -> None:
    auth_failure(await head(sqlite_api, {}), 401, "missing_auth")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "ApiKey ss_" + "x" * 40},  # well-formed but unknown
        {"Authorization": "ss_" + "y" * 40},  # raw, unknown
        {"X-API-Key": "ss_" + "z" * 40},
        {"Authorization": "ApiKey dev_admin_key"},  # not ss_: never accepted
        {"Authorization": "dev_admin_key"},
        {"X-API-Key": "dev_admin_key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},  # unsupported scheme
        {"Authorization": "Token ss_abc"},
        {"Authorization": ""},
        {"Authorization": "ApiKey " + "ss_" + "a" * 300},  # absurdly long
    ],
)
async def test_unusable_keys_are_401_invalid_api_key(
    sqlite_api: Api, headers: dict[str, str]
) -> None:
    auth_failure(await head(sqlite_api, headers), 401, "invalid_api_key")


async def test_revoked_key_is_refused_at_once(api: Api) -> None:
    created = await mint(api, write=True)
    key = created["apiKey"]
    assert (await head(api, apikey(key))).status_code == 200
    revoked = await api.client.delete(
        f"{ADMIN_KEYS}/{created['keyHashPrefix']}", headers=api.headers()
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["success"] is True
    auth_failure(await head(api, apikey(key)), 401, "invalid_api_key")


async def test_revocation_beats_the_key_cache(make_api: MakeApi) -> None:
    """With a key cache, a revocation through this process still takes effect at once."""
    api = await make_api("sqlite", API_KEY_CACHE_TTL_SECS=600)
    created = await mint(api)
    key = created["apiKey"]
    assert (await head(api, apikey(key))).status_code == 200  # now cached
    revoked = await api.client.delete(
        f"{ADMIN_KEYS}/{created['keyHashPrefix']}", headers=api.headers()
    )
    assert revoked.status_code == 200, revoked.text
    auth_failure(await head(api, apikey(key)), 401, "invalid_api_key")


# --- JWT -----------------------------------------------------------------------------------


@pytest.fixture
async def jwt_api(make_api: MakeApi) -> Api:
    return await make_api("sqlite", JWT_SECRET=JWT_SECRET)


async def test_jwt_read_token_reads_but_cannot_write(jwt_api: Api) -> None:
    api = jwt_api
    token = issue_jwt(JWT, tenant_id=kit.TENANT, perms="read")
    response = await head(api, bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {"head_sequence": 0}
    await api.register_agent()
    before = await kit.snapshot(api.store)
    body = {"agentId": str(kit.AGENT_ID), "events": [kit.event(0).to_wire()]}
    refused = await api.client.post(INGEST, json=body, headers=bearer(token))
    api_error(refused, 403, "INSUFFICIENT_PERMISSIONS", "insufficient_permissions")
    assert await kit.snapshot(api.store) == before


async def test_jwt_write_token_ingests_and_tenant_scope_holds(jwt_api: Api) -> None:
    api = jwt_api
    await api.register_agent()
    token = issue_jwt(JWT, tenant_id=kit.TENANT, perms="read,write")
    body = {"agentId": str(kit.AGENT_ID), "events": [kit.event(0).to_wire()]}
    accepted = await api.client.post(INGEST, json=body, headers=bearer(token))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["eventsAccepted"] == 1
    other = issue_jwt(JWT, tenant_id=TENANT_B, perms="read,write,admin")
    api_error(
        await head(api, bearer(other)), 403, "INSUFFICIENT_PERMISSIONS", "tenant_access_denied"
    )


async def test_jwt_store_claim_scopes_reads(jwt_api: Api) -> None:
    token = issue_jwt(JWT, tenant_id=kit.TENANT, perms="read", stores=(kit.STORE_ID,))
    assert (await head(jwt_api, bearer(token))).status_code == 200
    api_error(
        await head(jwt_api, bearer(token), STREAM_2),
        403,
        "INSUFFICIENT_PERMISSIONS",
        "store_access_denied",
    )


async def test_expired_jwt_is_token_expired(jwt_api: Api) -> None:
    # Beyond the 60 s leeway.
    token = issue_jwt(JWT, tenant_id=kit.TENANT, ttl_seconds=-120)
    auth_failure(await head(jwt_api, bearer(token)), 401, "token_expired")


async def test_jwt_within_leeway_is_accepted(jwt_api: Api) -> None:
    token = issue_jwt(JWT, tenant_id=kit.TENANT, ttl_seconds=-10)
    assert (await head(jwt_api, bearer(token))).status_code == 200


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(kit.TENANT),
        "perms": "read",
        "iss": JWT.issuer,
        "aud": JWT.audience,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


# Made when the test runs, not at collection: a suite slower than the tokens' ten
# minutes of validity would otherwise see them expired first.
@pytest.mark.parametrize(
    "make_token",
    [
        lambda: issue_jwt(JwtSettings(JWT_SECRET, audience="someone-else"), tenant_id=kit.TENANT),
        lambda: issue_jwt(JwtSettings(JWT_SECRET, issuer="someone-else"), tenant_id=kit.TENANT),
        lambda: issue_jwt(
            JwtSettings("another-secret-of-enough-length-000000000"), tenant_id=kit.TENANT
        ),
        lambda: jwt.encode(_claims(), JWT_SECRET, algorithm="HS384"),  # HS256 only
        lambda: jwt.encode(_claims(), "", algorithm="none"),
        lambda: jwt.encode(_claims(exp=None), JWT_SECRET, algorithm="HS256"),  # exp is required
        lambda: jwt.encode(_claims(stores="not-a-uuid"), JWT_SECRET, algorithm="HS256"),
        lambda: jwt.encode(
            _claims(stores=f"{kit.STORE_ID},not-a-uuid"), JWT_SECRET, algorithm="HS256"
        ),
        lambda: jwt.encode(_claims(sub="not-a-uuid"), JWT_SECRET, algorithm="HS256"),
        lambda: jwt.encode(_claims(agent="nope"), JWT_SECRET, algorithm="HS256"),
        lambda: "not.a.jwt",
    ],
    ids=[
        "audience",
        "issuer",
        "secret",
        "hs384",
        "alg-none",
        "no-exp",
        "stores",
        "stores-partly",
        "sub",
        "agent",
        "garbage",
    ],
)
async def test_bad_jwts_are_invalid_jwt(jwt_api: Api, make_token: Callable[[], str]) -> None:
    auth_failure(await head(jwt_api, bearer(make_token())), 401, "invalid_jwt")


async def test_bearer_without_jwt_configured_is_invalid_jwt(sqlite_api: Api) -> None:
    token = issue_jwt(JWT, tenant_id=kit.TENANT)
    auth_failure(await head(sqlite_api, bearer(token)), 401, "invalid_jwt")


# --- permissions ---------------------------------------------------------------------------


async def test_read_only_key_cannot_ingest(api: Api) -> None:
    await api.register_agent()
    key = await api.key()
    before = await kit.snapshot(api.store)
    refused = await api.ingest([kit.event(0)], key=key)
    api_error(refused, 403, "INSUFFICIENT_PERMISSIONS", "insufficient_permissions")
    assert refused.json()["error"]["numeric_code"] == 1005
    assert await kit.snapshot(api.store) == before


async def test_write_key_cannot_manage_agent_or_api_keys(sqlite_api: Api) -> None:
    api = sqlite_api
    await api.register_agent()
    key = await api.key(write=True)
    headers = apikey(key)
    register = await api.client.post(
        "/api/v1/agents/keys",
        json={
            "tenantId": str(kit.TENANT),
            "agentId": str(AGENT_B),
            "keyId": 1,
            "publicKey": kit.AGENT.public_key.hex(),
        },
        headers=headers,
    )
    agent_error(register, 403, "FORBIDDEN")
    revoke = await api.client.delete(
        f"/api/v1/agents/keys/{kit.TENANT}/{kit.AGENT_ID}/1", headers=headers
    )
    agent_error(revoke, 403, "FORBIDDEN")
    minted = await api.client.post(
        ADMIN_KEYS, json={"tenantId": str(kit.TENANT), "write": True}, headers=headers
    )
    agent_error(minted, 403, "FORBIDDEN")
    listed = await api.client.get(ADMIN_KEYS, headers=headers)
    agent_error(listed, 403, "FORBIDDEN")
    # Nothing changed: only the one agent key, still active, and the minted keys.
    keys = await api.store.list_agent_keys(kit.TENANT, None)
    assert [(k.agent_id, k.status) for k in keys] == [(kit.AGENT_ID, "active")]
    assert len(await api.store.list_api_keys(kit.TENANT)) == 1


async def test_non_admin_cannot_read_metrics_or_detailed_health(sqlite_api: Api) -> None:
    api = sqlite_api
    key = await api.key(write=True)
    metrics = await api.client.get("/metrics", headers=apikey(key))
    assert metrics.status_code == 403
    assert metrics.text == "Admin permission required"
    assert metrics.headers["content-type"].startswith("text/plain")
    detailed = await api.client.get("/health/detailed", headers=apikey(key))
    agent_error(detailed, 403, "FORBIDDEN")
    assert detailed.json()["error"] == "Admin permission required"
    # Without credentials at all it is the auth middleware's 401.
    auth_failure(await api.client.get("/metrics"), 401, "missing_auth")
    auth_failure(await api.client.get("/health/detailed"), 401, "missing_auth")


async def test_tenant_admin_may_not_read_process_wide_metrics(sqlite_api: Api) -> None:
    key = await sqlite_api.key(admin=True)
    response = await sqlite_api.client.get("/metrics", headers=apikey(key))
    agent_error(response, 403, "OPERATOR_REQUIRED")
    response = await sqlite_api.client.get("/metrics", headers=sqlite_api.headers())
    assert response.status_code == 200
    assert "sequencer_http_requests_total" in response.text


# --- tenant and store scoping on every route ------------------------------------------------


async def test_tenant_a_never_reaches_tenant_b(api: Api) -> None:
    """A tenant-A admin key (the strongest non-bootstrap credential) on every route that
    names tenant B's data: refused, or answered as if B's data did not exist."""
    client = api.client
    await api.register_agent()
    await api.register_agent(tenant_id=TENANT_B, agent_id=AGENT_B)
    b_event = kit.event(0, stream=STREAM_B, agent_id=AGENT_B, entity_id="ORD-B")
    ingested = await api.ingest([b_event], agent_id=AGENT_B)
    assert ingested.status_code == 200 and ingested.json()["eventsAccepted"] == 1
    b_key = await mint(api, tenantId=str(TENANT_B), write=True, agentId=str(AGENT_B))
    b_schema = await client.post(
        "/api/v1/schemas",
        json={"tenantId": str(TENANT_B), "eventType": "order.created", "schemaJson": {}},
        headers=api.headers(),
    )
    assert b_schema.status_code == 200, b_schema.text
    schema_id = b_schema.json()["id"]
    h = apikey(await api.key(admin=True))
    before = await kit.snapshot(api.store, [STREAM_B])
    b = stream_params(STREAM_B)
    denied = "tenant_access_denied"

    # Ingest into B (with a write-capable admin key of A).
    body = {
        "agentId": str(AGENT_B),
        "events": [kit.event(1, stream=STREAM_B, agent_id=AGENT_B).to_wire()],
    }
    api_error(
        await client.post(INGEST, json=body, headers=h), 403, "INSUFFICIENT_PERMISSIONS", denied
    )

    # Reads, VES and legacy.
    for path in ("/api/v1/ves/events", "/api/v1/ves/head", "/api/v1/events", "/api/v1/head"):
        api_error(
            await client.get(path, params=b, headers=h), 403, "INSUFFICIENT_PERMISSIONS", denied
        )
    for path in ("/api/v1/ves/entities/order/ORD-B", "/api/v1/entities/order/ORD-B"):
        api_error(
            await client.get(path, params=b, headers=h), 403, "INSUFFICIENT_PERMISSIONS", denied
        )
    by_id = await client.get(f"/api/v1/ves/events/{b_event.event_id}", headers=h)
    api_error(by_id, 404, "EVENT_NOT_FOUND")
    missing = await client.get(f"/api/v1/ves/events/{uuid.uuid4()}", headers=h)
    # Someone else's event and no event at all are indistinguishable.
    assert by_id.json()["error"]["message"] == missing.json()["error"]["message"]
    assert str(b_event.event_id) not in by_id.text and str(TENANT_B) not in by_id.text

    # Agent signing keys.
    agent_error(
        await client.get("/api/v1/agents/keys", params={"tenant_id": str(TENANT_B)}, headers=h),
        403,
        "FORBIDDEN",
    )
    register = await client.post(
        "/api/v1/agents/keys",
        json={
            "tenantId": str(TENANT_B),
            "agentId": str(AGENT_B),
            "keyId": 2,
            "publicKey": kit.AGENT.public_key.hex(),
        },
        headers=h,
    )
    agent_error(register, 403, "FORBIDDEN")
    agent_error(
        await client.delete(f"/api/v1/agents/keys/{TENANT_B}/{AGENT_B}/1", headers=h),
        403,
        "FORBIDDEN",
    )
    b_keys = await api.store.list_agent_keys(TENANT_B, AGENT_B)
    assert [(k.key_id, k.status) for k in b_keys] == [(1, "active")]

    # Admin API keys of B: list, create, revoke.
    agent_error(
        await client.get(ADMIN_KEYS, params={"tenant_id": str(TENANT_B)}, headers=h),
        403,
        "FORBIDDEN",
    )
    own = await client.get(ADMIN_KEYS, headers=h)
    assert own.status_code == 200
    assert {k["tenantId"] for k in own.json()["keys"]} == {str(kit.TENANT)}
    agent_error(
        await client.post(ADMIN_KEYS, json={"tenantId": str(TENANT_B)}, headers=h),
        403,
        "FORBIDDEN",
    )
    agent_error(
        await client.delete(f"{ADMIN_KEYS}/{b_key['keyHashPrefix']}", headers=h),
        404,
        "KEY_NOT_FOUND",
    )

    # B's agent through the agent routes: nothing of B is visible or revocable.
    agents = f"/api/v1/agents/{AGENT_B}"
    agent_error(await client.get(agents, headers=h), 404, "AGENT_NOT_FOUND")
    listed = await client.get(f"{agents}/api-keys", headers=h)
    assert listed.status_code == 200 and listed.json() == {"keys": [], "count": 0}
    agent_error(
        await client.delete(f"{agents}/api-keys/{b_key['keyHashPrefix']}", headers=h),
        404,
        "KEY_NOT_FOUND",
    )
    # Minting "for" B's agent id makes a key of tenant A, which still cannot read B.
    minted = await client.post(f"{agents}/api-keys", json={"readOnly": True}, headers=h)
    assert minted.status_code == 200, minted.text
    assert minted.json()["key"]["tenantId"] == str(kit.TENANT)
    api_error(
        await head(api, apikey(minted.json()["apiKey"]), STREAM_B),
        403,
        "INSUFFICIENT_PERMISSIONS",
        denied,
    )

    # Schemas of B.
    t = {"tenant_id": str(TENANT_B)}
    for path in (
        "/api/v1/schemas",
        "/api/v1/schemas/event-type/order.created",
        "/api/v1/schemas/event-type/order.created/latest",
    ):
        api_error(
            await client.get(path, params=t, headers=h), 403, "INSUFFICIENT_PERMISSIONS", denied
        )
    api_error(
        await client.post(
            "/api/v1/schemas",
            json={"tenantId": str(TENANT_B), "eventType": "x.y", "schemaJson": {}},
            headers=h,
        ),
        403,
        "INSUFFICIENT_PERMISSIONS",
        denied,
    )
    api_error(
        await client.post(
            "/api/v1/schemas/validate",
            json={"tenantId": str(TENANT_B), "eventType": "order.created", "payload": {}},
            headers=h,
        ),
        403,
        "INSUFFICIENT_PERMISSIONS",
        denied,
    )
    api_error(
        await client.get(f"/api/v1/schemas/{schema_id}", headers=h), 404, "RESOURCE_NOT_FOUND"
    )
    api_error(
        await client.put(
            f"/api/v1/schemas/{schema_id}/status", json={"status": "deprecated"}, headers=h
        ),
        404,
        "RESOURCE_NOT_FOUND",
    )
    api_error(
        await client.delete(f"/api/v1/schemas/{schema_id}", headers=h), 404, "RESOURCE_NOT_FOUND"
    )

    # B is untouched: its stream, its key, its schema.
    assert await kit.snapshot(api.store, [STREAM_B]) == before
    assert (await head(api, apikey(b_key["apiKey"]), STREAM_B)).json() == {"head_sequence": 1}
    schema = await client.get(f"/api/v1/schemas/{schema_id}", headers=api.headers())
    assert schema.status_code == 200 and schema.json()["status"] == "active"


async def test_store_scoped_key_stays_in_its_store(api: Api) -> None:
    await api.register_agent()
    key = await api.key(write=True, store_ids=(kit.STORE_ID,))
    h = apikey(key)
    accepted = await api.ingest([kit.event(0)], key=key)
    assert accepted.status_code == 200 and accepted.json()["eventsAccepted"] == 1
    before = await kit.snapshot(api.store, [kit.STREAM, STREAM_2])
    refused = await api.ingest([kit.event(1, stream=STREAM_2)], key=key)
    api_error(refused, 403, "INSUFFICIENT_PERMISSIONS", "store_access_denied")
    other = stream_params(STREAM_2)
    for path in (
        "/api/v1/ves/events",
        "/api/v1/ves/head",
        "/api/v1/events",
        "/api/v1/head",
        "/api/v1/ves/entities/order/ORD-1",
        "/api/v1/entities/order/ORD-1",
    ):
        response = await api.client.get(path, params=other, headers=h)
        api_error(response, 403, "INSUFFICIENT_PERMISSIONS", "store_access_denied")
        own = await api.client.get(path, params=stream_params(), headers=h)
        assert own.status_code == 200, (path, own.text)
    assert await kit.snapshot(api.store, [kit.STREAM, STREAM_2]) == before


async def test_store_scoped_event_by_id_is_404_outside_the_scope(sqlite_api: Api) -> None:
    api = sqlite_api
    await api.register_agent()
    event = kit.event(0, stream=STREAM_2)
    assert (await api.ingest([event])).json()["eventsAccepted"] == 1
    key = await api.key(store_ids=(kit.STORE_ID,))
    response = await api.client.get(f"/api/v1/ves/events/{event.event_id}", headers=apikey(key))
    api_error(response, 404, "EVENT_NOT_FOUND")


async def test_store_scoped_admin_cannot_mint_wider_keys(sqlite_api: Api) -> None:
    api = sqlite_api
    h = apikey(await api.key(admin=True, store_ids=(kit.STORE_ID,)))
    for stores in ([], [str(STORE_2)], [str(kit.STORE_ID), str(STORE_2)]):
        response = await api.client.post(
            ADMIN_KEYS, json={"tenantId": str(kit.TENANT), "storeIds": stores}, headers=h
        )
        agent_error(response, 403, "STORE_SCOPE_WIDENED")
    narrow = await api.client.post(
        ADMIN_KEYS, json={"tenantId": str(kit.TENANT), "storeIds": [str(kit.STORE_ID)]}, headers=h
    )
    assert narrow.status_code == 200, narrow.text
    assert narrow.json()["key"]["storeIds"] == [str(kit.STORE_ID)]


# --- agent-bound keys ----------------------------------------------------------------------


async def test_agent_bound_key_ingests_only_as_its_agent(api: Api) -> None:
    await api.register_agent()
    await api.register_agent(agent_id=AGENT_B)
    key = await api.key(write=True, agent_id=kit.AGENT_ID)
    before = await kit.snapshot(api.store)
    refused = await api.ingest([kit.event(0, agent_id=AGENT_B)], key=key, agent_id=AGENT_B)
    api_error(refused, 403, "INSUFFICIENT_PERMISSIONS", "AGENT_MISMATCH")
    assert await kit.snapshot(api.store) == before
    accepted = await api.ingest([kit.event(0)], key=key)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["eventsAccepted"] == 1


# --- rate limits -----------------------------------------------------------------------------


async def test_per_key_rate_limit(sqlite_api: Api) -> None:
    api = sqlite_api
    limited = await api.key(rate_limit=2)
    free = await api.key()
    assert (await head(api, apikey(limited))).status_code == 200
    assert (await head(api, apikey(limited))).status_code == 200
    third = await head(api, apikey(limited))
    auth_failure(third, 429, "rate_limited")
    assert int(third.headers["Retry-After"]) >= 1
    # Another key of the same tenant has its own (unlimited) budget.
    assert (await head(api, apikey(free))).status_code == 200
    # Throttled requests are not audited as auth failures.
    assert await api.store.list_audit(action="auth.failure") == []


async def test_tenant_rate_limit_is_shared_by_the_tenants_keys(make_api: MakeApi) -> None:
    api = await make_api("sqlite", RATE_LIMIT_PER_MINUTE=3)
    # Three mints spend the bootstrap admin's own budget of 3.
    first = await api.key()
    second = await api.key()
    other_tenant = await api.key(TENANT_B)
    auth_failure(await head(api, api.headers()), 429, "rate_limited")
    assert (await head(api, apikey(first))).status_code == 200
    assert (await head(api, apikey(first))).status_code == 200
    assert (await head(api, apikey(second))).status_code == 200
    throttled = await head(api, apikey(second))
    auth_failure(throttled, 429, "rate_limited")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    response = await head(api, apikey(other_tenant), STREAM_B)
    assert response.status_code == 200, response.text


# --- ADMIN_IP_ALLOWLIST --------------------------------------------------------------------


ADMIN_ROUTES = ("/metrics", "/health/detailed", ADMIN_KEYS)


async def test_admin_ip_allowlist_denies_other_clients(make_api: MakeApi) -> None:
    api = await make_api("sqlite", ADMIN_IP_ALLOWLIST="10.9.9.9/32")
    for path in ADMIN_ROUTES:
        for headers in (api.headers(), {}):  # checked before authentication
            response = await api.client.get(path, headers=headers)
            assert response.status_code == 403, (path, response.text)
            assert response.json() == {"error": "admin access denied", "code": "ADMIN_IP_DENIED"}
    posted = await api.client.post(
        ADMIN_KEYS, json={"tenantId": str(kit.TENANT)}, headers=api.headers()
    )
    assert posted.json() == {"error": "admin access denied", "code": "ADMIN_IP_DENIED"}
    assert len(await api.store.list_api_keys(kit.TENANT)) == 0
    # Other routes are not behind the allowlist.
    assert (await head(api, api.headers())).status_code == 200


async def test_admin_ip_allowlist_admits_listed_clients(make_api: MakeApi) -> None:
    api = await make_api("sqlite", ADMIN_IP_ALLOWLIST="10.9.9.9/32, 127.0.0.1")
    for path in ADMIN_ROUTES:
        response = await api.client.get(path, headers=api.headers())
        assert response.status_code == 200, (path, response.text)
    # Admitted by IP, the caller still has to authenticate.
    auth_failure(await api.client.get("/metrics"), 401, "missing_auth")


async def test_forwarded_for_is_ignored_unless_proxy_headers_are_trusted(
    make_api: MakeApi,
) -> None:
    api = await make_api("sqlite", ADMIN_IP_ALLOWLIST="10.9.9.9/32")
    spoofed = {**api.headers(), "X-Forwarded-For": "10.9.9.9"}
    response = await api.client.get("/metrics", headers=spoofed)
    assert response.json()["code"] == "ADMIN_IP_DENIED"


# --- AUTH_MODE=disabled and start-up refusals -------------------------------------------------


async def test_auth_disabled_needs_allow_flag(tmp_path: Path) -> None:
    settings = settings_for(None, tmp_path / "d", AUTH_MODE="disabled")
    with pytest.raises(StartupError, match="ALLOW_AUTH_DISABLED"):
        await start_services(settings, announce=False)
    assert not (tmp_path / "d").exists()  # refused before anything was created


async def test_auth_disabled_is_refused_in_production(tmp_path: Path) -> None:
    for env in ("production", "prod", "something-unknown"):
        settings = settings_for(
            None,
            tmp_path / env,
            AUTH_MODE="disabled",
            ALLOW_AUTH_DISABLED="true",
            SEQUENCER_ENV=env,
        )
        with pytest.raises(StartupError, match="production"):
            await start_services(settings, announce=False)


async def test_auth_disabled_in_test_env_serves_without_credentials(make_api: MakeApi) -> None:
    api = await make_api("sqlite", AUTH_MODE="disabled", ALLOW_AUTH_DISABLED="true")
    await api.register_agent()
    response = await head(api, {})
    assert response.status_code == 200 and response.json() == {"head_sequence": 0}
    body = {"agentId": str(kit.AGENT_ID), "events": [kit.event(0).to_wire()]}
    ingested = await api.client.post(INGEST, json=body)
    assert ingested.status_code == 200 and ingested.json()["eventsAccepted"] == 1
    assert (await api.client.get("/metrics")).status_code == 200
    # Even a bogus credential is not refused: auth is off.
    assert (await head(api, {"Authorization": "ApiKey nonsense"})).status_code == 200


async def test_unknown_auth_mode_is_refused(tmp_path: Path) -> None:
    settings = settings_for(None, tmp_path / "d", AUTH_MODE="optional")
    with pytest.raises(StartupError, match="AUTH_MODE"):
        await start_services(settings, announce=False)


async def test_bootstrap_key_must_start_with_ss(tmp_path: Path) -> None:
    settings = settings_for(None, tmp_path / "d", BOOTSTRAP_ADMIN_API_KEY="dev_admin_key" * 4)
    with pytest.raises(StartupError, match="ss_"):
        await start_services(settings, announce=False)


async def test_short_bootstrap_key_is_refused_in_production(tmp_path: Path) -> None:
    settings = settings_for(
        None, tmp_path / "d", BOOTSTRAP_ADMIN_API_KEY="ss_short", SEQUENCER_ENV="production"
    )
    with pytest.raises(StartupError, match="32 characters"):
        await start_services(settings, announce=False)


async def test_short_jwt_secret_is_refused_in_production(tmp_path: Path) -> None:
    settings = settings_for(None, tmp_path / "d", JWT_SECRET="short", SEQUENCER_ENV="production")
    with pytest.raises(StartupError, match="JWT_SECRET"):
        await start_services(settings, announce=False)


async def test_short_bootstrap_key_works_outside_production(make_api: MakeApi) -> None:
    api = await make_api("sqlite", BOOTSTRAP_ADMIN_API_KEY="ss_short")
    assert (await head(api, apikey("ss_short"))).status_code == 200
    auth_failure(await head(api, apikey(ADMIN_KEY)), 401, "invalid_api_key")


# --- audit ---------------------------------------------------------------------------------


async def test_audit_rows_for_key_lifecycle_and_auth_failures(api: Api) -> None:
    created = await mint(api, write=True)
    prefix = created["keyHashPrefix"]
    assert prefix == hash_api_key(created["apiKey"])[:16]
    revoked = await api.client.delete(f"{ADMIN_KEYS}/{prefix}", headers=api.headers())
    assert revoked.status_code == 200
    await api.register_agent()
    revoked_agent = await api.client.delete(
        f"/api/v1/agents/keys/{kit.TENANT}/{kit.AGENT_ID}/1", headers=api.headers()
    )
    assert revoked_agent.status_code == 200, revoked_agent.text
    auth_failure(await head(api, apikey("ss_" + "q" * 40)), 401, "invalid_api_key")
    auth_failure(await head(api, {}), 401, "missing_auth")

    admin_subject = hash_api_key(ADMIN_KEY)[:16]
    (create,) = [
        r for r in await api.store.list_audit(action="api_key.create") if r.resource_id == prefix
    ]
    assert create.success and create.tenant_id == kit.TENANT and create.actor == admin_subject
    assert create.details["permissions"] == "read_write"
    assert created["apiKey"] not in repr(create)  # the plaintext is never audited
    (revoke,) = await api.store.list_audit(action="api_key.revoke")
    assert revoke.resource_id == prefix and revoke.tenant_id == kit.TENANT
    (register,) = await api.store.list_audit(action="agent_key.register")
    assert register.resource_id == f"{kit.AGENT_ID}/1" and register.tenant_id == kit.TENANT
    assert register.actor == admin_subject
    (agent_revoke,) = await api.store.list_audit(action="agent_key.revoke")
    assert agent_revoke.resource_id == f"{kit.AGENT_ID}/1"
    await api.services.auth_failures.flush()  # refusals are counted, then written per minute
    failures = await api.store.list_audit(action="auth.failure")
    assert sorted(f.details["code"] for f in failures) == ["invalid_api_key", "missing_auth"]
    assert [f.details["count"] for f in failures] == [1, 1]
    for failure in failures:
        assert failure.success is False
        assert failure.resource_id == HEAD
        assert failure.ip_address == "127.0.0.1"
        assert "ss_" + "q" * 40 not in repr(failure)  # the presented secret is not kept

"""Who may do what beyond one tenant's streams: agent signing keys (tenant-wide, as they
have no store), the process-wide views (operators only), JWT time claims and their
refusals in our words, and when authentication may be off at all."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from stateset_sequencer.runtime import StartupError, start_services
from stateset_sequencer.sequencer.auth import NIL, issue_jwt
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import signing
from tests.api.conftest import Api, MakeApi, settings_for
from tests.api.test_auth import (
    JWT,
    JWT_SECRET,
    TENANT_B,
    agent_error,
    apikey,
    auth_failure,
    bearer,
    head,
)

S2 = uuid.UUID("00000000-0000-0000-0000-0000000000b2")
AGENT_KEYS = "/api/v1/agents/keys"
OTHER_AGENT = uuid.UUID("44444444-4444-4444-4444-444444444444")


def _register_body(
    agent: uuid.UUID = OTHER_AGENT, key_id: int = 1, **change: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tenantId": str(kit.TENANT),
        "agentId": str(agent),
        "keyId": key_id,
        "publicKey": kit.AGENT.public_key.hex(),
    }
    return body | change


# --- agent signing keys: tenant-wide ------------------------------------------------------


async def test_store_scoped_admin_cannot_register_list_or_revoke_agent_keys(api: Api) -> None:
    await api.register_agent()
    store_admin = apikey(await api.key(admin=True, write=True, store_ids=(kit.STORE_ID,)))
    before = await api.store.list_agent_keys(kit.TENANT, None)
    agent_error(
        await api.client.post(AGENT_KEYS, json=_register_body(), headers=store_admin),
        403,
        "TENANT_WIDE_REQUIRED",
    )
    agent_error(
        await api.client.delete(f"{AGENT_KEYS}/{kit.TENANT}/{kit.AGENT_ID}/1", headers=store_admin),
        403,
        "TENANT_WIDE_REQUIRED",
    )
    listed = await api.client.get(
        AGENT_KEYS, params={"tenant_id": str(kit.TENANT)}, headers=store_admin
    )
    agent_error(listed, 403, "TENANT_WIDE_REQUIRED")
    assert await api.store.list_agent_keys(kit.TENANT, None) == before

    # A tenant-wide admin may do all three.
    tenant_admin = apikey(await api.key(admin=True, write=True))
    ok = await api.client.post(AGENT_KEYS, json=_register_body(), headers=tenant_admin)
    assert ok.status_code == 200, ok.text
    listed = await api.client.get(
        AGENT_KEYS, params={"tenant_id": str(kit.TENANT)}, headers=tenant_admin
    )
    assert listed.status_code == 200 and listed.json()["count"] == 2
    gone = await api.client.delete(
        f"{AGENT_KEYS}/{kit.TENANT}/{OTHER_AGENT}/1", headers=tenant_admin
    )
    assert gone.status_code == 200, gone.text


async def test_listing_agent_keys_needs_tenant_wide_read_or_the_own_agent(
    sqlite_api: Api,
) -> None:
    api = sqlite_api
    await api.register_agent()
    scoped = apikey(await api.key(store_ids=(kit.STORE_ID,)))
    params = {"tenant_id": str(kit.TENANT)}
    agent_error(
        await api.client.get(AGENT_KEYS, params=params, headers=scoped), 403, "TENANT_WIDE_REQUIRED"
    )
    own = apikey(await api.key(write=True, store_ids=(kit.STORE_ID,), agent_id=kit.AGENT_ID))
    mine = await api.client.get(
        AGENT_KEYS, params=params | {"agent_id": str(kit.AGENT_ID)}, headers=own
    )
    assert mine.status_code == 200 and mine.json()["count"] == 1
    for other in ({}, {"agent_id": str(OTHER_AGENT)}):
        agent_error(
            await api.client.get(AGENT_KEYS, params=params | other, headers=own),
            403,
            "TENANT_WIDE_REQUIRED",
        )
    reader = apikey(await api.key())  # read, every store of the tenant
    assert (await api.client.get(AGENT_KEYS, params=params, headers=reader)).status_code == 200


async def test_registering_the_same_agent_key_again_is_a_success(api: Api) -> None:
    body = _register_body()
    first = await api.client.post(AGENT_KEYS, json=body, headers=api.headers())
    assert first.status_code == 200 and first.json()["message"] == "Agent key registered"
    again = await api.client.post(AGENT_KEYS, json=body, headers=api.headers())
    assert again.status_code == 200, again.text
    assert again.json()["message"] == "Agent key already registered"
    assert {k: again.json()[k] for k in ("tenantId", "agentId", "keyId")} == {
        k: first.json()[k] for k in ("tenantId", "agentId", "keyId")
    }
    before = await api.store.list_agent_keys(kit.TENANT, OTHER_AGENT)
    # The same key id with another public key stays a conflict ...
    other = _register_body(publicKey=signing.Signer.generate().public_key.hex())
    agent_error(
        await api.client.post(AGENT_KEYS, json=other, headers=api.headers()), 409, "KEY_EXISTS"
    )
    assert await api.store.list_agent_keys(kit.TENANT, OTHER_AGENT) == before
    # ... and a revoked key is not brought back by registering it again.
    revoked = await api.client.delete(
        f"{AGENT_KEYS}/{kit.TENANT}/{OTHER_AGENT}/1", headers=api.headers()
    )
    assert revoked.status_code == 200
    before = await api.store.list_agent_keys(kit.TENANT, OTHER_AGENT)
    agent_error(
        await api.client.post(AGENT_KEYS, json=body, headers=api.headers()), 409, "KEY_EXISTS"
    )
    assert await api.store.list_agent_keys(kit.TENANT, OTHER_AGENT) == before


# --- /metrics and /health/detailed: operators only -----------------------------------------


async def test_tenant_admin_cannot_read_process_wide_views(api: Api) -> None:
    tenant_admin = apikey(await api.key(admin=True, write=True))
    for path in ("/metrics", "/health/detailed"):
        response = await api.client.get(path, headers=tenant_admin)
        agent_error(response, 403, "OPERATOR_REQUIRED")
        assert "Operator" in response.json()["error"]
        assert (await api.client.get(path, headers=api.headers())).status_code == 200


async def test_metrics_permission_in_a_jwt_reads_metrics_only(make_api: MakeApi) -> None:
    api = await make_api("sqlite", JWT_SECRET=JWT_SECRET)
    metrics = bearer(issue_jwt(JWT, tenant_id=kit.TENANT, perms="metrics"))
    response = await api.client.get("/metrics", headers=metrics)
    assert response.status_code == 200 and "sequencer_http_requests_total" in response.text
    detailed = await api.client.get("/health/detailed", headers=metrics)
    assert detailed.status_code == 200, detailed.text
    # ... and nothing of the tenant's: no read, no admin.
    assert (await head(api, metrics)).status_code == 403
    tenant_admin = bearer(issue_jwt(JWT, tenant_id=kit.TENANT, perms="read,write,admin"))
    agent_error(await api.client.get("/metrics", headers=tenant_admin), 403, "OPERATOR_REQUIRED")
    operator = bearer(issue_jwt(JWT, tenant_id=NIL, perms="admin"))
    assert (await api.client.get("/metrics", headers=operator)).status_code == 200


# --- JWT time claims, and refusals in our words --------------------------------------------


def _token(**claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": str(kit.TENANT),
        "perms": "read",
        "iss": JWT.issuer,
        "aud": JWT.audience,
        "iat": now,
        "exp": now + 600,
    }
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, JWT_SECRET, "HS256")


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"nbf": int(time.time()) + 86_400}, "Invalid token: not yet valid (nbf)"),
        ({"iat": int(time.time()) + 86_400}, "Invalid token: issued in the future (iat)"),
        ({"iat": "yesterday"}, "Invalid token: malformed iat claim"),
    ],
    ids=["nbf-tomorrow", "iat-tomorrow", "iat-text"],
)
async def test_jwt_not_yet_valid_is_refused(
    make_api: MakeApi, claims: dict[str, Any], message: str
) -> None:
    api = await make_api("sqlite", JWT_SECRET=JWT_SECRET)
    response = await head(api, bearer(_token(**claims)))
    auth_failure(response, 401, "invalid_jwt")
    assert response.json()["error"] == message
    # Within the leeway both are fine (clocks differ a little).
    soon = int(time.time()) + 10
    assert (await head(api, bearer(_token(nbf=soon, iat=soon)))).status_code == 200


@pytest.mark.parametrize(
    ("token", "message"),
    [
        # a header that decodes to bytes that are not UTF-8: PyJWT names the codec
        ("t7e3.e30.x", "Invalid token: malformed token"),
        ("not.a.jwt", "Invalid token: malformed token"),
        (jwt.encode({"sub": "x"}, "another-secret-of-enough-length-0000", "HS256"), None),
        ("bad-signature", "Invalid token: bad signature"),
        ("issuer", "Invalid token: wrong issuer"),
        ("audience", "Invalid token: wrong audience"),
    ],
    ids=["bad-header-bytes", "garbage", "other-secret", "signature", "issuer", "audience"],
)
async def test_jwt_refusals_say_what_is_wrong_without_library_text(
    make_api: MakeApi, token: str, message: str | None
) -> None:
    api = await make_api("sqlite", JWT_SECRET=JWT_SECRET)
    if token == "bad-signature":
        token = issue_jwt(type(JWT)("a-different-secret-0123456789abcdef"), tenant_id=kit.TENANT)
        message = "Invalid token: bad signature"
    elif token == "issuer":
        token = _token(iss="someone-else")
    elif token == "audience":
        token = _token(aud="someone-else")
    response = await head(api, bearer(token))
    auth_failure(response, 401, "invalid_jwt")
    error = response.json()["error"]
    if message is not None:
        assert error == message
    for leak in ("codec", "utf-8", "decode", "Invalid header", "Error", "Signature verification"):
        assert leak not in error


# --- AUTH_MODE=disabled needs an explicit development environment ---------------------------


async def test_auth_disabled_without_an_environment_name_is_refused(tmp_path: Path) -> None:
    settings = settings_for(
        None,
        tmp_path / "d",
        AUTH_MODE="disabled",
        ALLOW_AUTH_DISABLED="true",
        SEQUENCER_ENV=None,
        ENVIRONMENT=None,
    )
    with pytest.raises(StartupError, match="explicit development environment"):
        await start_services(settings, announce=False)
    assert not (tmp_path / "d").exists()
    for name in ("SEQUENCER_ENV", "ENVIRONMENT"):
        named = settings_for(
            None,
            tmp_path / name,
            AUTH_MODE="disabled",
            ALLOW_AUTH_DISABLED="true",
            **{"SEQUENCER_ENV": None, "ENVIRONMENT": None, name: "dev"},
        )
        services = await start_services(named, announce=False)
        await services.close()


async def test_cross_tenant_jwt_admin_is_not_an_operator(sqlite_api: Api) -> None:
    # A tenant admin key of another tenant is refused like any tenant admin.
    other = apikey(await sqlite_api.key(TENANT_B, admin=True, write=True))
    response: httpx.Response = await sqlite_api.client.get("/metrics", headers=other)
    agent_error(response, 403, "OPERATOR_REQUIRED")

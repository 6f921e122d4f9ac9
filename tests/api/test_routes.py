"""Shapes and behaviour of every HTTP route, compared with REFERENCE_MAP §0, §1 and §7."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from stateset_sequencer.sequencer.auth import hash_api_key
from stateset_sequencer.store.records import ApiKeyRecord, StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import signing
from tests.api.conftest import ADMIN_KEY, Api, MakeApi
from tests.api.test_auth import agent_error, api_error, apikey, auth_failure, stream_params

AGENT_B = uuid.UUID("33333333-3333-3333-3333-333333333333")
OTHER_SIGNER = signing.Signer(bytes([5]) * 32)
ADMIN_KEYS = "/api/v1/admin/api-keys"
AGENT_KEYS = "/api/v1/agents/keys"
SCHEMAS = "/api/v1/schemas"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["total"],
    "properties": {"total": {"type": "number"}},
}


def rfc3339(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, text
    return moment


def seqs(body: dict[str, Any]) -> list[int]:
    return [e["envelope"]["sequence_number"] for e in body["events"]]


def legacy_seqs(body: dict[str, Any]) -> list[int]:
    return [e["envelope"]["sequence_number"] for e in body["events"]]


async def ingest_ok(api: Api, events: list[Any]) -> dict[str, Any]:
    response = await api.ingest(events)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["eventsAccepted"] == len(events), body
    return body


async def get(api: Api, path: str, **params: Any) -> httpx.Response:
    return await api.client.get(path, params=params, headers=api.headers())


# --- health, readiness, metrics ---------------------------------------------------------------


async def test_health_body(sqlite_api: Api) -> None:
    response = await sqlite_api.client.get("/health")  # no credentials needed
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "service", "version", "timestamp"}
    assert body["status"] == "healthy"
    assert body["service"] == "stateset-sequencer"
    assert body["version"] == sqlite_api.services.version
    rfc3339(body["timestamp"])


async def test_ready_body(api: Api) -> None:
    response = await api.client.get("/ready")  # no credentials needed
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "database", "pool"}
    assert body["status"] == "ready"
    assert set(body["database"]) == {"connected", "response_time_ms"}
    assert body["database"]["connected"] is True
    assert body["database"]["response_time_ms"] >= 0
    pool = body["pool"]
    assert set(pool) == {"status", "utilization", "active", "idle"}
    assert pool["status"] in {"healthy", "moderate", "stressed", "critical"}
    assert re.fullmatch(r"\d+\.\d%", pool["utilization"]), pool
    assert isinstance(pool["active"], int) and isinstance(pool["idle"], int)


async def test_detailed_health_components(api: Api) -> None:
    response = await api.client.get("/health/detailed", headers=api.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == "stateset-sequencer"
    rfc3339(body["timestamp"])
    database = body["components"]["database"]
    expected_name = "sqlite" if api.services.settings.DATABASE_URL is None else "postgresql"
    assert database["name"] == expected_name
    assert database["status"] in {"healthy", "degraded"}
    assert database["response_time_ms"] >= 0
    pool = body["components"]["pool"]
    assert set(pool) >= {
        "status",
        "total_connections",
        "active_connections",
        "idle_connections",
        "max_connections",
        "utilization_percent",
    }
    assert pool["max_connections"] >= 1
    assert "system" in body


async def test_metrics_text(sqlite_api: Api) -> None:
    api = sqlite_api
    await api.register_agent()
    good = [kit.event(i) for i in range(3)]
    forged = kit.event(9, signer=OTHER_SIGNER)  # the registered key is AGENT's
    response = await api.ingest([*good, forged])
    assert response.json()["eventsAccepted"] == 3
    by_id = await get(api, f"/api/v1/ves/events/{good[0].event_id}")
    assert by_id.status_code == 200
    metrics = await api.client.get("/metrics", headers=api.headers())
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'sequencer_http_requests_total{method="POST",path="/api/v1/ves/events/ingest",'
        'status="200"} 1.0' in text
    )
    # The route template, never the raw path with its UUID.
    assert 'path="/api/v1/ves/events/{event_id}"' in text
    assert str(good[0].event_id) not in text
    assert re.search(r"^sequencer_events_sequenced(_total)? 3\.0$", text, re.M), text
    assert re.search(
        r'^sequencer_events_rejected(_total)?\{reason="invalid_signature"\} 1\.0$', text, re.M
    )
    assert "sequencer_uptime_seconds" in text


async def test_metrics_label_unknown_routes_without_the_raw_path(sqlite_api: Api) -> None:
    probe = f"/api/v1/nothing/{uuid.uuid4()}"
    assert (await sqlite_api.client.get(probe)).status_code == 404
    text = (await sqlite_api.client.get("/metrics", headers=sqlite_api.headers())).text
    assert probe not in text
    assert 'path="unmatched",status="404"' in text


# --- request ids, security headers, unknown routes --------------------------------------------


async def test_request_id_echoed_replaced_or_generated(sqlite_api: Api) -> None:
    client = sqlite_api.client
    echoed = await client.get("/health", headers={"x-request-id": "req-42_a.b:c"})
    assert echoed.headers["x-request-id"] == "req-42_a.b:c"
    for unsafe in ("bad id<script>", "a" * 129, "x\ty"):
        replaced = await client.get("/health", headers={"x-request-id": unsafe})
        assert UUID_RE.match(replaced.headers["x-request-id"]), unsafe
    generated = await client.get("/health")
    assert UUID_RE.match(generated.headers["x-request-id"])
    # Errors name the request id in their body as well.
    error = await client.get("/api/v1/nope", headers={"x-request-id": "trace-1"})
    assert error.headers["x-request-id"] == "trace-1"
    assert error.json()["error"]["request_id"] == "trace-1"


async def test_security_headers_on_every_response(sqlite_api: Api) -> None:
    client = sqlite_api.client
    params = stream_params()
    responses = [
        await client.get("/health"),
        await client.get("/api/v1/ves/head", params=params, headers=sqlite_api.headers()),
        await client.get("/api/v1/ves/head", params=params),  # 401
        await client.get("/api/v1/ves/events", params={"limit": "x"}, headers=sqlite_api.headers()),
        await client.get("/no/such/route"),
        await client.get("/metrics", headers=sqlite_api.headers()),
    ]
    assert [r.status_code for r in responses] == [200, 200, 401, 400, 404, 200]
    for response in responses:
        assert response.headers.get_list("x-content-type-options") == ["nosniff"]
        assert response.headers.get_list("x-frame-options") == ["DENY"]
        assert response.headers.get_list("cache-control") == ["no-store"]
        assert response.headers["x-request-id"]


async def test_unknown_route_is_a_json_api_error(sqlite_api: Api) -> None:
    response = await sqlite_api.client.get("/api/v1/definitely/not/here")
    api_error(response, 404, "RESOURCE_NOT_FOUND")
    assert response.json()["error"]["numeric_code"] == 4001
    wrong_method = await sqlite_api.client.delete("/health")
    assert wrong_method.status_code == 405
    assert set(wrong_method.json()["error"]) >= {"code", "numeric_code", "message"}


# --- events and head ---------------------------------------------------------------------------


async def test_events_paging_ves_and_legacy(api: Api) -> None:
    await api.register_agent()
    events = [kit.event(i) for i in range(5)]
    await ingest_ok(api, events)
    p = stream_params()
    ves = "/api/v1/ves/events"
    page = (await get(api, ves, **p)).json()
    assert page["count"] == 5 and seqs(page) == [1, 2, 3, 4, 5]
    assert [e["envelope"]["event_id"] for e in page["events"]] == [str(e.event_id) for e in events]
    assert set(page["events"][0]) == {"envelope"}
    assert (page["next_sequence"], page["head_sequence"], page["has_more"]) == (6, 5, False)
    item = page["events"][0]["envelope"]
    assert item["tenant_id"] == str(kit.TENANT) and item["store_id"] == str(kit.STORE_ID)
    assert item["agent_signature"] == events[0].to_wire()["agent_signature"]
    rfc3339(item["sequenced_at"])
    middle = (await get(api, ves, **p, **{"from": 2, "limit": 2})).json()
    assert seqs(middle) == [2, 3]
    assert (middle["next_sequence"], middle["head_sequence"], middle["has_more"]) == (4, 5, True)
    assert seqs((await get(api, ves, **p, **{"from": 0, "limit": 3})).json()) == [1, 2, 3]
    assert seqs((await get(api, ves, **p, **{"from": 5, "limit": 1000})).json()) == [5]
    # As the reference: more than 1000 is capped, 0 is refused.
    assert seqs((await get(api, ves, **p, **{"from": 4, "limit": 5000})).json()) == [4, 5]
    api_error(await get(api, ves, **p, limit=0), 400, "INVALID_FIELD_VALUE")
    assert (await get(api, ves, **p, **{"from": 6})).json() == {
        "events": [],
        "count": 0,
        "next_sequence": 6,
        "head_sequence": 5,
        "has_more": False,
    }
    assert (await get(api, ves, **p, **{"from": 2**63 - 1})).json()["count"] == 0

    legacy = "/api/v1/events"
    # The reference's window [max(from,1), from+limit-1]: from=0 loses one.
    first = (await get(api, legacy, **p, **{"from": 0, "limit": 3})).json()
    assert legacy_seqs(first) == [1, 2] and first["count"] == 2
    assert set(first["events"][0]) == {"envelope", "sequenced_at"}
    assert first["events"][0]["envelope"]["event_id"] == str(events[0].event_id)
    assert legacy_seqs((await get(api, legacy, **p, **{"from": 2, "limit": 2})).json()) == [2, 3]
    assert legacy_seqs((await get(api, legacy, **p)).json()) == [1, 2, 3, 4, 5]

    for path in ("/api/v1/ves/head", "/api/v1/head"):
        assert (await get(api, path, **p)).json() == {"head_sequence": 5}
    empty = stream_params(StreamKey(kit.TENANT, uuid.uuid4()))
    assert (await get(api, "/api/v1/ves/head", **empty)).json() == {"head_sequence": 0}


async def test_legacy_from_zero_limit_100_gives_99(sqlite_api: Api) -> None:
    api = sqlite_api
    await api.register_agent()
    await ingest_ok(api, [kit.event(i, entity_id=f"E-{i}") for i in range(100)])
    p = stream_params()
    legacy = (await get(api, "/api/v1/events", **p, **{"from": 0, "limit": 100})).json()
    assert legacy["count"] == 99 and legacy_seqs(legacy) == list(range(1, 100))
    assert (await get(api, "/api/v1/events", **p)).json()["count"] == 99  # the defaults
    ves = (await get(api, "/api/v1/ves/events", **p, **{"from": 0, "limit": 100})).json()
    assert ves["count"] == 100


_BAD_PAGING = [
    {"limit": "0"},
    {"limit": "-1"},
    {"limit": "ten"},
    {"limit": "1.5"},
    {"limit": str(2**64)},
    {"from": "-1"},
    {"from": str(2**64)},
    {"from": "x"},
]


# A limit over 1000 is refused by the legacy page but capped by the 0.8 VES page, as the
# reference's current SDK expects (test_events_paging_ves_and_legacy covers the cap).
@pytest.mark.parametrize(
    ("path", "query"),
    [(p, q) for p in ("/api/v1/ves/events", "/api/v1/events") for q in _BAD_PAGING]
    + [("/api/v1/events", {"limit": "1001"})],
)
async def test_events_bad_paging_is_400(sqlite_api: Api, path: str, query: dict[str, str]) -> None:
    response = await get(sqlite_api, path, **stream_params(), **query)
    api_error(response, 400, "INVALID_FIELD_VALUE")


@pytest.mark.parametrize("path", ["/api/v1/ves/events", "/api/v1/events", "/api/v1/head"])
async def test_events_need_tenant_and_store(sqlite_api: Api, path: str) -> None:
    api_error(await get(sqlite_api, path, tenant_id=str(kit.TENANT)), 400, "MISSING_REQUIRED_FIELD")
    bad = await get(sqlite_api, path, tenant_id="nope", store_id=str(kit.STORE_ID))
    api_error(bad, 400, "INVALID_FIELD_VALUE")


async def test_event_by_id_with_receipt(api: Api) -> None:
    await api.register_agent()
    events = [kit.event(i) for i in range(2)]
    ingested = await ingest_ok(api, events)
    response = await get(api, f"/api/v1/ves/events/{events[1].event_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"event", "receipt"}
    assert body["event"]["event_id"] == str(events[1].event_id)
    assert body["event"]["sequence_number"] == 2
    assert body["receipt"] == ingested["receipts"][1]
    assert body["receipt"]["signatureAlg"] == "ed25519"
    assert rfc3339(body["event"]["sequenced_at"]) == rfc3339(body["receipt"]["sequencedAt"])
    missing = await get(api, f"/api/v1/ves/events/{uuid.uuid4()}")
    api_error(missing, 404, "EVENT_NOT_FOUND")
    api_error(await get(api, "/api/v1/ves/events/not-a-uuid"), 400, "INVALID_FIELD_VALUE")


# --- entity history ----------------------------------------------------------------------------


async def test_entity_history_paging(api: Api) -> None:
    await api.register_agent()
    events = [kit.event(i, entity_id="ORD-X" if i % 2 == 0 else f"ORD-{i}") for i in range(9)]
    await ingest_ok(api, events)
    p = stream_params()
    ves = "/api/v1/ves/entities/order/ORD-X"
    whole = (await get(api, ves, **p)).json()
    assert whole["entity_type"] == "order" and whole["entity_id"] == "ORD-X"
    assert seqs(whole) == [1, 3, 5, 7, 9]
    assert (whole["count"], whole["total"], whole["has_more"]) == (5, 5, False)
    page = (await get(api, ves, **p, **{"from": 1, "limit": 2})).json()
    assert seqs(page) == [3, 5] and (page["count"], page["total"], page["has_more"]) == (2, 5, True)
    tail = (await get(api, ves, **p, **{"from": 4, "limit": 2})).json()
    assert seqs(tail) == [9] and tail["has_more"] is False
    beyond = (await get(api, ves, **p, **{"from": 10})).json()
    assert (beyond["count"], beyond["total"], beyond["has_more"]) == (0, 5, False)
    assert whole["current_version"] == 5 and set(whole["events"][0]) == {"envelope"}
    # As the reference: limit 0 means 100, larger values are capped at 100.
    for limit in ("0", "101"):
        assert seqs((await get(api, ves, **p, limit=limit)).json()) == [1, 3, 5, 7, 9]

    legacy = "/api/v1/entities/order/ORD-X"
    # As the reference: limit 0 means 100, larger values are capped at 100.
    for limit in ("0", "100000"):
        body = (await get(api, legacy, **p, limit=limit)).json()
        assert legacy_seqs(body) == [1, 3, 5, 7, 9] and body["total"] == 5
    body = (await get(api, legacy, **p, **{"from": 3, "limit": 1})).json()
    assert legacy_seqs(body) == [7] and body["has_more"] is True
    assert set(body["events"][0]) == {"envelope", "sequenced_at"}
    other_type = (await get(api, "/api/v1/ves/entities/invoice/ORD-X", **p)).json()
    assert other_type["events"] == [] and other_type["total"] == 0


async def test_entity_ids_are_literal_never_paths(api: Api) -> None:
    await api.register_agent()
    traversal = kit.event(0, entity_id="../../etc/passwd")
    slashes = kit.event(1, entity_id="a/b/c")
    await ingest_ok(api, [traversal, slashes, kit.event(2, entity_id="passwd")])
    p = stream_params()
    for prefix in ("/api/v1/ves/entities/order", "/api/v1/entities/order"):
        found = (await get(api, f"{prefix}/..%2F..%2Fetc%2Fpasswd", **p)).json()
        assert found["entity_id"] == "../../etc/passwd"
        assert found["total"] == 1 and "root:" not in str(found)
        ids = [e.get("event_id") or e["envelope"]["event_id"] for e in found["events"]]
        assert ids == [str(traversal.event_id)]
        nested = await get(api, f"{prefix}/a/b/c", **p)
        assert nested.status_code == 200 and nested.json()["entity_id"] == "a/b/c"
        assert nested.json()["total"] == 1
        for raw, literal in (("%00", "\x00"), ("a%00b", "a\x00b"), ("..%2F%00", "../\x00")):
            response = await get(api, f"{prefix}/{raw}", **p)
            assert response.status_code == 200, (raw, response.text)
            assert response.json()["entity_id"] == literal
            assert response.json()["events"] == [] and response.json()["total"] == 0
        percent = await get(api, f"{prefix}/%252e%252e", **p)  # double-encoded: stays literal
        assert percent.status_code == 200 and percent.json()["entity_id"] == "%2e%2e"


async def test_entity_type_byte_limit(sqlite_api: Api) -> None:
    p = stream_params()
    for prefix in ("/api/v1/ves/entities", "/api/v1/entities"):
        ok = await get(sqlite_api, f"{prefix}/{'t' * 128}/E-1", **p)
        assert ok.status_code == 200, ok.text
        for entity_type in ("t" * 129, "é" * 65):  # 129 and 130 UTF-8 bytes
            too_long = await get(sqlite_api, f"{prefix}/{entity_type}/E-1", **p)
            api_error(too_long, 400, "INVALID_FIELD_VALUE")
        long_id = await get(sqlite_api, f"{prefix}/order/{'€' * 171}", **p)  # 513 bytes
        api_error(long_id, 400, "INVALID_FIELD_VALUE")


# --- agent signing keys --------------------------------------------------------------------------


async def test_agent_keys_list_revoke_and_rejection(api: Api) -> None:
    client = api.client
    await api.register_agent()
    second = await client.post(
        AGENT_KEYS,
        json={
            "tenantId": str(kit.TENANT),
            "agentId": str(kit.AGENT_ID),
            "keyId": 2,
            "publicKey": OTHER_SIGNER.public_key.hex(),
            "validTo": "2999-01-01T00:00:00Z",
        },
        headers=api.headers(),
    )
    assert second.status_code == 200, second.text
    await api.register_agent(agent_id=AGENT_B)
    early = kit.event(0)
    await ingest_ok(api, [early])

    listed = await get(api, AGENT_KEYS, tenant_id=str(kit.TENANT), agent_id=str(kit.AGENT_ID))
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["count"] == 2 and [k["keyId"] for k in body["keys"]] == [1, 2]
    key1 = body["keys"][0]
    assert key1["publicKey"] == kit.AGENT.public_key.hex()
    assert (key1["status"], key1["revokedAt"], key1["keyAlgorithm"]) == ("active", None, 1)
    assert rfc3339(body["keys"][1]["validTo"]).year == 2999
    everyone = (await get(api, AGENT_KEYS, tenant_id=str(kit.TENANT))).json()
    assert everyone["count"] == 3

    revoked = await client.delete(
        f"{AGENT_KEYS}/{kit.TENANT}/{kit.AGENT_ID}/1", headers=api.headers()
    )
    assert revoked.status_code == 200, revoked.text
    out = revoked.json()
    assert out["success"] is True and out["key"]["status"] == "revoked"
    revoked_at = out["key"]["revokedAt"]
    rfc3339(revoked_at)
    again = await client.delete(
        f"{AGENT_KEYS}/{kit.TENANT}/{kit.AGENT_ID}/1", headers=api.headers()
    )
    assert again.status_code == 200 and again.json()["key"]["revokedAt"] == revoked_at
    after = (
        await get(api, AGENT_KEYS, tenant_id=str(kit.TENANT), agent_id=str(kit.AGENT_ID))
    ).json()
    assert [k["status"] for k in after["keys"]] == ["revoked", "active"]

    late = kit.event(1)
    response = await api.ingest([late, kit.event(2, signer=OTHER_SIGNER, key_id=2)])
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["eventsAccepted"] == 1 and result["headSequence"] == 2
    assert result["rejections"] == [
        {
            "event_id": str(late.event_id),
            "reason": "agent_key_invalid: Agent key has been revoked",
            "message": result["rejections"][0]["message"],
        }
    ]
    # What was sequenced before the revocation stays readable, receipt and all.
    kept = await get(api, f"/api/v1/ves/events/{early.event_id}")
    assert kept.status_code == 200 and kept.json()["receipt"]["sequenceNumber"] == 1
    missing = await client.delete(
        f"{AGENT_KEYS}/{kit.TENANT}/{kit.AGENT_ID}/9", headers=api.headers()
    )
    agent_error(missing, 404, "KEY_NOT_FOUND")


async def test_register_agent_key_shape_and_duplicate(api: Api) -> None:
    body = {
        "tenantId": str(kit.TENANT),
        "agentId": str(kit.AGENT_ID),
        "keyId": 7,
        "publicKey": "0x" + kit.AGENT.public_key.hex().upper(),
    }
    first = await api.client.post(AGENT_KEYS, json=body, headers=api.headers())
    assert first.status_code == 200, first.text
    out = first.json()
    assert set(out) == {"success", "tenantId", "agentId", "keyId", "keyAlgorithm", "message"}
    assert out["success"] is True and out["keyId"] == 7 and out["keyAlgorithm"] == 1
    again = await api.client.post(AGENT_KEYS, json=body, headers=api.headers())
    assert again.status_code == 200 and again.json()["message"] == "Agent key already registered"
    taken = body | {"publicKey": signing.Signer(bytes([3]) * 32).public_key.hex()}
    duplicate = await api.client.post(AGENT_KEYS, json=taken, headers=api.headers())
    agent_error(duplicate, 409, "KEY_EXISTS")
    (stored,) = await api.store.list_agent_keys(kit.TENANT, kit.AGENT_ID)
    assert stored.public_key == kit.AGENT.public_key


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"publicKey": "zz" * 32}, "INVALID_PUBLIC_KEY"),
        ({"publicKey": "ab" * 31}, "INVALID_PUBLIC_KEY"),
        ({"publicKey": ""}, "INVALID_PUBLIC_KEY"),
        (
            {"validFrom": "2030-01-02T00:00:00Z", "validTo": "2030-01-01T00:00:00Z"},
            "INVALID_VALIDITY",
        ),
        ({"validFrom": "yesterday"}, "INVALID_TIMESTAMP"),
        ({"keyAlgorithm": 3}, "ALGORITHM_NOT_ALLOWED"),
    ],
)
async def test_register_agent_key_refusals(
    sqlite_api: Api, change: dict[str, Any], code: str
) -> None:
    body = {
        "tenantId": str(kit.TENANT),
        "agentId": str(kit.AGENT_ID),
        "keyId": 1,
        "publicKey": kit.AGENT.public_key.hex(),
        **change,
    }
    response = await sqlite_api.client.post(AGENT_KEYS, json=body, headers=sqlite_api.headers())
    agent_error(response, 400, code)
    assert await sqlite_api.store.list_agent_keys(kit.TENANT, None) == []


async def test_agent_keys_list_needs_tenant(sqlite_api: Api) -> None:
    api_error(await get(sqlite_api, AGENT_KEYS), 400, "MISSING_REQUIRED_FIELD")


# --- admin API keys ------------------------------------------------------------------------------


async def test_admin_api_keys_lifecycle(api: Api) -> None:
    client = api.client
    created = await client.post(
        ADMIN_KEYS,
        json={"tenantId": str(kit.TENANT), "write": True, "rateLimit": 10},
        headers=api.headers(),
    )
    assert created.status_code == 200, created.text
    body = created.json()
    plaintext = body["apiKey"]
    assert re.fullmatch(r"ss_" + str(kit.TENANT)[:8] + r"[A-Za-z0-9_-]{32}", plaintext)
    prefix = body["keyHashPrefix"]
    assert prefix == hash_api_key(plaintext)[:16]
    assert body["success"] is True and body["permissions"] == "read_write"
    assert body["key"]["rateLimit"] == 10 and body["key"]["active"] is True

    listed = await get(api, ADMIN_KEYS, tenant_id=str(kit.TENANT))
    assert listed.status_code == 200
    keys = listed.json()["keys"]
    assert [k["keyHashPrefix"] for k in keys] == [prefix]
    assert plaintext not in listed.text and "apiKey" not in keys[0]
    assert hash_api_key(plaintext) not in listed.text  # only a prefix of the hash
    everything = (await get(api, ADMIN_KEYS)).json()  # the bootstrap admin sees all tenants
    assert {k["keyHashPrefix"] for k in everything["keys"]} >= {
        prefix,
        hash_api_key(ADMIN_KEY)[:16],
    }

    revoked = await client.delete(f"{ADMIN_KEYS}/{prefix}", headers=api.headers())
    assert revoked.json() == {
        "success": True,
        "keyHashPrefix": prefix,
        "revokedChildren": [],
        "message": "API key revoked",
    }
    twice = await client.delete(f"{ADMIN_KEYS}/{prefix}", headers=api.headers())
    agent_error(twice, 409, "ALREADY_REVOKED")
    after = (await get(api, ADMIN_KEYS, tenant_id=str(kit.TENANT))).json()["keys"]
    assert [k["active"] for k in after] == [False]

    for short in ("abc", "abcdef0", "not-hex-at-all", "g" * 16, "a" * 65):
        agent_error(
            await client.delete(f"{ADMIN_KEYS}/{short}", headers=api.headers()),
            400,
            "INVALID_KEY_PREFIX",
        )
    agent_error(
        await client.delete(f"{ADMIN_KEYS}/{'0' * 20}", headers=api.headers()),
        404,
        "KEY_NOT_FOUND",
    )

    # Two keys sharing a prefix: the short prefix is refused, a longer one picks one key.
    for tail in ("0", "1"):
        await api.store.put_api_key(
            ApiKeyRecord(key_hash="abcdef01" + tail * 56, tenant_id=kit.TENANT)
        )
    agent_error(
        await client.delete(f"{ADMIN_KEYS}/abcdef01", headers=api.headers()),
        409,
        "AMBIGUOUS_PREFIX",
    )
    one = await client.delete(f"{ADMIN_KEYS}/ABCDEF010", headers=api.headers())
    assert one.status_code == 200, one.text
    states = {k.key_hash[8]: k.active for k in await api.store.list_api_keys(kit.TENANT)}
    assert states["0"] is False and states["1"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"tenantId": "nope"},
        {"tenantId": str(kit.TENANT), "rateLimit": 0},
        {"tenantId": str(kit.TENANT), "write": "yes"},
        {"tenantId": str(kit.TENANT), "surprise": True},
        {"write": True},
    ],
)
async def test_admin_create_key_rejects_bad_bodies(sqlite_api: Api, body: dict[str, Any]) -> None:
    response = await sqlite_api.client.post(ADMIN_KEYS, json=body, headers=sqlite_api.headers())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in {"INVALID_FIELD_VALUE", "MISSING_REQUIRED_FIELD"}
    assert await sqlite_api.store.list_api_keys(kit.TENANT) == []


async def test_admin_create_key_refuses_no_permissions(sqlite_api: Api) -> None:
    response = await sqlite_api.client.post(
        ADMIN_KEYS, json={"tenantId": str(kit.TENANT), "read": False}, headers=sqlite_api.headers()
    )
    agent_error(response, 400, "NO_PERMISSIONS")


# --- agents and their API keys ----------------------------------------------------------------


async def test_agent_routes_self_admin_and_others(sqlite_api: Api) -> None:
    api = sqlite_api
    client = api.client
    own = apikey(await api.key(write=True, agent_id=kit.AGENT_ID, rate_limit=50))
    other = apikey(await api.key(write=True, agent_id=AGENT_B))
    unbound = apikey(await api.key(write=True))
    path = f"/api/v1/agents/{kit.AGENT_ID}"
    expected = {
        "agentId": str(kit.AGENT_ID),
        "tenantId": str(kit.TENANT),
        "active": True,
        "permissions": "read_write",
        "storeIds": [],
        "rateLimit": 50,
    }
    for headers in (own, api.headers()):
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == expected
    for headers in (other, unbound):
        agent_error(await client.get(path, headers=headers), 403, "FORBIDDEN")
        agent_error(await client.get(f"{path}/api-keys", headers=headers), 403, "FORBIDDEN")
    agent_error(
        await client.get(f"/api/v1/agents/{uuid.uuid4()}", headers=api.headers()),
        404,
        "AGENT_NOT_FOUND",
    )

    mine = await client.get(f"{path}/api-keys", headers=own)
    assert mine.status_code == 200 and mine.json()["count"] == 1
    assert mine.json()["keys"][0]["agentId"] == str(kit.AGENT_ID)

    # Self-service minting never widens the caller.
    minted = await client.post(f"{path}/api-keys", json={"readOnly": True}, headers=own)
    assert minted.status_code == 200, minted.text
    assert minted.json()["permissions"] == "read"
    assert minted.json()["key"]["rateLimit"] == 50
    assert minted.json()["key"]["agentId"] == str(kit.AGENT_ID)
    agent_error(
        await client.post(f"{path}/api-keys", json={"admin": True}, headers=own),
        403,
        "ADMIN_NOT_ALLOWED",
    )
    agent_error(
        await client.post(f"{path}/api-keys", json={"rateLimit": 51}, headers=own),
        403,
        "RATE_LIMIT_WIDENED",
    )
    agent_error(await client.post(f"{path}/api-keys", json={}, headers=other), 403, "FORBIDDEN")
    assert (await client.get(f"{path}/api-keys", headers=own)).json()["count"] == 2

    prefix = minted.json()["keyHashPrefix"]
    agent_error(await client.delete(f"{path}/api-keys/{prefix}", headers=other), 403, "FORBIDDEN")
    wrong_agent = await client.delete(
        f"/api/v1/agents/{AGENT_B}/api-keys/{prefix}", headers=api.headers()
    )
    agent_error(wrong_agent, 404, "KEY_NOT_FOUND")
    gone = await client.delete(f"{path}/api-keys/{prefix}", headers=own)
    assert gone.status_code == 200 and gone.json()["keyHashPrefix"] == prefix
    auth_failure(
        await client.get(path, headers=apikey(minted.json()["apiKey"])), 401, "invalid_api_key"
    )


# --- schema registry ---------------------------------------------------------------------------


async def register_schema(
    api: Api, schema: Any, event_type: str = "order.created", headers: dict[str, str] | None = None
) -> httpx.Response:
    return await api.client.post(
        SCHEMAS,
        json={"tenantId": str(kit.TENANT), "eventType": event_type, "schemaJson": schema},
        headers=headers or api.headers(),
    )


async def test_schema_registry_routes(api: Api) -> None:
    client = api.client
    t = {"tenant_id": str(kit.TENANT)}
    v1 = await register_schema(api, ORDER_SCHEMA)
    assert v1.status_code == 200, v1.text
    assert set(v1.json()) == {"id", "eventType", "version", "createdAt"}
    assert v1.json()["version"] == 1 and v1.json()["eventType"] == "order.created"
    v2_schema = {
        **ORDER_SCHEMA,
        "required": ["total", "n"],
        "properties": {"total": {"type": "number"}, "n": {"type": "integer"}},
    }
    v2 = await register_schema(api, v2_schema)
    assert v2.json()["version"] == 2
    assert (await register_schema(api, {"type": "object"}, "order.shipped")).json()["version"] == 1
    v1_id, v2_id = v1.json()["id"], v2.json()["id"]

    listed = (await get(api, SCHEMAS, **t)).json()
    assert listed["count"] == 3
    assert sorted((s["eventType"], s["version"]) for s in listed["schemas"]) == [
        ("order.created", 1),
        ("order.created", 2),
        ("order.shipped", 1),
    ]
    one = (await get(api, f"{SCHEMAS}/{v1_id}")).json()
    assert set(one) == {
        "id",
        "tenantId",
        "eventType",
        "version",
        "schemaJson",
        "status",
        "compatibility",
        "description",
        "createdAt",
        "updatedAt",
        "createdBy",
    }
    assert one["schemaJson"] == ORDER_SCHEMA and one["status"] == "active"
    assert one["compatibility"] == "backward" and one["tenantId"] == str(kit.TENANT)
    latest = (await get(api, f"{SCHEMAS}/event-type/order.created/latest", **t)).json()
    assert latest["id"] == v2_id and latest["version"] == 2
    by_type = (await get(api, f"{SCHEMAS}/event-type/order.created", **t)).json()
    assert sorted(s["version"] for s in by_type["schemas"]) == [1, 2]
    pinned = (await get(api, f"{SCHEMAS}/event-type/order.created", **t, version=1)).json()
    assert [s["id"] for s in pinned["schemas"]] == [v1_id]
    api_error(
        await get(api, f"{SCHEMAS}/event-type/order.created", **t, version=9),
        404,
        "SCHEMA_NOT_FOUND",
    )
    api_error(await get(api, f"{SCHEMAS}/{uuid.uuid4()}"), 404, "RESOURCE_NOT_FOUND")

    async def validate(payload: Any, version: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "tenantId": str(kit.TENANT),
            "eventType": "order.created",
            "payload": payload,
        }
        if version is not None:
            body["schemaVersion"] = version
        response = await client.post(f"{SCHEMAS}/validate", json=body, headers=api.headers())
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    good = await validate({"total": 1.5, "n": 1})
    assert good == {"valid": True, "schemaId": v2_id, "schemaVersion": 2, "errors": []}
    bad = await validate({"total": "lots", "n": 1})
    assert bad["valid"] is False and [e["path"] for e in bad["errors"]] == ["/total"]
    missing = await validate({"total": 1})
    assert missing["errors"][0]["path"] == "" and "'n'" in missing["errors"][0]["message"]
    assert (await validate({"total": 1}, version=1))["valid"] is True
    unknown = await client.post(
        f"{SCHEMAS}/validate",
        json={"tenantId": str(kit.TENANT), "eventType": "nothing.here", "payload": {}},
        headers=api.headers(),
    )
    api_error(unknown, 400, "SCHEMA_NOT_FOUND")

    # Deprecating v2 makes latest fall back to v1.
    deprecated = await client.put(
        f"{SCHEMAS}/{v2_id}/status", json={"status": "deprecated"}, headers=api.headers()
    )
    assert deprecated.status_code == 200 and deprecated.json()["status"] == "deprecated"
    latest = (await get(api, f"{SCHEMAS}/event-type/order.created/latest", **t)).json()
    assert latest["id"] == v1_id
    bogus = await client.put(
        f"{SCHEMAS}/{v2_id}/status", json={"status": "bogus"}, headers=api.headers()
    )
    api_error(bogus, 400, "INVALID_FIELD_VALUE", "INVALID_STATUS")
    invalid = await register_schema(api, {"type": 12})
    api_error(invalid, 400, "INVALID_FIELD_VALUE", "INVALID_SCHEMA")

    # Writers of the tenant may not delete (admin only); readers may not change status.
    writer = apikey(await api.key(write=True))
    reader = apikey(await api.key())
    refused = await client.delete(f"{SCHEMAS}/{v1_id}", headers=writer)
    api_error(refused, 403, "INSUFFICIENT_PERMISSIONS", "insufficient_permissions")
    api_error(
        await client.put(f"{SCHEMAS}/{v1_id}/status", json={"status": "archived"}, headers=reader),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )
    api_error(
        await register_schema(api, {}, "x.y", headers=reader), 403, "INSUFFICIENT_PERMISSIONS"
    )
    assert (await get(api, f"{SCHEMAS}/{v1_id}")).json()["status"] == "active"

    deleted = await client.delete(f"{SCHEMAS}/{v1_id}", headers=api.headers())
    assert deleted.json() == {"success": True, "id": v1_id}
    api_error(await get(api, f"{SCHEMAS}/{v1_id}"), 404, "RESOURCE_NOT_FOUND")
    api_error(
        await client.delete(f"{SCHEMAS}/{v1_id}", headers=api.headers()), 404, "RESOURCE_NOT_FOUND"
    )
    api_error(
        await get(api, f"{SCHEMAS}/event-type/order.created/latest", **t), 404, "SCHEMA_NOT_FOUND"
    )


async def test_numbers_are_not_boolean_schemas(api: Api) -> None:
    """``schemaJson: 0`` was taken as the schema ``false`` (0 == False in Python): only an
    object or true/false is a JSON Schema."""
    for document in (0, 1, 0.0, "false", "true", None, [False]):
        refused = await register_schema(api, document)
        assert refused.status_code == 422, (document, refused.text)
        assert refused.json()["error"]["code"] == "INVALID_FIELD_VALUE"
        # Our words, not the union's report of Python types ("dict[str,any]", "bool").
        assert refused.json()["error"]["message"] == (
            "schemaJson: a JSON Schema is an object or true/false"
        ), refused.text
    assert (await get(api, SCHEMAS, tenant_id=str(kit.TENANT))).json()["count"] == 0
    for document in (False, True):
        assert (await register_schema(api, document)).status_code == 200
    stored = (await get(api, SCHEMAS, tenant_id=str(kit.TENANT))).json()["schemas"]
    assert sorted(s["schemaJson"] for s in stored) == [False, True]


async def test_schema_enforced_at_ingest(api: Api) -> None:
    await api.register_agent()
    assert (await register_schema(api, ORDER_SCHEMA)).status_code == 200
    ok0, ok2 = kit.event(0), kit.event(2)
    bad = kit.event(1, payload={"n": 1, "total": "twelve"})
    untyped = kit.event(3, event_type="order.noted", payload={"anything": True})
    response = await api.ingest([ok0, bad, ok2, untyped])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["eventsAccepted"] == 3 and body["eventsRejected"] == 1
    assert (body["sequenceStart"], body["sequenceEnd"]) == (1, 3)
    (rejection,) = body["rejections"]
    assert rejection["event_id"] == str(bad.event_id)
    assert rejection["reason"] == "schema_validation"
    assert "/total" in rejection["message"]
    assert [r["eventId"] for r in body["receipts"]] == [
        str(ok0.event_id),
        str(ok2.event_id),
        str(untyped.event_id),
    ]
    text = (await api.client.get("/metrics", headers=api.headers())).text
    assert re.search(
        r'^sequencer_events_rejected(_total)?\{reason="schema_validation"\} 1\.0$', text, re.M
    )


async def test_required_mode_rejects_events_without_schema(make_api: MakeApi) -> None:
    api = await make_api("sqlite", SCHEMA_VALIDATION_MODE="required")
    await api.register_agent()
    first = kit.event(0)
    response = await api.ingest([first])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["eventsAccepted"] == 0 and body["headSequence"] == 0
    assert body["rejections"][0]["reason"] == "schema_validation"
    assert "no active schema" in body["rejections"][0]["message"]
    assert (await register_schema(api, ORDER_SCHEMA)).status_code == 200
    again = await api.ingest([first])
    assert again.json()["eventsAccepted"] == 1

"""The edge: credentials from the headers before any body byte is read, per-route body
limits, and refused credentials counted per source and minute (issue 11, items 10, 13).

The app is driven over raw ASGI where the test must see what the app *read*: ``receive``
counts the bytes it hands over.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.types import Message

from stateset_sequencer.api.http import failures
from stateset_sequencer.api.http.app import create_app
from stateset_sequencer.api.http.deps import authenticate
from stateset_sequencer.api.http.failures import FailureAudit
from stateset_sequencer.api.http.middleware import PUBLIC_PATHS, route_policy
from stateset_sequencer.testing import kit
from tests.api.conftest import ADMIN_KEY, Api, MakeApi, open_api, settings_for
from tests.api.test_auth import HEAD, apikey, auth_failure, stream_params

SCHEMAS = "/api/v1/schemas"
ADMIN_KEYS = "/api/v1/admin/api-keys"
MiB = 1024 * 1024


class Exchange:
    """One request over raw ASGI: a body offered in chunks, counted as the app reads it."""

    def __init__(self, body_bytes: int, chunk: int = 64 * 1024) -> None:
        self.remaining = body_bytes
        self.chunk = chunk
        self.read = 0
        self.messages: list[Message] = []

    async def receive(self) -> Message:
        size = min(self.chunk, self.remaining)
        self.remaining -= size
        self.read += size
        return {"type": "http.request", "body": b" " * size, "more_body": self.remaining > 0}

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        status: int = self.messages[0]["status"]
        return status

    @property
    def headers(self) -> dict[bytes, bytes]:
        return {k.lower(): v for k, v in self.messages[0]["headers"]}

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


async def raw_post(
    api: Api, path: str, body_bytes: int, headers: dict[str, str], *, declare: bool = True
) -> Exchange:
    exchange = Exchange(body_bytes)
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-type", b"application/json"))
    if declare:
        raw.append((b"content-length", str(body_bytes).encode()))
    else:
        raw.append((b"transfer-encoding", b"chunked"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("sequencer.test", 80),
    }
    await create_app(api.services)(scope, exchange.receive, exchange.send)
    return exchange


# --- item 10: the credential before the body ----------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "missing_auth"), ({"authorization": "ApiKey ss_" + "q" * 40}, "invalid_api_key")],
)
async def test_unauthenticated_body_is_refused_before_a_byte_is_read(
    sqlite_api: Api, headers: dict[str, str], code: str
) -> None:
    before = await sqlite_api.store.list_schemas(kit.TENANT)
    for declare in (True, False):  # with Content-Length and streamed
        exchange = await raw_post(sqlite_api, SCHEMAS, 9 * MiB, headers, declare=declare)
        assert exchange.status == 401
        assert exchange.json() == {"error": exchange.json()["error"], "code": code}
        assert exchange.read == 0  # not one byte of the body was taken
    assert await sqlite_api.store.list_schemas(kit.TENANT) == before


async def test_authenticated_large_body_to_a_key_route_is_413_naming_the_limit(
    sqlite_api: Api,
) -> None:
    api = sqlite_api
    before = await api.store.list_api_keys()
    declared = await raw_post(api, ADMIN_KEYS, MiB, apikey(ADMIN_KEY))
    assert declared.status == 413
    assert declared.read == 0  # refused from Content-Length at once
    streamed = await raw_post(api, ADMIN_KEYS, MiB, apikey(ADMIN_KEY), declare=False)
    assert streamed.status == 413
    assert streamed.read <= 16 * 1024 + streamed.chunk  # stopped at the limit
    for exchange in (declared, streamed):
        error = exchange.json()["error"]
        assert error["code"] == "PAYLOAD_TOO_LARGE"
        assert error["details"] == {"reason": "BODY_TOO_LARGE", "limit_bytes": 16 * 1024}
        assert "16384 bytes" in error["message"] and "MAX_JSON_BODY_BYTES" in error["message"]
    assert await api.store.list_api_keys() == before


async def test_each_route_has_its_own_body_limit(make_api: MakeApi) -> None:
    api = await make_api("sqlite", MAX_SCHEMA_BODY_BYTES=4096, MAX_JSON_BODY_BYTES=1024)
    schema = {"type": "object", "description": "x" * 2000}
    body = {"tenantId": str(kit.TENANT), "eventType": "order.created", "schemaJson": schema}
    # 2 KB: over the JSON limit of the key routes, within the schema registry's.
    registered = await api.client.post(SCHEMAS, json=body, headers=api.headers())
    assert registered.status_code == 200, registered.text
    refused = await api.client.post(
        ADMIN_KEYS, json={"tenantId": str(kit.TENANT), "note": "x" * 2000}, headers=api.headers()
    )
    assert refused.status_code == 413
    assert refused.json()["error"]["details"]["limit_bytes"] == 1024
    schema["description"] = "x" * 5000
    too_big = await api.client.post(SCHEMAS, json=body, headers=api.headers())
    assert too_big.status_code == 413
    assert "MAX_SCHEMA_BODY_BYTES" in too_big.json()["error"]["message"]
    assert len(await api.store.list_schemas(kit.TENANT)) == 1


async def test_unknown_paths_and_methods_keep_their_404_and_405(sqlite_api: Api) -> None:
    missing = await sqlite_api.client.post("/api/v1/nowhere", content=b"x" * 100_000)
    assert missing.status_code == 404
    wrong = await sqlite_api.client.put("/api/v1/ves/events/ingest", content=b"{}")
    assert wrong.status_code == 405


async def test_public_routes_are_the_ones_without_a_credential(sqlite_api: Api) -> None:
    """PUBLIC_PATHS (what the edge lets through) and each route's ``Auth`` dependency
    (what its handler uses) say the same thing, for every API route."""
    app = create_app(sqlite_api.services)
    seen: set[str] = set()
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        path = str(route.path)
        seen.add(path)
        calls: set[Any] = set()
        stack = list(route.dependant.dependencies)
        while stack:
            dep = stack.pop()
            calls.add(dep.call)
            stack.extend(dep.dependencies)
        assert (authenticate not in calls) == (path in PUBLIC_PATHS), path
        assert route_policy(route, sqlite_api.services.settings).credential == (
            path not in PUBLIC_PATHS
        )
    assert seen >= PUBLIC_PATHS  # no stale entry


# --- item 13: refused credentials, counted ----------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_bad_key_flood_writes_a_few_rows_and_is_throttled_before_the_store(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = sqlite_api
    clock = Clock(600_000.0)  # the start of a minute: all 200 fall in one
    api.services.auth_failures = FailureAudit(
        api.store, limit_per_minute=50, max_sources=100, clock=clock
    )
    lookups = 0
    real = api.store.get_api_key

    async def counted(digest: str) -> Any:
        nonlocal lookups
        lookups += 1
        return await real(digest)

    monkeypatch.setattr(api.store, "get_api_key", counted)
    bad = apikey("ss_" + "q" * 40)
    statuses = [
        (await api.client.get(HEAD, params=stream_params(), headers=bad)).status_code
        for _ in range(200)
    ]
    assert statuses == [401] * 50 + [429] * 150
    assert lookups == 50  # a throttled source never reaches the store
    throttled = await api.client.get(HEAD, params=stream_params(), headers=bad)
    auth_failure(throttled, 429, "rate_limited")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    # A valid key from the same source is throttled too: the source is what failed.
    auth_failure(
        await api.client.get(HEAD, params=stream_params(), headers=api.headers()),
        429,
        "rate_limited",
    )
    assert await api.store.list_audit(action="auth.failure") == []  # nothing per request

    await api.services.auth_failures.flush()
    rows = await api.store.list_audit(action="auth.failure")
    assert len(rows) == 2
    counts = {row.details["code"]: row.details["count"] for row in rows}
    assert counts == {"invalid_api_key": 50, "rate_limited": 152}
    for row in rows:
        assert row.ip_address == "127.0.0.1" and row.resource_id == HEAD
        assert row.details["window_seconds"] == 60
        assert "q" * 40 not in repr(row)

    clock.now += 60  # the next minute: the source may try again
    assert (
        await api.client.get(HEAD, params=stream_params(), headers=api.headers())
    ).status_code == 200


async def test_a_closed_minute_is_written_by_itself(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failures, "FLUSH_DELAY_SECONDS", 0.0)
    clock = Clock(600_059.99)  # a moment before the minute closes
    audit = FailureAudit(sqlite_api.store, limit_per_minute=None, max_sources=10, clock=clock)
    audit.record(
        "10.0.0.1",
        "missing_auth",
        "Authentication required",
        path="/x",
        request_id=None,
        user_agent=None,
    )
    clock.now += 1  # the minute has closed; the timer (due in ~10 ms) writes it
    for _ in range(500):
        rows = await sqlite_api.store.list_audit(action="auth.failure")
        if rows:
            break
        await asyncio.sleep(0.01)
    assert [(r.actor, r.details["count"]) for r in rows] == [("10.0.0.1", 1)]
    assert audit.pending() == 0
    await audit.close()


async def test_memory_is_bounded_and_the_total_kept(sqlite_api: Api) -> None:
    audit = FailureAudit(
        sqlite_api.store, limit_per_minute=5, max_sources=3, clock=Clock(600_000.0)
    )
    for i in range(10):
        audit.record(
            f"10.0.0.{i}",
            "invalid_api_key",
            "Invalid API key",
            path="/x",
            request_id=None,
            user_agent=None,
        )
    assert len(audit._buckets) <= 4 and len(audit._failures) <= 3
    assert await audit.flush() == 4
    rows = await sqlite_api.store.list_audit(action="auth.failure")
    assert sum(r.details["count"] for r in rows) == 10
    assert {r.actor for r in rows} == {"10.0.0.0", "10.0.0.1", "10.0.0.2", "*"}


async def test_counted_refusals_are_written_at_shutdown(tmp_path: Path) -> None:
    settings = settings_for(None, tmp_path / "shutdown")
    async with open_api(settings) as api:
        for _ in range(3):
            response = await api.client.get(HEAD, params=stream_params())
            auth_failure(response, 401, "missing_auth")
        assert await api.store.list_audit(action="auth.failure") == []
    async with open_api(settings) as reopened:
        rows = await reopened.store.list_audit(action="auth.failure")
    assert [(r.details["code"], r.details["count"]) for r in rows] == [("missing_auth", 3)]

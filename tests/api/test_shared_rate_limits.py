"""RATE_LIMIT_BACKEND=postgres: two separate services (two apps, two pools) on one
PostgreSQL database count against one budget, sequentially and when their requests race;
the limiter fails closed (503 ``rate_limit_unavailable`` with ``Retry-After``) when the
database cannot answer, whether it is gone or a lock is held past the lock timeout; and
the setting is refused where it cannot mean anything (SQLite) or is not a backend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from stateset_sequencer.runtime import StartupError, start_services
from stateset_sequencer.sequencer import api_keys
from stateset_sequencer.sequencer.api_keys import KeySpec
from stateset_sequencer.sequencer.auth import budget_key
from stateset_sequencer.testing import kit, pg
from tests.api.conftest import Api, open_api, settings_for
from tests.api.test_auth import apikey, auth_failure

HEAD = f"/api/v1/ves/head?tenant_id={kit.TENANT}&store_id={kit.STORE_ID}"
TENANT_BUDGET = 7


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[tuple[str, Api, Api]]:
    """Two services on one scratch database, both with the shared limiter."""
    async with AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(pg.scratch_database("seqrate"))
        apis = []
        for name in ("a", "b"):
            settings = settings_for(
                dsn,
                tmp_path / name,
                RATE_LIMIT_BACKEND="postgres",
                RATE_LIMIT_PER_MINUTE=TENANT_BUDGET,
                # Cached, so that a refusal below comes from the limiter, not the key lookup.
                API_KEY_CACHE_TTL_SECS=3600,
            )
            apis.append(await stack.enter_async_context(open_api(settings)))
        yield dsn, apis[0], apis[1]


async def tenant_key(api: Api, rate_limit: int | None = None) -> str:
    # Minted on the store, so that no request is spent on it.
    plaintext, _ = await api_keys.create_key(
        api.store,
        KeySpec(tenant_id=kit.TENANT, rate_limit=rate_limit),
        actor="test",
        actor_type="system",
    )
    return plaintext


async def test_two_services_share_the_tenant_budget(shared: tuple[str, Api, Api]) -> None:
    _, a, b = shared
    key = await tenant_key(a)
    statuses = [
        (await (a if i % 2 else b).client.get(HEAD, headers=apikey(key))).status_code
        for i in range(TENANT_BUDGET)
    ]
    assert statuses == [200] * TENANT_BUDGET
    for api in (a, b):
        refused = await api.client.get(HEAD, headers=apikey(key))
        auth_failure(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Another tenant has a budget of its own.
    other = uuid.UUID("00000000-0000-0000-0000-0000000000a2")
    plaintext, _ = await api_keys.create_key(
        a.store, KeySpec(tenant_id=other), actor="test", actor_type="system"
    )
    path = f"/api/v1/ves/head?tenant_id={other}&store_id={kit.STORE_ID}"
    assert (await b.client.get(path, headers=apikey(plaintext))).status_code == 200


async def test_racing_requests_on_two_services_admit_exactly_the_budget(
    shared: tuple[str, Api, Api],
) -> None:
    _, a, b = shared
    key = await tenant_key(a)
    # Warm both key caches (authenticating spends no budget), so that every racing
    # request goes straight to the limiter.
    for api in (a, b):
        await api.services.authenticator.authenticate({"x-api-key": key})
    responses = await asyncio.gather(
        *((a if i % 2 else b).client.get(HEAD, headers=apikey(key)) for i in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == TENANT_BUDGET, statuses
    assert statuses.count(429) == 50 - TENANT_BUDGET, statuses


async def test_a_keys_own_rate_limit_is_shared_too(shared: tuple[str, Api, Api]) -> None:
    _, a, b = shared
    key = await tenant_key(a, rate_limit=3)
    statuses = [
        (await (a if i % 2 else b).client.get(HEAD, headers=apikey(key))).status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


async def test_the_table_names_budgets_by_hash_only(shared: tuple[str, Api, Api]) -> None:
    dsn, a, _ = shared
    key = await tenant_key(a)
    assert (await a.client.get(HEAD, headers=apikey(key))).status_code == 200
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT key_hash, used, limit_count FROM rate_limit_budgets")
    finally:
        await conn.close()
    assert [(r["key_hash"], r["used"], r["limit_count"]) for r in rows] == [
        (budget_key(f"tenant:{kit.TENANT}"), 1, TENANT_BUDGET)
    ]


async def test_fails_closed_when_the_database_is_gone(shared: tuple[str, Api, Api]) -> None:
    _, a, b = shared
    key = await tenant_key(a)
    assert (await a.client.get(HEAD, headers=apikey(key))).status_code == 200
    await a.store.close()  # the key stays cached; the limiter's database is gone
    refused = await a.client.get(HEAD, headers=apikey(key))
    auth_failure(refused, 503, "rate_limit_unavailable")
    assert refused.headers["retry-after"] == "1"
    # The other service, on its own pool, still counts.
    assert (await b.client.get(HEAD, headers=apikey(key))).status_code == 200


async def test_fails_closed_when_the_budget_stays_locked(shared: tuple[str, Api, Api]) -> None:
    dsn, a, _ = shared
    key = await tenant_key(a)
    assert (await a.client.get(HEAD, headers=apikey(key))).status_code == 200
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT * FROM rate_limit_budgets FOR UPDATE")
            refused = await a.client.get(HEAD, headers=apikey(key))
        auth_failure(refused, 503, "rate_limit_unavailable")
        assert refused.headers["retry-after"] == "1"
        # Released: counted again, and the refused request spent nothing.
        assert (await a.client.get(HEAD, headers=apikey(key))).status_code == 200
    finally:
        await holder.close()
    conn = await asyncpg.connect(dsn)
    try:
        used = await conn.fetchval("SELECT used FROM rate_limit_budgets")
    finally:
        await conn.close()
    assert used == 2


@pytest.mark.parametrize(
    ("backend", "message"),
    [("postgres", "needs a PostgreSQL DATABASE_URL"), ("redis", "must be one of")],
)
async def test_an_unusable_backend_is_refused_at_start(
    tmp_path: Path, backend: str, message: str
) -> None:
    settings = settings_for(None, tmp_path / "s", RATE_LIMIT_BACKEND=backend)
    with pytest.raises(StartupError, match=message):
        await start_services(settings, announce=False)


async def test_memory_stays_the_default(tmp_path: Path) -> None:
    settings: Any = settings_for(None, tmp_path / "m")
    assert settings.RATE_LIMIT_BACKEND == "memory"

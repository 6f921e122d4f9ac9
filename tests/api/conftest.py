"""An in-process API over a real store: the app from ``create_app`` on started services,
driven through httpx's ASGI transport (no socket, but every middleware and handler runs).

``api`` runs each test on SQLite and on a real PostgreSQL; ``sqlite_api`` only on SQLite,
for tests whose subject is not storage. ``make_api`` builds one with other settings.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stateset_sequencer.api.http.app import create_app
from stateset_sequencer.config import Settings
from stateset_sequencer.runtime import Services, start_services
from stateset_sequencer.testing import kit, pg

ADMIN_KEY = "ss_00000000" + "bootstrapadminkeyfortests0000000"
BASE = "http://sequencer.test"
SEQUENCER_SEED_HEX = kit.SEQUENCER_SEED.hex()


@dataclass
class Api:
    client: httpx.AsyncClient
    services: Services

    @property
    def store(self) -> Any:
        return self.services.store

    def headers(self, key: str = ADMIN_KEY) -> dict[str, str]:
        return {"Authorization": f"ApiKey {key}"}

    async def key(
        self,
        tenant_id: uuid.UUID = kit.TENANT,
        *,
        write: bool = False,
        admin: bool = False,
        store_ids: tuple[uuid.UUID, ...] = (),
        agent_id: uuid.UUID | None = None,
        rate_limit: int | None = None,
    ) -> str:
        """Mint a key through the admin route (so the route itself is exercised)."""
        body: dict[str, Any] = {
            "tenantId": str(tenant_id),
            "storeIds": [str(s) for s in store_ids],
            "write": write,
            "admin": admin,
        }
        if agent_id is not None:
            body["agentId"] = str(agent_id)
        if rate_limit is not None:
            body["rateLimit"] = rate_limit
        response = await self.client.post(
            "/api/v1/admin/api-keys", json=body, headers=self.headers()
        )
        assert response.status_code == 200, response.text
        return str(response.json()["apiKey"])

    async def register_agent(
        self, tenant_id: uuid.UUID = kit.TENANT, agent_id: uuid.UUID = kit.AGENT_ID, key_id: int = 1
    ) -> None:
        response = await self.client.post(
            "/api/v1/agents/keys",
            json={
                "tenantId": str(tenant_id),
                "agentId": str(agent_id),
                "keyId": key_id,
                "publicKey": "0x" + kit.AGENT.public_key.hex(),
            },
            headers=self.headers(),
        )
        assert response.status_code == 200, response.text

    async def ingest(
        self, events: list[Any], key: str = ADMIN_KEY, agent_id: uuid.UUID = kit.AGENT_ID
    ) -> httpx.Response:
        body = {"agentId": str(agent_id), "events": [e.to_wire() for e in events]}
        return await self.client.post(
            "/api/v1/ves/events/ingest", json=body, headers=self.headers(key)
        )


def settings_for(database_url: str | None, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "DATA_DIR": data_dir,
        "BOOTSTRAP_ADMIN_API_KEY": ADMIN_KEY,
        "VES_SEQUENCER_SIGNING_KEY": SEQUENCER_SEED_HEX,
        "VES_SEQUENCER_ID": str(uuid.UUID(int=7)),
        "CACHE_AGENT_KEY_TTL_SECS": 0,
        "API_KEY_CACHE_TTL_SECS": 0,
        "SCHEMA_CACHE_TTL_SECS": 0,
        "LOG_LEVEL": "warning",
        "SEQUENCER_ENV": "test",
        # Tests that commit by hand, or compare store snapshots, must not race the commit
        # worker; its own tests (test_commit_worker.py) turn it on.
        "COMMIT_WORKER_ENABLED": False,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def open_api(settings: Settings) -> AsyncIterator[Api]:
    services = await start_services(settings, announce=False)
    try:
        transport = httpx.ASGITransport(app=create_app(services), client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield Api(client, services)
    finally:
        await services.close()


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[MakeApi]:
    """``await make_api(backend="sqlite", **settings)``; closed at the end of the test."""
    async with AsyncExitStack() as stack:

        async def make(backend: str = "sqlite", **overrides: Any) -> Api:
            folder = tmp_path / f"api-{uuid.uuid4().hex[:8]}"
            url = None
            if backend == "postgres":
                url = await stack.enter_async_context(pg.scratch_database("seqapi"))
            return await stack.enter_async_context(open_api(settings_for(url, folder, **overrides)))

        yield make


@pytest.fixture(params=["sqlite", "postgres"])
async def api(request: pytest.FixtureRequest, make_api: MakeApi) -> Api:
    return await make_api(request.param)


@pytest.fixture
async def sqlite_api(make_api: MakeApi) -> Api:
    return await make_api("sqlite")

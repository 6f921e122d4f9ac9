"""``GET /api/v1/projections/{entity_type}/{entity_id}`` over a running service: the
worker folds what is ingested, the route answers it, a restart resumes from the stored
checkpoint, the CLI's rebuild gives the same documents; and every refusal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from typer.testing import CliRunner

from stateset_sequencer.cli import app as cli_app
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.kit import until

from .conftest import Api, MakeApi, open_api, settings_for

FAST = {"PROJECTION_POLL_INTERVAL_MS": 10, "LEADER_LOCK_RETRY_SECS": 0.05}
PARAMS = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}


def path(entity_id: str, entity_type: str = "order") -> str:
    # As the reference SDK builds it: every reserved character quoted, '/' included.
    return f"/api/v1/projections/{quote(entity_type, safe='')}/{quote(entity_id, safe='')}"


async def get(api: Api, entity_id: str, key: str | None = None, **params: str) -> httpx.Response:
    headers = api.headers() if key is None else api.headers(key)
    return await api.client.get(path(entity_id), params={**PARAMS, **params}, headers=headers)


async def folded(api: Api) -> None:
    """Wait until the worker has folded the stream up to its head."""
    store = api.store

    async def caught_up() -> bool:
        return bool(await store.projection_checkpoint(kit.STREAM) == await store.head(kit.STREAM))

    await until(caught_up, "the worker folds every event")


async def ingest(api: Api, payloads: list[tuple[str, Any]], start: int = 0) -> None:
    events = [
        kit.event(start + i, entity_id=entity_id, payload=payload)
        for i, (entity_id, payload) in enumerate(payloads)
    ]
    response = await api.ingest(events)
    assert response.status_code == 200, response.text


@pytest.fixture
async def fast_api(request: pytest.FixtureRequest, make_api: MakeApi) -> Api:
    api = await make_api(getattr(request, "param", "sqlite"), **FAST)
    await api.register_agent()
    return api


both = pytest.mark.parametrize("fast_api", ["sqlite", "postgres"], indirect=True)


@both
async def test_ingested_events_are_folded_and_served(fast_api: Api) -> None:
    api = fast_api
    assert api.services.projections is not None
    await ingest(
        api,
        [
            ("ORD-1", {"status": "new", "total": 10, "lines": [1]}),
            ("a/b c%2F", {"x": 1}),
            ("ORD-1", {"status": "paid", "total": None}),
        ],
    )
    await folded(api)
    response = await get(api, "ORD-1")
    assert response.status_code == 200, response.text
    body = response.json()
    last = (await api.store.read_range(kit.STREAM, 3, 3))[0]
    assert body == {
        "tenant_id": str(kit.TENANT),
        "store_id": str(kit.STORE_ID),
        "entity_type": "order",
        "entity_id": "ORD-1",
        "source": "ves",
        "version": 2,
        "updated_at": body["updated_at"],
        "document": {"status": "paid", "lines": [1]},
    }
    assert (
        body["updated_at"]
        == (
            await api.client.get(
                f"/api/v1/ves/events/{last.envelope.event_id}", headers=api.headers()
            )
        ).json()["event"]["sequenced_at"]
    )
    # An id holding '/' and '%2F', sent quoted, reaches the route whole in one segment.
    slashed = await get(api, "a/b c%2F", source="ves")
    assert slashed.status_code == 200, slashed.text
    assert (slashed.json()["entity_id"], slashed.json()["document"]) == ("a/b c%2F", {"x": 1})
    assert (await get(api, "a")).status_code == 404


@both
async def test_refusals(fast_api: Api) -> None:
    api = fast_api
    await ingest(api, [("ORD-1", {"a": 1})])
    await folded(api)
    before = await kit.snapshot(api.store)
    checkpoint = await api.store.projection_checkpoint(kit.STREAM)

    def reason(response: httpx.Response) -> str:
        return str(response.json()["error"]["details"]["reason"])

    wrong = await get(api, "ORD-1", source="other")
    assert wrong.status_code == 400
    assert wrong.json()["error"]["message"] == "source must be `ves` or `legacy`"
    assert reason(wrong) == "INVALID_SOURCE"
    legacy = await get(api, "ORD-1", source="legacy")
    assert legacy.status_code == 404
    assert reason(legacy) == "LEGACY_PROJECTIONS_NOT_KEPT"
    assert legacy.json()["error"]["message"].startswith("Projection not found")
    missing = await get(api, "ORD-404")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Projection not found"
    assert reason(missing) == "PROJECTION_NOT_FOUND"
    for entity_type, entity_id in (("t" * 129, "x"), ("order", "x" * 513), ("é" * 65, "x")):
        long = await api.client.get(
            path(entity_id, entity_type), params=PARAMS, headers=api.headers()
        )
        assert long.status_code == 400, (entity_type[:3], len(entity_id), long.text)
    edge = await api.client.get(path("x" * 512, "t" * 128), params=PARAMS, headers=api.headers())
    assert edge.status_code == 404  # at the limits: valid, and not there
    unstorable = await api.client.get(
        "/api/v1/projections/order/a%00b", params=PARAMS, headers=api.headers()
    )
    assert unstorable.status_code == 404
    no_tenant = await api.client.get(path("ORD-1"), headers=api.headers())
    assert no_tenant.status_code == 400
    bad_uuid = await api.client.get(
        path("ORD-1"), params={**PARAMS, "store_id": "nope"}, headers=api.headers()
    )
    assert bad_uuid.status_code == 400
    assert (await api.client.get(path("ORD-1"), params=PARAMS)).status_code == 401
    # Another tenant's key, and a key of this tenant scoped to another store.
    other = await api.key(uuid.UUID(int=0xA9))
    refused = await get(api, "ORD-1", key=other)
    assert refused.status_code == 403
    assert reason(refused) == "tenant_access_denied"
    scoped = await api.key(kit.TENANT, store_ids=(uuid.UUID(int=0xB9),))
    assert (await get(api, "ORD-1", key=scoped)).status_code == 403
    reader = await api.key(kit.TENANT)
    assert (await get(api, "ORD-1", key=reader)).status_code == 200
    assert await kit.snapshot(api.store) == before
    assert await api.store.projection_checkpoint(kit.STREAM) == checkpoint


@asynccontextmanager
async def database(backend: str, tmp_path: Path) -> AsyncIterator[str | None]:
    if backend == "postgres":
        async with pg.scratch_database("seqproj") as dsn:
            yield dsn
    else:
        yield f"sqlite:///{tmp_path / 'projections.db'}"


def rebuild_cli(url: str, *extra: str) -> str:
    result = CliRunner().invoke(
        cli_app, ["projections", "rebuild", "--database-url", url, *extra, "--json"]
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_restart_resumes_and_rebuild_agrees(backend: str, tmp_path: Path) -> None:
    async with database(backend, tmp_path) as url:
        assert url is not None
        settings = settings_for(url, tmp_path / "data", **FAST)
        entities = ["ORD-0", "ORD-1", "ORD-2"]
        async with open_api(settings) as api:
            await api.register_agent()
            await ingest(api, [(entities[i % 3], {"n": i, f"k{i}": i}) for i in range(7)])
            await folded(api)
            first = {e: (await get(api, e)).json() for e in entities}
        assert first["ORD-0"]["version"] == 3

        # Stopped: more events arrive (through a service without a worker).
        async with open_api(
            settings.model_copy(update={"PROJECTION_WORKER_ENABLED": False})
        ) as api:
            assert api.services.projections is None
            await ingest(api, [("ORD-0", {"late": True})], start=7)
            assert (await get(api, "ORD-0")).json() == first["ORD-0"]  # not folded yet

        async with open_api(settings) as api:
            await folded(api)
            resumed = {e: (await get(api, e)).json() for e in entities}
            assert resumed["ORD-0"]["version"] == 4  # folded once more, not from scratch
            assert resumed["ORD-0"]["document"] == {**first["ORD-0"]["document"], "late": True}
            assert resumed["ORD-1"] == first["ORD-1"]
            for e in entities:
                assert resumed[e]["version"] == await api.store.entity_version(
                    kit.STREAM, "order", e
                )

            # A document the log does not give, which the rebuild must replace.
            wrong = await api.store.get_projection(kit.STREAM, "order", "ORD-2")
            await api.store.clear_projections(kit.STREAM)
            await api.store.apply_projection(
                kit.STREAM, 0, 8, [replace(wrong, document={"wrong": True})], wrong.updated_at
            )

        # The CLI recomputes from the log alone, with no service running.
        tenant, store = str(kit.TENANT), str(kit.STORE_ID)
        output = await asyncio.to_thread(
            rebuild_cli, url, "--tenant-id", tenant, "--store-id", store
        )
        assert '"checkpoint":8' in output
        idle = settings.model_copy(update={"PROJECTION_WORKER_ENABLED": False})
        async with open_api(idle) as api:
            assert {e: (await get(api, e)).json() for e in entities} == resumed
        assert '"checkpoint":8' in await asyncio.to_thread(rebuild_cli, url, "--tenant-id", tenant)
        assert '"checkpoint":8' in await asyncio.to_thread(rebuild_cli, url)
        async with open_api(idle) as api:
            assert {e: (await get(api, e)).json() for e in entities} == resumed


def test_rebuild_refuses_a_store_without_a_tenant(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli_app,
        [
            "projections",
            "rebuild",
            "--store-id",
            str(kit.STORE_ID),
            "--database-url",
            f"sqlite:///{tmp_path / 'x.db'}",
        ],
    )
    assert result.exit_code == 2
    assert "--tenant-id" in result.output

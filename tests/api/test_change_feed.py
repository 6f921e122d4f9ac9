"""Two nodes on one PostgreSQL database: a revocation through node A is refused by node B
as soon as the database's notification reaches B (issue 11 item 12). Every cache TTL is
an hour here, so only the notification can explain B's refusal; the control runs B with
the feed off and shows B still accepting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from stateset_sequencer.sequencer.auth import hash_api_key
from stateset_sequencer.store.records import Change, ChangeKind
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.kit import until
from tests.api.conftest import Api, open_api, settings_for

HOUR = 3600
INGEST = "/api/v1/ves/events/ingest"
HEAD = "/api/v1/ves/head"
ADMIN_KEYS = "/api/v1/admin/api-keys"
AGENT_KEYS = "/api/v1/agents/keys"
KEY_CHANGE = Change(ChangeKind.AGENT_KEY, tenant_id=kit.TENANT, agent_id=kit.AGENT_ID, key_id=1)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``a, b = await nodes(**b_settings)``: two services on one scratch database."""
    async with AsyncExitStack() as stack:

        async def make(**b_overrides: Any) -> tuple[Api, Api]:
            url = await stack.enter_async_context(pg.scratch_database("seqnodes"))
            ttls = {
                "CACHE_AGENT_KEY_TTL_SECS": HOUR,
                "API_KEY_CACHE_TTL_SECS": HOUR,
                "SCHEMA_CACHE_TTL_SECS": HOUR,
            }
            a = await stack.enter_async_context(open_api(settings_for(url, tmp_path / "a", **ttls)))
            b = await stack.enter_async_context(
                open_api(settings_for(url, tmp_path / "b", **{**ttls, **b_overrides}))
            )
            return a, b

        yield make


def heard(node: Api, change: Change) -> int:
    invalidation = node.services.invalidation
    assert invalidation is not None
    return invalidation.received[change]


async def revoke_agent_key(node: Api) -> None:
    response = await node.client.delete(
        f"{AGENT_KEYS}/{kit.TENANT}/{kit.AGENT_ID}/1", headers=node.headers()
    )
    assert response.status_code == 200, response.text


async def test_an_agent_key_revoked_on_one_node_is_refused_by_the_other(
    nodes: Callable[..., Any],
) -> None:
    a, b = await nodes()
    await a.register_agent()
    # Heard before B caches the key: the registration's own notice must not be what
    # empties B's cache later.
    await until(lambda: heard(b, KEY_CHANGE) == 1, "B hears the registration")
    first = await b.ingest([kit.event(0)])
    assert first.status_code == 200 and first.json()["eventsAccepted"] == 1  # B caches the key

    await revoke_agent_key(a)
    await until(lambda: heard(b, KEY_CHANGE) == 2, "B hears the revocation")
    before = await kit.snapshot(b.store)
    late = kit.event(1)
    refused = await b.ingest([late])
    assert refused.status_code == 200, refused.text
    result = refused.json()
    assert result["eventsAccepted"] == 0 and result["headSequence"] == 1
    assert [r["reason"] for r in result["rejections"]] == [
        "agent_key_invalid: Agent key has been revoked"
    ]
    assert await kit.snapshot(b.store) == before


async def test_without_the_feed_the_other_node_trusts_its_cache(
    nodes: Callable[..., Any],
) -> None:
    """The control: what the test above would see without the notification."""
    a, b = await nodes(CHANGE_FEED="off")
    assert b.services.invalidation is None
    await a.register_agent()
    assert (await b.ingest([kit.event(0)])).json()["eventsAccepted"] == 1
    await revoke_agent_key(a)
    assert (await b.ingest([kit.event(1)])).json()["eventsAccepted"] == 1  # stale for an hour


async def test_an_api_key_revoked_on_one_node_is_refused_by_the_other(
    nodes: Callable[..., Any],
) -> None:
    a, b = await nodes()
    minted = await a.client.post(
        ADMIN_KEYS, json={"tenantId": str(kit.TENANT)}, headers=a.headers()
    )
    assert minted.status_code == 200, minted.text
    key = minted.json()["apiKey"]
    params = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)}
    digest = hash_api_key(key)

    def heard_of_key() -> int:
        invalidation = b.services.invalidation
        assert invalidation is not None
        return sum(
            n
            for change, n in invalidation.received.items()
            if change.kind is ChangeKind.API_KEY
            and change.key_hash_prefix is not None
            and digest.startswith(change.key_hash_prefix)
        )

    await until(lambda: heard_of_key() == 1, "B hears the new key")
    assert (await b.client.get(HEAD, params=params, headers=b.headers(key))).status_code == 200
    revoked = await a.client.delete(
        f"{ADMIN_KEYS}/{minted.json()['keyHashPrefix']}", headers=a.headers()
    )
    assert revoked.status_code == 200, revoked.text
    await until(lambda: heard_of_key() == 2, "B hears the revocation")
    refused = await b.client.get(HEAD, params=params, headers=b.headers(key))
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "invalid_api_key"
    stored = await b.store.get_api_key(digest)
    assert stored is not None and not stored.active

"""``GET``/``PUT /api/v1/agents/{agent_id}/policy`` and the policy's enforcement at ingest,
on both backends: the reference's wire shapes and messages, each of the four denials as a
per-event rejection that consumes no sequence number while the rest of the batch is
sequenced, a change taking effect on the next ingest, and every bad request refused with
its status and code, the store unchanged."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from stateset_sequencer.sequencer.policies import POLICY_DENIED
from stateset_sequencer.store.records import AgentPolicy, AuditEntry, Change, ChangeKind
from stateset_sequencer.testing import kit, pg
from stateset_sequencer.testing.kit import until
from stateset_sequencer.ves.codec import parse_rfc3339
from tests.api.conftest import Api, MakeApi, open_api, settings_for

HOUR = 3600
POLICY = f"/api/v1/agents/{kit.AGENT_ID}/policy"
ACTION = "agent_policy.update"
OTHER_TENANT = uuid.UUID("00000000-0000-0000-0000-0000000000c1")

STRICT = {
    "tenantId": str(kit.TENANT),
    "allowedEventTypes": ["order.*"],
    "allowedEntityTypes": ["order"],
    "requireBaseVersion": True,
    "maxPayloadBytes": 200,
    "enabled": True,
}


async def put(api: Api, body: Any, key: str | None = None, path: str = POLICY) -> Any:
    headers = api.headers() if key is None else api.headers(key)
    return await api.client.put(path, json=body, headers=headers)


async def get(api: Api, key: str | None = None, tenant: uuid.UUID = kit.TENANT) -> Any:
    headers = api.headers() if key is None else api.headers(key)
    return await api.client.get(POLICY, params={"tenant_id": str(tenant)}, headers=headers)


async def state(api: Api) -> Any:
    """What a refused request must leave as it was: the events, every policy of the
    agent, and the policy audit entries."""
    return (
        await kit.snapshot(api.store),
        await api.store.get_policy(kit.TENANT, kit.AGENT_ID),
        await api.store.get_policy(OTHER_TENANT, kit.AGENT_ID),
        await api.store.list_audit(1000, ACTION),
    )


async def policy_audits(api: Api) -> list[AuditEntry]:
    entries: list[AuditEntry] = await api.store.list_audit(1000, ACTION)
    return entries


# --- the routes -----------------------------------------------------------------------------


async def test_put_then_get_in_the_reference_shape(api: Api) -> None:
    await api.register_agent()
    body = {
        "tenantId": str(kit.TENANT),
        "allowedEventTypes": ["order.shipped", "order.*", "order.shipped", "inventory.*"],
        "allowedEntityTypes": ["order", "inventory", "order"],
        "requireBaseVersion": False,
        "maxPayloadBytes": 4096,
        "enabled": True,
        # Sent back from a read: ignored, as the reference ignores unknown members.
        "agentId": str(uuid.uuid4()),
        "createdAt": "2020-01-01T00:00:00Z",
    }
    response = await put(api, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = {
        "tenantId": str(kit.TENANT),
        "agentId": str(kit.AGENT_ID),
        "allowedEventTypes": ["inventory.*", "order.*", "order.shipped"],
        "allowedEntityTypes": ["inventory", "order"],
        "requireBaseVersion": False,
        "maxPayloadBytes": 4096,
        "enabled": True,
    }
    assert {k: answer[k] for k in expected} == expected
    assert answer["createdAt"] == answer["updatedAt"]
    assert parse_rfc3339(answer["createdAt"]).tzinfo is not None
    read = await get(api)
    assert read.status_code == 200
    assert read.json() == answer


async def test_put_defaults_are_the_reference_defaults(api: Api) -> None:
    await api.register_agent()
    response = await put(api, {"tenantId": str(kit.TENANT)})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (
        answer["allowedEventTypes"],
        answer["allowedEntityTypes"],
        answer["requireBaseVersion"],
        answer["maxPayloadBytes"],
        answer["enabled"],
    ) == ([], [], True, None, True)


async def test_get_without_a_policy_is_404(api: Api) -> None:
    await api.register_agent()
    response = await get(api)
    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "error": "Agent policy not found",
        "code": "AGENT_POLICY_NOT_FOUND",
    }


async def test_a_put_is_audited_with_the_stored_policy(api: Api) -> None:
    await api.register_agent()
    response = await put(api, STRICT, path=POLICY)
    assert response.status_code == 200, response.text
    entries = await policy_audits(api)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.tenant_id, entry.resource_type, entry.resource_id, entry.actor_type) == (
        kit.TENANT,
        "agent_policy",
        str(kit.AGENT_ID),
        "bootstrap",
    )
    assert entry.details == {
        "enabled": True,
        "allowedEventTypes": ["order.*"],
        "allowedEntityTypes": ["order"],
        "requireBaseVersion": True,
        "maxPayloadBytes": 200,
    }


async def test_a_tenant_admin_may_set_its_own_tenants_policy(api: Api) -> None:
    await api.register_agent()
    admin = await api.key(kit.TENANT, admin=True, write=True)
    assert (await put(api, STRICT, key=admin)).status_code == 200
    assert (await get(api, key=admin)).status_code == 200


async def test_a_store_scoped_admin_may_read_but_not_set_a_policy(api: Api) -> None:
    await api.register_agent()
    assert (await put(api, STRICT)).status_code == 200
    scoped = await api.key(kit.TENANT, admin=True, write=True, store_ids=(kit.STORE_ID,))
    assert (await get(api, key=scoped)).status_code == 200
    before = await state(api)
    response = await put(api, {**STRICT, "enabled": False}, key=scoped)
    assert response.status_code == 403
    assert response.json()["code"] == "TENANT_WIDE_REQUIRED"
    assert await state(api) == before


# --- enforcement at ingest --------------------------------------------------------------------


async def test_each_denial_is_a_rejection_and_the_rest_of_the_batch_is_sequenced(
    api: Api,
) -> None:
    await api.register_agent()
    assert (await put(api, STRICT)).status_code == 200
    ok_first = kit.event(1, event_type="order.created")
    wrong_type = kit.event(2, event_type="user.created")
    wrong_entity = kit.event(3, event_type="order.created", entity_type="user")
    no_base = kit.event(4, event_type="order.updated")
    too_big = kit.event(5, event_type="order.created", payload={"blob": "x" * 300})
    ok_last = kit.event(6, event_type="order.created")
    batch = [ok_first, wrong_type, wrong_entity, no_base, too_big, ok_last]
    response = await api.ingest(batch)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["eventsAccepted"], answer["eventsRejected"]) == (2, 4)
    # The refused events consumed no sequence number.
    assert (answer["sequenceStart"], answer["sequenceEnd"], answer["headSequence"]) == (1, 2, 2)
    assert [r["eventId"] for r in answer["receipts"]] == [
        str(ok_first.event_id),
        str(ok_last.event_id),
    ]
    assert answer["rejections"] == [
        {
            "event_id": str(wrong_type.event_id),
            "reason": POLICY_DENIED,
            "message": "event type is not allowed for this agent: user.created",
        },
        {
            "event_id": str(wrong_entity.event_id),
            "reason": POLICY_DENIED,
            "message": "entity type is not allowed for this agent: user",
        },
        {
            "event_id": str(no_base.event_id),
            "reason": POLICY_DENIED,
            "message": "base_version is required when modifying an existing entity",
        },
        {
            "event_id": str(too_big.event_id),
            "reason": POLICY_DENIED,
            "message": "payload exceeds this agent's 200 byte policy limit",
        },
    ]
    stored = await api.store.read_range(kit.STREAM, 1, 10)
    assert [e.envelope.event_id for e in stored] == [ok_first.event_id, ok_last.event_id]


async def test_a_refused_event_sent_again_after_the_policy_allows_it_is_sequenced(
    api: Api,
) -> None:
    await api.register_agent()
    assert (await put(api, STRICT)).status_code == 200
    blocked = kit.event(1, event_type="user.created", entity_type="user")
    first = (await api.ingest([blocked])).json()
    assert (first["eventsAccepted"], first["rejections"][0]["reason"]) == (0, POLICY_DENIED)
    assert await api.store.head(kit.STREAM) == 0
    assert (await put(api, {**STRICT, "enabled": False})).status_code == 200
    second = (await api.ingest([blocked])).json()
    assert (second["eventsAccepted"], second["sequenceStart"]) == (1, 1)


async def test_a_policy_does_not_refuse_the_replay_of_an_event_stored_before_it(
    api: Api,
) -> None:
    await api.register_agent()
    earlier = kit.event(1, event_type="user.created", entity_type="user")
    assert (await api.ingest([earlier])).json()["eventsAccepted"] == 1
    assert (await put(api, STRICT)).status_code == 200
    replay = (await api.ingest([earlier])).json()
    assert (replay["eventsAccepted"], replay["eventsRejected"]) == (0, 0)
    assert replay["receipts"][0]["sequenceNumber"] == 1


async def test_another_agent_and_another_tenant_are_not_restricted(api: Api) -> None:
    await api.register_agent()
    other_agent = uuid.UUID("33333333-3333-3333-3333-333333333333")
    await api.register_agent(agent_id=other_agent)
    assert (await put(api, {**STRICT, "allowedEventTypes": []})).status_code == 200
    # The policied agent can write nothing at all (an empty list matches nothing) ...
    refused = (await api.ingest([kit.event(1)])).json()
    assert refused["eventsAccepted"] == 0
    # ... while another agent of the same tenant is free.
    free = (await api.ingest([kit.event(2, agent_id=other_agent)], agent_id=other_agent)).json()
    assert free["eventsAccepted"] == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_change_takes_effect_on_the_next_ingest_despite_a_long_ttl(
    make_api: MakeApi, backend: str
) -> None:
    api = await make_api(backend, CACHE_AGENT_KEY_TTL_SECS=HOUR)
    await api.register_agent()
    # No policy yet, and that absence is cached for an hour by this ingest.
    assert (await api.ingest([kit.event(1, event_type="user.created")])).json()[
        "eventsAccepted"
    ] == 1
    assert (await put(api, STRICT)).status_code == 200
    refused = (await api.ingest([kit.event(2, event_type="user.created")])).json()
    assert refused["eventsAccepted"] == 0
    assert (await put(api, {**STRICT, "allowedEventTypes": ["*"]})).status_code == 200
    allowed = (await api.ingest([kit.event(3, event_type="user.created")])).json()
    assert allowed["eventsAccepted"] == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_policy_written_by_another_writer_arrives_through_the_change_feed(
    make_api: MakeApi, backend: str
) -> None:
    """The store's change feed, not the route, drops the cached policy: the change is
    written through the store directly, as another node or the CLI would."""
    api = await make_api(backend, CACHE_AGENT_KEY_TTL_SECS=HOUR)
    await api.register_agent()
    assert (await api.ingest([kit.event(1, event_type="user.created")])).json()[
        "eventsAccepted"
    ] == 1
    change = Change(ChangeKind.POLICY, tenant_id=kit.TENANT, agent_id=kit.AGENT_ID)
    invalidation = api.services.invalidation
    assert invalidation is not None
    await api.store.put_policy(
        AgentPolicy(kit.TENANT, kit.AGENT_ID, ("order.*",), ("order",)),
        audit=AuditEntry(action=ACTION, actor="test", actor_type="system"),
    )
    await until(lambda: invalidation.received[change] >= 1, "the policy change is heard")
    refused = (await api.ingest([kit.event(2, event_type="user.created")])).json()
    assert refused["rejections"][0]["reason"] == POLICY_DENIED


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Two services on one PostgreSQL database, every cache TTL an hour."""
    async with AsyncExitStack() as stack:

        async def make() -> tuple[Api, Api]:
            url = await stack.enter_async_context(pg.scratch_database("seqpolicy"))
            ttls = {"CACHE_AGENT_KEY_TTL_SECS": HOUR, "API_KEY_CACHE_TTL_SECS": HOUR}
            a = await stack.enter_async_context(open_api(settings_for(url, tmp_path / "a", **ttls)))
            b = await stack.enter_async_context(open_api(settings_for(url, tmp_path / "b", **ttls)))
            return a, b

        yield make


async def test_a_policy_set_on_one_node_is_enforced_by_the_other(
    nodes: Callable[..., Any],
) -> None:
    a, b = await nodes()
    await a.register_agent()
    assert (await b.ingest([kit.event(1, event_type="user.created")])).json()["eventsAccepted"] == 1
    assert (await put(a, STRICT)).status_code == 200
    change = Change(ChangeKind.POLICY, tenant_id=kit.TENANT, agent_id=kit.AGENT_ID)
    invalidation = b.services.invalidation
    assert invalidation is not None
    await until(lambda: invalidation.received[change] >= 1, "B hears the policy")
    refused = (await b.ingest([kit.event(2, event_type="user.created")])).json()
    assert refused["rejections"][0]["reason"] == POLICY_DENIED


# --- bad input ------------------------------------------------------------------------------


RULE_FAULTS: list[tuple[dict[str, Any], int, str, str]] = [
    (
        {"allowedEventTypes": ["*.created"]},
        400,
        "POLICY_INVALID_RULE",
        "invalid allowedEventTypes rule: *.created",
    ),
    (
        {"allowedEventTypes": ["order.**"]},
        400,
        "POLICY_INVALID_RULE",
        "invalid allowedEventTypes rule: order.**",
    ),
    (
        {"allowedEventTypes": ["a*b*"]},
        400,
        "POLICY_INVALID_RULE",
        "invalid allowedEventTypes rule: a*b*",
    ),
    ({"allowedEventTypes": [""]}, 400, "POLICY_INVALID_RULE", "invalid allowedEventTypes rule: "),
    (
        {"allowedEntityTypes": ["ord*er"]},
        400,
        "POLICY_INVALID_RULE",
        "invalid allowedEntityTypes rule: ord*er",
    ),
    (
        {"allowedEventTypes": ["e" * 257]},
        400,
        "POLICY_INVALID_RULE",
        "invalid allowedEventTypes rule: " + "e" * 257,
    ),
    (
        {"allowedEntityTypes": ["n" * 129]},
        400,
        "POLICY_INVALID_RULE",
        "invalid allowedEntityTypes rule: " + "n" * 129,
    ),
    (
        {"allowedEventTypes": ["bad\u0000rule"]},
        400,
        "POLICY_INVALID_RULE",
        "invalid allowedEventTypes rule: bad\ufffdrule",
    ),
    (
        {"allowedEventTypes": [f"type.{i}" for i in range(129)]},
        400,
        "POLICY_TOO_MANY_RULES",
        "allowedEventTypes may contain at most 128 rules",
    ),
    (
        {"allowedEntityTypes": ["order"] * 129},
        400,
        "POLICY_TOO_MANY_RULES",
        "allowedEntityTypes may contain at most 128 rules",
    ),
    (
        {"maxPayloadBytes": 0},
        400,
        "POLICY_INVALID_MAX_PAYLOAD_BYTES",
        "maxPayloadBytes must be between 1 and 10485760",
    ),
    (
        {"maxPayloadBytes": 10 * 1024 * 1024 + 1},
        400,
        "POLICY_INVALID_MAX_PAYLOAD_BYTES",
        "maxPayloadBytes must be between 1 and 10485760",
    ),
    (
        {"maxPayloadBytes": -1},
        400,
        "POLICY_INVALID_MAX_PAYLOAD_BYTES",
        "maxPayloadBytes must be between 1 and 10485760",
    ),
    (
        {"maxPayloadBytes": 2**70},
        400,
        "POLICY_INVALID_MAX_PAYLOAD_BYTES",
        "maxPayloadBytes must be between 1 and 10485760",
    ),
]


@pytest.mark.parametrize(
    ("change", "status", "code", "message"),
    RULE_FAULTS,
    ids=[f"{next(iter(c))}-{i}" for i, (c, *_rest) in enumerate(RULE_FAULTS)],
)
async def test_a_bad_rule_is_refused_with_the_reference_message(
    api: Api, change: dict[str, Any], status: int, code: str, message: str
) -> None:
    await api.register_agent()
    assert (await put(api, STRICT)).status_code == 200
    before = await state(api)
    response = await put(api, {**STRICT, **change})
    assert response.status_code == status, response.text
    assert response.json() == {"success": False, "error": message, "code": code}
    assert await state(api) == before


WRONG_TYPES: list[Any] = [
    {**STRICT, "allowedEventTypes": "order.*"},
    {**STRICT, "allowedEventTypes": [1]},
    {**STRICT, "allowedEntityTypes": [None]},
    {**STRICT, "allowedEntityTypes": {"order": True}},
    {**STRICT, "requireBaseVersion": "yes"},
    {**STRICT, "requireBaseVersion": 1},
    {**STRICT, "enabled": 0},
    {**STRICT, "maxPayloadBytes": "100"},
    {**STRICT, "maxPayloadBytes": 1.5},
    {**STRICT, "maxPayloadBytes": True},
    {**STRICT, "tenantId": "not-a-uuid"},
    {key: value for key, value in STRICT.items() if key != "tenantId"},
    ["order.*"],
    "policy",
    None,
]


@pytest.mark.parametrize("body", WRONG_TYPES, ids=[str(i) for i in range(len(WRONG_TYPES))])
async def test_a_wrongly_typed_body_is_422(api: Api, body: Any) -> None:
    await api.register_agent()
    assert (await put(api, STRICT)).status_code == 200
    before = await state(api)
    response = await put(api, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in {
        "INVALID_FIELD_VALUE",
        "MISSING_REQUIRED_FIELD",
        "INVALID_REQUEST_BODY",  # no body at all
    }
    assert await state(api) == before


async def test_malformed_json_and_bad_parameters_are_400(api: Api) -> None:
    await api.register_agent()
    before = await state(api)
    response = await api.client.put(
        POLICY,
        content=b'{"tenantId": ',
        headers={**api.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST_BODY"
    bad_agent = await put(api, STRICT, path="/api/v1/agents/not-a-uuid/policy")
    assert bad_agent.status_code == 400
    no_tenant = await api.client.get(POLICY, headers=api.headers())
    assert no_tenant.status_code == 400
    bad_tenant = await api.client.get(POLICY, params={"tenant_id": "x"}, headers=api.headers())
    assert bad_tenant.status_code == 400
    assert await state(api) == before


async def test_a_body_over_the_routes_limit_is_413_and_the_largest_policy_fits(api: Api) -> None:
    await api.register_agent()
    before = await state(api)
    huge = {**STRICT, "allowedEventTypes": ["x" * 1000] * 1000}
    response = await put(api, huge)
    assert response.status_code == 413
    assert await state(api) == before
    largest = {
        **STRICT,
        "allowedEventTypes": [f"{i:03d}" + "e" * 252 + "*" for i in range(128)],
        "allowedEntityTypes": [f"{i:03d}" + "n" * 125 for i in range(128)],
    }
    response = await put(api, largest)
    assert response.status_code == 200, response.text
    assert len(response.json()["allowedEventTypes"]) == 128


async def test_an_unknown_agent_is_404(api: Api) -> None:
    await api.register_agent()
    before = await state(api)
    stranger = uuid.uuid4()
    response = await put(api, STRICT, path=f"/api/v1/agents/{stranger}/policy")
    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "error": "Agent not found",
        "code": "AGENT_NOT_FOUND",
    }
    # An agent registered in another tenant is unknown in this one.
    other = await put(api, {**STRICT, "tenantId": str(OTHER_TENANT)})
    assert other.status_code == 404
    assert await state(api) == before
    assert await api.store.get_policy(kit.TENANT, stranger) is None


async def test_an_agent_whose_keys_are_all_revoked_is_still_known(api: Api) -> None:
    await api.register_agent()
    revoked = await api.client.delete(
        f"/api/v1/agents/keys/{kit.TENANT}/{kit.AGENT_ID}/1", headers=api.headers()
    )
    assert revoked.status_code == 200, revoked.text
    assert (await put(api, STRICT)).status_code == 200


@pytest.mark.parametrize("write", [False, True])
async def test_a_non_admin_caller_is_403(api: Api, write: bool) -> None:
    await api.register_agent()
    assert (await put(api, STRICT)).status_code == 200
    key = await api.key(kit.TENANT, write=write)
    agent_key = await api.key(kit.TENANT, write=True, agent_id=kit.AGENT_ID)
    before = await state(api)
    for caller in (key, agent_key):
        refused_put = await put(api, {**STRICT, "enabled": False}, key=caller)
        assert refused_put.status_code == 403
        assert refused_put.json()["code"] == "FORBIDDEN"
        refused_get = await get(api, key=caller)
        assert refused_get.status_code == 403
    assert await state(api) == before


async def test_another_tenants_admin_is_403(api: Api) -> None:
    await api.register_agent()
    assert (await put(api, STRICT)).status_code == 200
    foreign = await api.key(OTHER_TENANT, admin=True, write=True)
    before = await state(api)
    response = await put(api, {**STRICT, "enabled": False}, key=foreign)
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"
    assert (await get(api, key=foreign)).status_code == 403
    # Naming its own tenant in the query does not reach the other tenant's policy.
    own = await get(api, key=foreign, tenant=OTHER_TENANT)
    assert own.status_code == 404
    assert await state(api) == before


async def test_no_credential_is_401(api: Api) -> None:
    before = await state(api)
    assert (await api.client.put(POLICY, json=STRICT)).status_code == 401
    assert (await api.client.get(POLICY, params={"tenant_id": str(kit.TENANT)})).status_code == 401
    assert await state(api) == before

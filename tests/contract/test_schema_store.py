"""The schema-registry part of the storage contract (``event_schemas``), on every backend."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from stateset_sequencer.store.base import IntegrityError, SchemaRecord, Store

TENANT_A = uuid.UUID("00000000-0000-0000-0000-00000000aaaa")
TENANT_B = uuid.UUID("00000000-0000-0000-0000-00000000bbbb")
ORDER_SCHEMA = '{"type":"object","required":["total"],"properties":{"total":{"type":"number"}}}'


async def put(
    store: Store,
    event_type: str = "order.created",
    tenant_id: uuid.UUID = TENANT_A,
    schema_json: str = ORDER_SCHEMA,
) -> SchemaRecord:
    return await store.put_schema(tenant_id, event_type, schema_json)


def recent(moment: datetime) -> bool:
    return abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


async def test_put_returns_the_stored_record(store: Store) -> None:
    record = await store.put_schema(
        TENANT_A,
        "order.created",
        ORDER_SCHEMA,
        compatibility="full",
        description="orders",
        created_by="admin-key",
    )
    assert record.tenant_id == TENANT_A and record.event_type == "order.created"
    assert record.version == 1
    assert record.status == "active"
    assert record.compatibility == "full"
    assert record.description == "orders"
    assert record.created_by == "admin-key"
    assert record.created_at == record.updated_at and recent(record.created_at)
    assert record.created_at.tzinfo is not None
    assert await store.get_schema(record.id) == record


async def test_defaults(store: Store) -> None:
    record = await put(store)
    assert (record.compatibility, record.description, record.created_by) == (
        "backward",
        None,
        None,
    )


async def test_schema_text_is_kept_exactly(store: Store) -> None:
    # Key order, spacing, a big integer and an escaped NUL all survive the round trip.
    text = '{"z": 1, "a": {"maximum": 123456789012345678901234567890}, "title": "\\u0000"}'
    record = await put(store, schema_json=text)
    assert record.schema_json == text
    fetched = await store.get_schema(record.id)
    assert fetched is not None and fetched.schema_json == text


async def test_versions_count_up_per_tenant_and_event_type(store: Store) -> None:
    assert [(await put(store)).version for _ in range(3)] == [1, 2, 3]
    assert (await put(store, "order.shipped")).version == 1
    assert (await put(store, tenant_id=TENANT_B)).version == 1
    assert (await put(store)).version == 4


async def test_concurrent_registrations_get_distinct_versions(store: Store) -> None:
    records = await asyncio.gather(*(put(store) for _ in range(12)))
    assert sorted(r.version for r in records) == list(range(1, 13))
    assert len({r.id for r in records}) == 12
    others = await asyncio.gather(*(put(store, "other") for _ in range(4)))
    assert sorted(r.version for r in others) == [1, 2, 3, 4]


async def test_get_schema_version(store: Store) -> None:
    first, second = await put(store), await put(store, schema_json='{"type":"object"}')
    assert await store.get_schema_version(TENANT_A, "order.created", 1) == first
    assert await store.get_schema_version(TENANT_A, "order.created", 2) == second
    assert await store.get_schema_version(TENANT_A, "order.created", 3) is None
    assert await store.get_schema_version(TENANT_A, "order.other", 1) is None


async def test_latest_active_skips_deprecated_and_archived(store: Store) -> None:
    assert await store.latest_active_schema(TENANT_A, "order.created") is None
    v1, v2, v3 = [await put(store) for _ in range(3)]
    latest = await store.latest_active_schema(TENANT_A, "order.created")
    assert latest is not None and latest.id == v3.id

    await store.set_schema_status(v3.id, "deprecated")
    latest = await store.latest_active_schema(TENANT_A, "order.created")
    assert latest is not None and latest.id == v2.id

    await store.set_schema_status(v2.id, "archived")
    latest = await store.latest_active_schema(TENANT_A, "order.created")
    assert latest is not None and latest.id == v1.id

    await store.set_schema_status(v1.id, "deprecated")
    assert await store.latest_active_schema(TENANT_A, "order.created") is None

    await store.set_schema_status(v3.id, "active")
    latest = await store.latest_active_schema(TENANT_A, "order.created")
    assert latest is not None and latest.id == v3.id


async def test_set_status_updates_the_record(store: Store) -> None:
    record = await put(store)
    await asyncio.sleep(0.002)
    changed = await store.set_schema_status(record.id, "deprecated")
    assert changed is not None
    assert changed.status == "deprecated"
    assert changed.updated_at > record.updated_at
    assert changed.created_at == record.created_at
    assert (changed.id, changed.version, changed.schema_json) == (
        record.id,
        record.version,
        record.schema_json,
    )
    assert await store.get_schema(record.id) == changed


async def test_set_status_of_an_unknown_schema_is_none(store: Store) -> None:
    assert await store.set_schema_status(uuid.uuid4(), "archived") is None


@pytest.mark.parametrize("status", ["retired", "", "Active"])
async def test_set_status_refuses_unknown_statuses(store: Store, status: str) -> None:
    record = await put(store)
    with pytest.raises(IntegrityError):
        await store.set_schema_status(record.id, status)
    with pytest.raises(IntegrityError):
        await store.set_schema_status(uuid.uuid4(), status)
    assert await store.get_schema(record.id) == record


async def test_delete(store: Store) -> None:
    first, second = await put(store), await put(store)
    assert await store.delete_schema(first.id) is True
    assert await store.delete_schema(first.id) is False
    assert await store.get_schema(first.id) is None
    assert await store.list_schemas(TENANT_A) == [second]
    assert await store.delete_schema(uuid.uuid4()) is False


async def test_list_orders_by_event_type_then_version(store: Store) -> None:
    # Registered out of order; "Z" < "a" < "é" in UTF-8 byte order on both backends.
    for event_type in ["b.two", "a.one", "b.two", "é.accent", "Z.upper", "a.one", "b.two"]:
        await put(store, event_type)
    listed = await store.list_schemas(TENANT_A)
    assert [(r.event_type, r.version) for r in listed] == [
        ("Z.upper", 1),
        ("a.one", 1),
        ("a.one", 2),
        ("b.two", 1),
        ("b.two", 2),
        ("b.two", 3),
        ("é.accent", 1),
    ]
    only = await store.list_schemas(TENANT_A, "b.two")
    assert [(r.event_type, r.version) for r in only] == [("b.two", 1), ("b.two", 2), ("b.two", 3)]
    assert await store.list_schemas(TENANT_A, "missing") == []


async def test_list_includes_every_status(store: Store) -> None:
    records = [await put(store) for _ in range(3)]
    await store.set_schema_status(records[0].id, "archived")
    await store.set_schema_status(records[1].id, "deprecated")
    statuses = [r.status for r in await store.list_schemas(TENANT_A)]
    assert statuses == ["archived", "deprecated", "active"]


async def test_tenants_are_isolated(store: Store) -> None:
    a1 = await put(store, tenant_id=TENANT_A)
    a2 = await put(store, "order.shipped", tenant_id=TENANT_A)
    assert await store.list_schemas(TENANT_B) == []
    assert await store.list_schemas(TENANT_B, "order.created") == []
    assert await store.latest_active_schema(TENANT_B, "order.created") is None
    assert await store.get_schema_version(TENANT_B, "order.created", 1) is None

    b1 = await put(store, tenant_id=TENANT_B, schema_json='{"type":"string"}')
    assert b1.version == 1
    assert await store.list_schemas(TENANT_B) == [b1]
    assert await store.list_schemas(TENANT_A) == [a1, a2]
    latest_b = await store.latest_active_schema(TENANT_B, "order.created")
    assert latest_b is not None and latest_b.id == b1.id
    latest_a = await store.latest_active_schema(TENANT_A, "order.created")
    assert latest_a is not None and latest_a.id == a1.id

    # Deprecating B's schema leaves A's latest alone, and the reverse.
    await store.set_schema_status(b1.id, "deprecated")
    assert await store.latest_active_schema(TENANT_B, "order.created") is None
    assert await store.latest_active_schema(TENANT_A, "order.created") == a1


async def test_event_type_byte_limits(store: Store) -> None:
    longest = "é" * 128  # 256 UTF-8 bytes, 128 characters
    assert (await put(store, longest)).event_type == longest
    for bad in ["", "é" * 128 + "x", "x" * 257]:
        with pytest.raises(IntegrityError):
            await put(store, bad)
    assert [r.event_type for r in await store.list_schemas(TENANT_A)] == [longest]


@pytest.mark.parametrize("compatibility", ["forward", "backward", "full", "none"])
async def test_every_compatibility_is_accepted(store: Store, compatibility: str) -> None:
    record = await store.put_schema(
        TENANT_A, "order.created", ORDER_SCHEMA, compatibility=compatibility
    )
    assert record.compatibility == compatibility


@pytest.mark.parametrize("compatibility", ["transitive", "", "FULL"])
async def test_unknown_compatibility_is_refused(store: Store, compatibility: str) -> None:
    with pytest.raises(IntegrityError):
        await store.put_schema(TENANT_A, "order.created", ORDER_SCHEMA, compatibility=compatibility)
    assert await store.list_schemas(TENANT_A) == []


@pytest.mark.parametrize("text", ["", "{", "{'a': 1}", "not json"])
async def test_schema_text_must_be_json(store: Store, text: str) -> None:
    with pytest.raises(IntegrityError):
        await put(store, schema_json=text)
    # A refused registration consumes no version.
    assert (await put(store)).version == 1


async def test_version_after_deleting_the_newest(store: Store) -> None:
    await put(store)
    newest = await put(store)
    await store.delete_schema(newest.id)
    # Versions come from the highest one stored, as in the reference.
    assert (await put(store)).version == 2


async def test_schema_json_round_trips_as_json(store: Store) -> None:
    document = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}
    record = await put(store, schema_json=json.dumps(document))
    assert json.loads(record.schema_json) == document

"""The :class:`SchemaStore` contract (the schema registry, ``event_schemas``), once,
against every backend."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from stateset_sequencer.store.errors import IntegrityError
from stateset_sequencer.store.ports import SchemaStore
from stateset_sequencer.store.records import SchemaRecord

TENANT_A = uuid.UUID("00000000-0000-0000-0000-00000000aaaa")
TENANT_B = uuid.UUID("00000000-0000-0000-0000-00000000bbbb")
ORDER_SCHEMA = '{"type":"object","required":["total"],"properties":{"total":{"type":"number"}}}'


async def put(
    schemas: SchemaStore,
    event_type: str = "order.created",
    tenant_id: uuid.UUID = TENANT_A,
    schema_json: str = ORDER_SCHEMA,
) -> SchemaRecord:
    return await schemas.put_schema(tenant_id, event_type, schema_json)


def recent(moment: datetime) -> bool:
    return abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


async def test_put_returns_the_stored_record(schemas: SchemaStore) -> None:
    record = await schemas.put_schema(
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
    assert await schemas.get_schema(record.id) == record


async def test_defaults(schemas: SchemaStore) -> None:
    record = await put(schemas)
    assert (record.compatibility, record.description, record.created_by) == (
        "backward",
        None,
        None,
    )


async def test_schema_text_is_kept_exactly(schemas: SchemaStore) -> None:
    # Key order, spacing, a big integer and an escaped NUL all survive the round trip.
    text = '{"z": 1, "a": {"maximum": 123456789012345678901234567890}, "title": "\\u0000"}'
    record = await put(schemas, schema_json=text)
    assert record.schema_json == text
    fetched = await schemas.get_schema(record.id)
    assert fetched is not None and fetched.schema_json == text


async def test_versions_count_up_per_tenant_and_event_type(schemas: SchemaStore) -> None:
    assert [(await put(schemas)).version for _ in range(3)] == [1, 2, 3]
    assert (await put(schemas, "order.shipped")).version == 1
    assert (await put(schemas, tenant_id=TENANT_B)).version == 1
    assert (await put(schemas)).version == 4


async def test_concurrent_registrations_get_distinct_versions(schemas: SchemaStore) -> None:
    records = await asyncio.gather(*(put(schemas) for _ in range(12)))
    assert sorted(r.version for r in records) == list(range(1, 13))
    assert len({r.id for r in records}) == 12
    others = await asyncio.gather(*(put(schemas, "other") for _ in range(4)))
    assert sorted(r.version for r in others) == [1, 2, 3, 4]


async def test_get_schema_version(schemas: SchemaStore) -> None:
    first, second = await put(schemas), await put(schemas, schema_json='{"type":"object"}')
    assert await schemas.get_schema_version(TENANT_A, "order.created", 1) == first
    assert await schemas.get_schema_version(TENANT_A, "order.created", 2) == second
    assert await schemas.get_schema_version(TENANT_A, "order.created", 3) is None
    assert await schemas.get_schema_version(TENANT_A, "order.other", 1) is None


async def test_latest_active_skips_deprecated_and_archived(schemas: SchemaStore) -> None:
    assert await schemas.latest_active_schema(TENANT_A, "order.created") is None
    v1, v2, v3 = [await put(schemas) for _ in range(3)]
    latest = await schemas.latest_active_schema(TENANT_A, "order.created")
    assert latest is not None and latest.id == v3.id

    await schemas.set_schema_status(v3.id, "deprecated")
    latest = await schemas.latest_active_schema(TENANT_A, "order.created")
    assert latest is not None and latest.id == v2.id

    await schemas.set_schema_status(v2.id, "archived")
    latest = await schemas.latest_active_schema(TENANT_A, "order.created")
    assert latest is not None and latest.id == v1.id

    await schemas.set_schema_status(v1.id, "deprecated")
    assert await schemas.latest_active_schema(TENANT_A, "order.created") is None

    await schemas.set_schema_status(v3.id, "active")
    latest = await schemas.latest_active_schema(TENANT_A, "order.created")
    assert latest is not None and latest.id == v3.id


async def test_set_status_updates_the_record(schemas: SchemaStore) -> None:
    record = await put(schemas)
    await asyncio.sleep(0.002)
    changed = await schemas.set_schema_status(record.id, "deprecated")
    assert changed is not None
    assert changed.status == "deprecated"
    assert changed.updated_at > record.updated_at
    assert changed.created_at == record.created_at
    assert (changed.id, changed.version, changed.schema_json) == (
        record.id,
        record.version,
        record.schema_json,
    )
    assert await schemas.get_schema(record.id) == changed


async def test_set_status_of_an_unknown_schema_is_none(schemas: SchemaStore) -> None:
    assert await schemas.set_schema_status(uuid.uuid4(), "archived") is None


@pytest.mark.parametrize("status", ["retired", "", "Active"])
async def test_set_status_refuses_unknown_statuses(schemas: SchemaStore, status: str) -> None:
    record = await put(schemas)
    with pytest.raises(IntegrityError):
        await schemas.set_schema_status(record.id, status)
    with pytest.raises(IntegrityError):
        await schemas.set_schema_status(uuid.uuid4(), status)
    assert await schemas.get_schema(record.id) == record


async def test_delete(schemas: SchemaStore) -> None:
    first, second = await put(schemas), await put(schemas)
    assert await schemas.delete_schema(first.id) is True
    assert await schemas.delete_schema(first.id) is False
    assert await schemas.get_schema(first.id) is None
    assert await schemas.list_schemas(TENANT_A) == [second]
    assert await schemas.delete_schema(uuid.uuid4()) is False


async def test_list_orders_by_event_type_then_version(schemas: SchemaStore) -> None:
    # Registered out of order; "Z" < "a" < "é" in UTF-8 byte order on both backends.
    for event_type in ["b.two", "a.one", "b.two", "é.accent", "Z.upper", "a.one", "b.two"]:
        await put(schemas, event_type)
    listed = await schemas.list_schemas(TENANT_A)
    assert [(r.event_type, r.version) for r in listed] == [
        ("Z.upper", 1),
        ("a.one", 1),
        ("a.one", 2),
        ("b.two", 1),
        ("b.two", 2),
        ("b.two", 3),
        ("é.accent", 1),
    ]
    only = await schemas.list_schemas(TENANT_A, "b.two")
    assert [(r.event_type, r.version) for r in only] == [("b.two", 1), ("b.two", 2), ("b.two", 3)]
    assert await schemas.list_schemas(TENANT_A, "missing") == []


async def test_list_includes_every_status(schemas: SchemaStore) -> None:
    records = [await put(schemas) for _ in range(3)]
    await schemas.set_schema_status(records[0].id, "archived")
    await schemas.set_schema_status(records[1].id, "deprecated")
    statuses = [r.status for r in await schemas.list_schemas(TENANT_A)]
    assert statuses == ["archived", "deprecated", "active"]


async def test_tenants_are_isolated(schemas: SchemaStore) -> None:
    a1 = await put(schemas, tenant_id=TENANT_A)
    a2 = await put(schemas, "order.shipped", tenant_id=TENANT_A)
    assert await schemas.list_schemas(TENANT_B) == []
    assert await schemas.list_schemas(TENANT_B, "order.created") == []
    assert await schemas.latest_active_schema(TENANT_B, "order.created") is None
    assert await schemas.get_schema_version(TENANT_B, "order.created", 1) is None

    b1 = await put(schemas, tenant_id=TENANT_B, schema_json='{"type":"string"}')
    assert b1.version == 1
    assert await schemas.list_schemas(TENANT_B) == [b1]
    assert await schemas.list_schemas(TENANT_A) == [a1, a2]
    latest_b = await schemas.latest_active_schema(TENANT_B, "order.created")
    assert latest_b is not None and latest_b.id == b1.id
    latest_a = await schemas.latest_active_schema(TENANT_A, "order.created")
    assert latest_a is not None and latest_a.id == a1.id

    # Deprecating B's schema leaves A's latest alone, and the reverse.
    await schemas.set_schema_status(b1.id, "deprecated")
    assert await schemas.latest_active_schema(TENANT_B, "order.created") is None
    assert await schemas.latest_active_schema(TENANT_A, "order.created") == a1


async def test_event_type_byte_limits(schemas: SchemaStore) -> None:
    longest = "é" * 128  # 256 UTF-8 bytes, 128 characters
    assert (await put(schemas, longest)).event_type == longest
    for bad in ["", "é" * 128 + "x", "x" * 257]:
        with pytest.raises(IntegrityError):
            await put(schemas, bad)
    assert [r.event_type for r in await schemas.list_schemas(TENANT_A)] == [longest]


@pytest.mark.parametrize("compatibility", ["forward", "backward", "full", "none"])
async def test_every_compatibility_is_accepted(schemas: SchemaStore, compatibility: str) -> None:
    record = await schemas.put_schema(
        TENANT_A, "order.created", ORDER_SCHEMA, compatibility=compatibility
    )
    assert record.compatibility == compatibility


@pytest.mark.parametrize("compatibility", ["transitive", "", "FULL"])
async def test_unknown_compatibility_is_refused(schemas: SchemaStore, compatibility: str) -> None:
    with pytest.raises(IntegrityError):
        await schemas.put_schema(
            TENANT_A, "order.created", ORDER_SCHEMA, compatibility=compatibility
        )
    assert await schemas.list_schemas(TENANT_A) == []


@pytest.mark.parametrize("text", ["", "{", "{'a': 1}", "not json"])
async def test_schema_text_must_be_json(schemas: SchemaStore, text: str) -> None:
    with pytest.raises(IntegrityError):
        await put(schemas, schema_json=text)
    # A refused registration consumes no version.
    assert (await put(schemas)).version == 1


async def test_version_after_deleting_the_newest(schemas: SchemaStore) -> None:
    await put(schemas)
    newest = await put(schemas)
    await schemas.delete_schema(newest.id)
    # Versions come from the highest one stored, as in the reference.
    assert (await put(schemas)).version == 2


async def test_schema_json_round_trips_as_json(schemas: SchemaStore) -> None:
    document = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}
    record = await put(schemas, schema_json=json.dumps(document))
    assert json.loads(record.schema_json) == document

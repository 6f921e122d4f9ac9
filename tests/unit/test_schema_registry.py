"""The schema registry service and the per-event schema stage (REFERENCE_MAP §1.7, §4.3),
over a real SQLite store (the storage side is covered on both backends by
``tests/contract/test_schema_store.py``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.api.http.ingest import rejection_body
from stateset_sequencer.sequencer import schemas
from stateset_sequencer.sequencer.schemas import (
    MAX_REPORTED_ERRORS,
    MAX_SCHEMA_BYTES,
    SchemaInputError,
    SchemaRegistry,
    SchemaStageResult,
    SchemaUnusable,
    ValidationMode,
    check_events,
    make_stage,
    parse_mode,
)
from stateset_sequencer.store.errors import OperationalError
from stateset_sequencer.store.factory import open_store, parse_database_url
from stateset_sequencer.store.ports import Store
from stateset_sequencer.store.records import SchemaRecord
from stateset_sequencer.testing.kit import TENANT, X25519_PUBLIC, event
from stateset_sequencer.ves.envelope import VesEventEnvelope

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["total"],
    "properties": {"total": {"type": "number", "minimum": 0}, "n": {"type": "integer"}},
}
OTHER_TENANT = uuid.UUID("00000000-0000-0000-0000-0000000000a2")

# --- parse_mode ---------------------------------------------------------------------------

ALIASES = {
    ValidationMode.DISABLED: ["disabled", "off", "none", "false", "0"],
    ValidationMode.WARN: ["warn", "warnonly", "warn_only", "warning"],
    ValidationMode.ENFORCE: ["enforce", "on", "true", "1", ""],
    ValidationMode.REQUIRED: ["required", "strict", "require"],
}
ALL_ALIASES = {alias: mode for mode, aliases in ALIASES.items() for alias in aliases}


@pytest.mark.parametrize(("text", "mode"), sorted(ALL_ALIASES.items()))
def test_parse_mode_accepts_every_alias(text: str, mode: ValidationMode) -> None:
    assert parse_mode(text) is mode
    assert parse_mode(text.upper()) is mode
    assert parse_mode(f"  {text.title()}\t\n") is mode


def test_parse_mode_default_is_enforce() -> None:
    assert parse_mode(None) is ValidationMode.ENFORCE
    assert parse_mode("") is ValidationMode.ENFORCE
    assert parse_mode("   ") is ValidationMode.ENFORCE
    assert parse_mode("\u3000warn\u00a0") is ValidationMode.WARN  # Unicode white space


@pytest.mark.parametrize(
    "text",
    [
        "yes",
        "no",
        "2",
        "enforced",
        "warn-only",
        "warn only",
        "disable",
        "requires",
        "w",
        "\x1cwarn",  # not Unicode White_Space, so not trimmed (as in the reference)
        "enforce\x00",
        "strict mode",
    ],
)
def test_parse_mode_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="SCHEMA_VALIDATION_MODE") as info:
        parse_mode(text)
    assert repr(text) in str(info.value)


@given(st.text())
def test_parse_mode_returns_a_mode_or_raises_value_error(text: str) -> None:
    normalised = text.strip(schemas._WHITE_SPACE).lower()
    try:
        mode = parse_mode(text)
    except ValueError:
        assert normalised not in ALL_ALIASES
    else:
        assert ALL_ALIASES[normalised] is mode


@given(st.sampled_from(sorted(ALL_ALIASES)), st.text(alphabet=" \t\r\n\u2003", max_size=3))
def test_parse_mode_ignores_surrounding_white_space(alias: str, pad: str) -> None:
    assert parse_mode(pad + alias.upper() + pad) is ALL_ALIASES[alias]


# --- the registry -------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(parse_database_url(f"sqlite:///{tmp_path / 'schemas.db'}", tmp_path))
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def registry(store: Store) -> SchemaRegistry:
    return SchemaRegistry(store)


async def test_register_stores_compact_json_and_counts_versions(registry: SchemaRegistry) -> None:
    first = await registry.register(
        TENANT, "order.created", ORDER_SCHEMA, "orders", "full", "admin"
    )
    assert first.version == 1
    assert first.schema_json == json.dumps(ORDER_SCHEMA, separators=(",", ":"))
    assert (first.description, first.compatibility, first.created_by) == ("orders", "full", "admin")
    second = await registry.register(TENANT, "order.created", {"type": "object"})
    assert (second.version, second.compatibility, second.description) == (2, "backward", None)
    assert await registry.get(first.id) == first
    assert await registry.get_version(TENANT, "order.created", 1) == first
    assert await registry.latest(TENANT, "order.created") == second
    assert await registry.list_schemas(TENANT) == [first, second]
    assert await registry.list_schemas(TENANT, "order.created") == [first, second]
    assert await registry.list_schemas(OTHER_TENANT) == []


async def test_register_keeps_non_ascii_and_key_order(registry: SchemaRegistry) -> None:
    document = {"title": "Bestellung – größe", "type": "object", "$comment": "z before a"}
    record = await registry.register(TENANT, "order.created", document)
    assert (
        record.schema_json
        == '{"title":"Bestellung – größe","type":"object","$comment":"z before a"}'
    )


@pytest.mark.parametrize("document", [True, False, {}])
async def test_boolean_and_empty_schemas_are_valid(registry: SchemaRegistry, document: Any) -> None:
    record = await registry.register(TENANT, "order.created", document)
    assert json.loads(record.schema_json) == document


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"event_type": ""}, "INVALID_EVENT_TYPE"),
        ({"event_type": "x" * 257}, "INVALID_EVENT_TYPE"),
        ({"event_type": "é" * 128 + "x"}, "INVALID_EVENT_TYPE"),
        ({"event_type": "order\x00created"}, "INVALID_EVENT_TYPE"),
        ({"event_type": "order.\ud800"}, "INVALID_EVENT_TYPE"),
        ({"compatibility": "transitive"}, "INVALID_COMPATIBILITY"),
        ({"compatibility": "BACKWARD"}, "INVALID_COMPATIBILITY"),
        ({"compatibility": ""}, "INVALID_COMPATIBILITY"),
        ({"description": "x" * 2049}, "DESCRIPTION_TOO_LONG"),
        ({"description": "é" * 1025}, "DESCRIPTION_TOO_LONG"),
        ({"description": "a\x00b"}, "INVALID_DESCRIPTION"),
        # the size before NUL, as everywhere (ves.storable): over the limit is too long
        ({"description": "\x00" * 2049}, "DESCRIPTION_TOO_LONG"),
        ({"description": "\udfff"}, "INVALID_DESCRIPTION"),
        ({"schema_json": {"type": 5}}, "INVALID_SCHEMA"),
        ({"schema_json": {"properties": {"a": {"minimum": "zero"}}}}, "INVALID_SCHEMA"),
        ({"schema_json": {"required": "total"}}, "INVALID_SCHEMA"),
        ({"schema_json": 5}, "INVALID_SCHEMA"),
        # 0 == False and 1 == True in Python: numbers are never the boolean schemas
        ({"schema_json": 0}, "INVALID_SCHEMA"),
        ({"schema_json": 1}, "INVALID_SCHEMA"),
        ({"schema_json": 0.0}, "INVALID_SCHEMA"),
        ({"schema_json": [True]}, "INVALID_SCHEMA"),
        ({"schema_json": {"not": 0}}, "INVALID_SCHEMA"),
        ({"schema_json": "{}"}, "INVALID_SCHEMA"),
        ({"schema_json": None}, "INVALID_SCHEMA"),
        ({"schema_json": {"maximum": float("nan")}}, "INVALID_SCHEMA"),
        ({"schema_json": {"maximum": float("inf")}}, "INVALID_SCHEMA"),
        ({"schema_json": {"enum": {1, 2}}}, "INVALID_SCHEMA"),
        ({"schema_json": {"title": "\ud800"}}, "INVALID_SCHEMA"),
        ({"schema_json": {"description": "x" * MAX_SCHEMA_BYTES}}, "SCHEMA_TOO_LARGE"),
    ],
)
async def test_register_refuses_bad_input(
    registry: SchemaRegistry, kwargs: dict[str, Any], code: str
) -> None:
    args: dict[str, Any] = {
        "tenant_id": TENANT,
        "event_type": "order.created",
        "schema_json": ORDER_SCHEMA,
        **kwargs,
    }
    with pytest.raises(SchemaInputError) as info:
        await registry.register(**args)
    assert info.value.reason == code
    assert info.value.message and str(info.value) == info.value.message
    assert await registry.list_schemas(TENANT) == []


async def test_register_limits_are_inclusive(registry: SchemaRegistry) -> None:
    await registry.register(TENANT, "é" * 128, ORDER_SCHEMA, "é" * 1024)
    # {"description":"…"} is 18 bytes of JSON around the string.
    document = {"description": "x" * (MAX_SCHEMA_BYTES - 18)}
    assert len(json.dumps(document, separators=(",", ":"))) == MAX_SCHEMA_BYTES
    await registry.register(TENANT, "big", document)
    with pytest.raises(SchemaInputError, match="exceeds"):
        await registry.register(TENANT, "big", {"description": "x" * (MAX_SCHEMA_BYTES - 17)})


async def test_deeply_nested_schema_is_refused(registry: SchemaRegistry) -> None:
    document: dict[str, Any] = {}
    for _ in range(5000):
        document = {"not": document}
    with pytest.raises(SchemaInputError) as info:
        await registry.register(TENANT, "order.created", document)
    assert info.value.reason == "INVALID_SCHEMA"


async def test_invalid_schema_message_names_the_place(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaInputError, match="/properties/total/type"):
        await registry.register(
            TENANT, "order.created", {"properties": {"total": {"type": "money"}}}
        )


async def test_status_changes(registry: SchemaRegistry) -> None:
    record = await registry.register(TENANT, "order.created", ORDER_SCHEMA)
    changed = await registry.set_status(record.id, "deprecated")
    assert changed is not None and changed.status == "deprecated"
    assert await registry.latest(TENANT, "order.created") is None
    assert await registry.set_status(uuid.uuid4(), "archived") is None
    with pytest.raises(SchemaInputError) as info:
        await registry.set_status(record.id, "retired")
    assert info.value.reason == "INVALID_STATUS"


async def test_delete_forgets_the_compiled_validator(registry: SchemaRegistry) -> None:
    record = await registry.register(TENANT, "order.created", ORDER_SCHEMA)
    compiled = registry.validator(record)
    assert registry.validator(record) is compiled
    assert await registry.delete(record.id) is True
    assert registry.validator(record) is not compiled
    assert await registry.delete(record.id) is False


async def test_validator_cache_is_bounded(store: Store) -> None:
    registry = SchemaRegistry(store, cache_size=2)
    a, b, c = [await registry.register(TENANT, f"t.{i}", ORDER_SCHEMA) for i in range(3)]
    va, vb = registry.validator(a), registry.validator(b)
    assert registry.validator(a) is va  # a is now the most recently used
    registry.validator(c)  # evicts b
    assert registry.validator(a) is va
    assert registry.validator(b) is not vb
    with pytest.raises(ValueError, match="cache_size"):
        SchemaRegistry(store, cache_size=0)


async def test_lookups_with_unstorable_event_types_find_nothing(
    registry: SchemaRegistry, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*args: Any) -> None:
        raise AssertionError("the store must not be asked")

    monkeypatch.setattr(store, "latest_active_schema", never)
    monkeypatch.setattr(store, "get_schema_version", never)
    monkeypatch.setattr(store, "list_schemas", never)
    for event_type in ["", "x" * 257, "a\x00b", "\ud800"]:
        assert await registry.latest(TENANT, event_type) is None
        assert await registry.get_version(TENANT, event_type, 1) is None
        assert await registry.list_schemas(TENANT, event_type) == []


# --- validate_payload ---------------------------------------------------------------------


async def test_validate_payload(registry: SchemaRegistry) -> None:
    assert await registry.validate_payload(TENANT, "order.created", {"total": 1}) == (None, [])
    record = await registry.register(TENANT, "order.created", ORDER_SCHEMA)

    schema, errors = await registry.validate_payload(TENANT, "order.created", {"total": 1.5})
    assert schema == record and errors == []

    schema, errors = await registry.validate_payload(
        TENANT, "order.created", {"total": -1, "n": "x"}
    )
    assert schema == record
    assert sorted(e["path"] for e in errors) == ["/n", "/total"]
    assert all(e["message"] for e in errors)

    _, errors = await registry.validate_payload(TENANT, "order.created", [])
    assert [e["path"] for e in errors] == [""]

    # Another tenant has no schema for the type.
    assert await registry.validate_payload(OTHER_TENANT, "order.created", 1) == (None, [])


async def test_validate_payload_paths_are_json_pointers(registry: SchemaRegistry) -> None:
    document = {
        "properties": {
            "a/b~c": {"type": "integer"},
            "items": {"items": {"type": "string"}},
        }
    }
    await registry.register(TENANT, "t", document)
    _, errors = await registry.validate_payload(TENANT, "t", {"a/b~c": "x", "items": ["ok", 3]})
    assert sorted(e["path"] for e in errors) == ["/a~1b~0c", "/items/1"]


async def test_validate_payload_with_a_version(registry: SchemaRegistry) -> None:
    v1 = await registry.register(TENANT, "order.created", ORDER_SCHEMA)
    v2 = await registry.register(TENANT, "order.created", {"type": "string"})
    await registry.set_status(v1.id, "archived")
    schema, errors = await registry.validate_payload(TENANT, "order.created", {"total": 1}, 1)
    assert schema is not None and schema.id == v1.id and errors == []
    schema, errors = await registry.validate_payload(TENANT, "order.created", {"total": 1})
    assert schema is not None and schema.id == v2.id and len(errors) == 1
    assert await registry.validate_payload(TENANT, "order.created", {}, 3) == (None, [])


async def test_validate_payload_reports_a_bounded_number_of_errors(
    registry: SchemaRegistry,
) -> None:
    await registry.register(TENANT, "t", {"items": {"type": "string"}})
    _, errors = await registry.validate_payload(TENANT, "t", list(range(500)))
    assert len(errors) == MAX_REPORTED_ERRORS
    assert errors[0]["path"] == "/0"


@pytest.mark.parametrize(
    "document",
    [
        {"$ref": "#/$defs/missing"},
        {"$ref": "https://example.invalid/schema.json"},
        {"allOf": [{"$ref": "other.json"}]},
        {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    ],
)
async def test_schemas_that_fail_every_payload_are_refused(
    registry: SchemaRegistry, document: dict[str, Any]
) -> None:
    with pytest.raises(SchemaInputError) as info:
        await registry.register(TENANT, "t", document)
    assert info.value.reason == "INVALID_SCHEMA"


# A $ref reached only through a property: registration cannot see it fail.
HIDDEN_BAD_REF = {"properties": {"total": {"$ref": "#/$defs/missing"}}}


async def test_validate_payload_with_an_unusable_schema(registry: SchemaRegistry) -> None:
    record = await registry.register(TENANT, "t", HIDDEN_BAD_REF)
    assert await registry.validate_payload(TENANT, "t", {"n": 1}) == (record, [])
    with pytest.raises(SchemaUnusable) as info:
        await registry.validate_payload(TENANT, "t", {"total": 1})
    assert info.value.schema == record
    assert "unresolvable" in info.value.message


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


async def test_a_payload_too_deep_to_validate_is_invalid(registry: SchemaRegistry) -> None:
    await registry.register(TENANT, "t", {"type": "array", "items": {"$ref": "#"}})
    assert (await registry.validate_payload(TENANT, "t", nested(5)))[1] == []
    _, errors = await registry.validate_payload(TENANT, "t", nested(5000))
    assert errors == [{"path": "", "message": "payload is nested too deeply to validate"}]


async def test_format_is_an_annotation_only(registry: SchemaRegistry) -> None:
    # Draft 2020-12: "format" does not assert unless a vocabulary says so.
    await registry.register(TENANT, "t", {"type": "string", "format": "email"})
    assert (await registry.validate_payload(TENANT, "t", "not an email"))[1] == []


# --- check_events -------------------------------------------------------------------------

PLAIN_OK = "plain_ok"
PLAIN_BAD = "plain_bad"
PLAIN_NO_SCHEMA = "plain_no_schema"
ENCRYPTED = "encrypted"
ENCRYPTED_NO_SCHEMA = "encrypted_no_schema"
KINDS = [PLAIN_OK, PLAIN_BAD, PLAIN_NO_SCHEMA, ENCRYPTED, ENCRYPTED_NO_SCHEMA]
RECIPIENTS = [(1, X25519_PUBLIC)]


def batch() -> dict[str, VesEventEnvelope]:
    return {
        PLAIN_OK: event(1, payload={"total": 3}),
        PLAIN_BAD: event(2, payload={"total": "three"}),
        PLAIN_NO_SCHEMA: event(3, event_type="order.unknown"),
        ENCRYPTED: event(4, payload={"total": "hidden"}, recipients=RECIPIENTS),
        ENCRYPTED_NO_SCHEMA: event(
            5, event_type="order.unknown", payload={"x": 1}, recipients=RECIPIENTS
        ),
    }


def outcome(events: dict[str, VesEventEnvelope], result: SchemaStageResult) -> dict[str, str]:
    """Each event's fate: accepted, warned (accepted with a warning) or rejected."""
    by_id = {env.event_id: name for name, env in events.items()}
    fate = {by_id[env.event_id]: "accepted" for env in result.accepted}
    for warning in result.warnings:
        assert fate[by_id[warning.event_id]] == "accepted"
        fate[by_id[warning.event_id]] = "warned"
    for rejection in result.rejections:
        assert rejection.reason == "schema_validation"
        assert by_id[rejection.event_id] not in fate
        fate[by_id[rejection.event_id]] = "rejected"
    return fate


# What REFERENCE_MAP §4.3 asks of each mode, event by event.
EXPECTED = {
    ValidationMode.DISABLED: dict.fromkeys(KINDS, "accepted"),
    ValidationMode.WARN: {
        PLAIN_OK: "accepted",
        PLAIN_BAD: "warned",
        PLAIN_NO_SCHEMA: "warned",
        ENCRYPTED: "accepted",
        ENCRYPTED_NO_SCHEMA: "warned",
    },
    ValidationMode.ENFORCE: {
        PLAIN_OK: "accepted",
        PLAIN_BAD: "rejected",
        PLAIN_NO_SCHEMA: "accepted",
        ENCRYPTED: "accepted",
        ENCRYPTED_NO_SCHEMA: "accepted",
    },
    ValidationMode.REQUIRED: {
        PLAIN_OK: "accepted",
        PLAIN_BAD: "rejected",
        PLAIN_NO_SCHEMA: "rejected",
        ENCRYPTED: "accepted",
        ENCRYPTED_NO_SCHEMA: "rejected",
    },
}

# A failing schema store: only required rejects, and enforce never looks encrypted events up.
EXPECTED_ON_STORE_ERROR = {
    ValidationMode.DISABLED: dict.fromkeys(KINDS, "accepted"),
    ValidationMode.WARN: dict.fromkeys(KINDS, "warned"),
    ValidationMode.ENFORCE: {
        PLAIN_OK: "warned",
        PLAIN_BAD: "warned",
        PLAIN_NO_SCHEMA: "warned",
        ENCRYPTED: "accepted",
        ENCRYPTED_NO_SCHEMA: "accepted",
    },
    ValidationMode.REQUIRED: dict.fromkeys(KINDS, "rejected"),
}


class CountingLookups:
    def __init__(self, store: Store, fail: bool = False) -> None:
        self.calls: list[tuple[uuid.UUID, str]] = []
        self._real = store.latest_active_schema
        self._fail = fail

    async def __call__(self, tenant_id: uuid.UUID, event_type: str) -> SchemaRecord | None:
        self.calls.append((tenant_id, event_type))
        if self._fail:
            raise OperationalError("database unavailable: connection refused")
        return await self._real(tenant_id, event_type)


@pytest.fixture
def lookups(store: Store, monkeypatch: pytest.MonkeyPatch) -> CountingLookups:
    counting = CountingLookups(store)
    monkeypatch.setattr(store, "latest_active_schema", counting)
    return counting


@pytest.mark.parametrize("mode", list(ValidationMode))
async def test_check_events_in_every_mode(
    registry: SchemaRegistry, lookups: CountingLookups, mode: ValidationMode
) -> None:
    await registry.register(TENANT, "order.created", ORDER_SCHEMA)
    events = batch()
    result = await check_events(registry, mode, list(events.values()))
    assert outcome(events, result) == EXPECTED[mode]
    # Request order is kept among the events that go on.
    assert result.accepted == [env for env in events.values() if env in result.accepted]
    # One lookup per distinct (tenant, event_type), none at all when disabled.
    assert sorted(lookups.calls) == (
        []
        if mode is ValidationMode.DISABLED
        else sorted({(TENANT, "order.created"), (TENANT, "order.unknown")})
    )


@pytest.mark.parametrize("mode", list(ValidationMode))
async def test_check_events_when_the_store_fails(
    registry: SchemaRegistry,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    mode: ValidationMode,
) -> None:
    monkeypatch.setattr(store, "latest_active_schema", CountingLookups(store, fail=True))
    events = batch()
    result = await check_events(registry, mode, list(events.values()))
    assert outcome(events, result) == EXPECTED_ON_STORE_ERROR[mode]
    for problem in [*(r.message for r in result.rejections), *(w.message for w in result.warnings)]:
        # The store's own text goes to the log, not into a rejection a client reads.
        assert problem == "schema lookup failed: the database did not answer"


async def test_enforce_does_not_look_up_encrypted_events(
    registry: SchemaRegistry, lookups: CountingLookups
) -> None:
    events = [event(i, recipients=RECIPIENTS) for i in range(3)]
    result = await check_events(registry, ValidationMode.ENFORCE, events)
    assert result.accepted == events and lookups.calls == []


async def test_each_event_type_is_looked_up_once_per_batch(
    registry: SchemaRegistry, lookups: CountingLookups
) -> None:
    await registry.register(TENANT, "order.created", ORDER_SCHEMA)
    events = [event(i, event_type=f"order.{'created' if i % 3 else 'paid'}") for i in range(30)]
    result = await check_events(registry, ValidationMode.REQUIRED, events)
    assert sorted(lookups.calls) == [(TENANT, "order.created"), (TENANT, "order.paid")]
    assert len(result.accepted) == 20 and len(result.rejections) == 10


async def test_rejection_message_says_what_failed(registry: SchemaRegistry) -> None:
    await registry.register(TENANT, "order.created", ORDER_SCHEMA)
    bad = event(1, payload={"total": -5, "n": 1.5})
    result = await check_events(registry, ValidationMode.ENFORCE, [bad])
    [rejection] = result.rejections
    assert rejection.event_id == bad.event_id
    assert rejection_body(rejection)["reason"] == "schema_validation"
    assert "order.created v1" in rejection.message and "(and 1 more)" in rejection.message

    missing = event(2, event_type="order.unknown")
    result = await check_events(registry, ValidationMode.REQUIRED, [missing])
    assert "no active schema" in result.rejections[0].message
    assert "order.unknown" in result.rejections[0].message


async def test_only_the_latest_active_version_counts(registry: SchemaRegistry) -> None:
    strict = await registry.register(TENANT, "order.created", ORDER_SCHEMA)
    loose = await registry.register(TENANT, "order.created", {"type": "object"})
    bad = event(1, payload={"total": "three"})
    assert (await check_events(registry, ValidationMode.ENFORCE, [bad])).accepted == [bad]

    await registry.set_status(loose.id, "deprecated")
    assert (await check_events(registry, ValidationMode.ENFORCE, [bad])).rejections

    await registry.set_status(strict.id, "archived")
    result = await check_events(registry, ValidationMode.REQUIRED, [bad])
    assert "no active schema" in result.rejections[0].message


async def test_schemas_of_another_tenant_do_not_apply(registry: SchemaRegistry) -> None:
    await registry.register(OTHER_TENANT, "order.created", {"type": "string"})
    ok = event(1)
    assert (await check_events(registry, ValidationMode.ENFORCE, [ok])).accepted == [ok]
    assert (await check_events(registry, ValidationMode.REQUIRED, [ok])).rejections


@pytest.mark.parametrize(
    ("mode", "fate"),
    [
        (ValidationMode.WARN, "warned"),
        (ValidationMode.ENFORCE, "warned"),
        (ValidationMode.REQUIRED, "rejected"),
    ],
)
async def test_an_unusable_schema_counts_as_a_lookup_failure(
    registry: SchemaRegistry, mode: ValidationMode, fate: str
) -> None:
    await registry.register(TENANT, "order.created", HIDDEN_BAD_REF)
    events = {PLAIN_OK: event(1)}  # its payload has a "total"
    result = await check_events(registry, mode, list(events.values()))
    assert outcome(events, result) == {PLAIN_OK: fate}


async def test_warnings_are_logged(
    registry: SchemaRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    await registry.register(TENANT, "order.created", ORDER_SCHEMA)
    bad = event(1, payload={"total": "three"})
    with caplog.at_level("WARNING", logger="stateset_sequencer.sequencer.schemas"):
        result = await check_events(registry, ValidationMode.WARN, [bad])
    assert result.accepted == [bad] and len(result.warnings) == 1
    assert str(bad.event_id) in caplog.text and "order.created v1" in caplog.text


async def test_make_stage_returns_accepted_and_rejections(registry: SchemaRegistry) -> None:
    await registry.register(TENANT, "order.created", ORDER_SCHEMA)
    good, bad = event(1), event(2, payload={"total": "three"})
    stage = make_stage(registry, ValidationMode.ENFORCE)
    accepted, rejections = await stage([good, bad])
    assert accepted == [good]
    assert [r.event_id for r in rejections] == [bad.event_id]


async def test_empty_batch(registry: SchemaRegistry) -> None:
    for mode in ValidationMode:
        result = await check_events(registry, mode, [])
        assert (result.accepted, result.rejections, result.warnings) == ([], [], [])


@pytest.mark.parametrize("mode", [ValidationMode.ENFORCE, ValidationMode.REQUIRED])
async def test_deep_nesting_does_not_slip_past_enforcement(
    registry: SchemaRegistry, mode: ValidationMode
) -> None:
    await registry.register(TENANT, "order.created", {"type": "array", "items": {"$ref": "#"}})
    # The stage does not re-check signatures, so the payload can be swapped in unsigned.
    deep = event(1).model_copy(update={"payload": nested(5000)})
    result = await check_events(registry, mode, [deep])
    assert result.accepted == [] and [r.event_id for r in result.rejections] == [deep.event_id]


async def test_latest_lookup_is_cached_and_dropped_on_change(store: Store) -> None:
    clock = [0.0]
    cached = SchemaRegistry(store, latest_ttl_seconds=5.0, monotonic=lambda: clock[0])
    other = SchemaRegistry(store)  # another process, in effect: its changes are not seen
    assert await cached.latest(TENANT, "order.created") is None
    first = await other.register(TENANT, "order.created", {"type": "object"})
    assert await cached.latest(TENANT, "order.created") is None  # still the cached miss
    clock[0] = 5.1
    assert await cached.latest(TENANT, "order.created") == first  # expired: looked up again
    second = await cached.register(TENANT, "order.created", {"type": "object"})
    assert await cached.latest(TENANT, "order.created") == second  # own change: at once
    deprecated = await cached.set_status(second.id, "deprecated")
    assert deprecated is not None
    assert await cached.latest(TENANT, "order.created") == first
    assert await cached.delete(first.id)
    assert await cached.latest(TENANT, "order.created") is None

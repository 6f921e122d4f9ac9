"""The projection rules: RFC 7386 merge patch, the projector registry and the fold."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.sequencer.projections import (
    DEFAULT_REGISTRY,
    ProjectionError,
    ProjectionReason,
    ProjectorRegistry,
    check_source,
    ensure_kept,
    fold,
    merge_patch,
    merge_projector,
)
from stateset_sequencer.store.records import ProjectionDocument, StoredEvent
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import envelope

# RFC 7386, Appendix A: (original, patch, result)
APPENDIX_A: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), APPENDIX_A)
def test_rfc7386_appendix_a(original: Any, patch: Any, result: Any) -> None:
    assert merge_patch(original, patch) == result


def test_rfc7386_section_3_example() -> None:
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


@given(json_values, json_values)
def test_merge_patch_leaves_its_arguments_alone_and_is_idempotent(target: Any, patch: Any) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    once = merge_patch(target, patch)
    assert (target, patch) == (target_before, patch_before)
    assert merge_patch(once, patch) == once


@given(json_values, json_values)
def test_merge_patch_result_shares_nothing_a_later_patch_could_change(
    target: Any, patch: Any
) -> None:
    result = merge_patch(target, patch)
    snapshot = copy.deepcopy(patch)
    if isinstance(result, dict):
        result.clear()
    elif isinstance(result, list):
        result.append(1)
    assert patch == snapshot


def test_sources() -> None:
    assert check_source("ves") == "ves"
    assert check_source("legacy") == "legacy"
    for bad in ("", "VES", "other"):
        with pytest.raises(ProjectionError) as caught:
            check_source(bad)
        assert caught.value.reason is ProjectionReason.INVALID_SOURCE
        assert caught.value.message == "source must be `ves` or `legacy`"
    ensure_kept("ves")
    with pytest.raises(ProjectionError) as caught:
        ensure_kept("legacy")
    assert caught.value.reason is ProjectionReason.LEGACY_NOT_KEPT


# --- registry and fold --------------------------------------------------------------------

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def stored(seq: int, entity_id: str = "ORD-1", payload: Any = None, **kwargs: Any) -> StoredEvent:
    env = kit.event(seq, entity_id=entity_id, payload=payload, **kwargs)
    return StoredEvent(env, seq, T0 + timedelta(seconds=seq), env.signing_hash())


def encrypted(seq: int, entity_id: str = "ORD-1") -> StoredEvent:
    env = envelope.sign_event(
        signer=kit.AGENT,
        tenant_id=kit.TENANT,
        store_id=kit.STORE_ID,
        source_agent_id=kit.AGENT_ID,
        agent_key_id=1,
        entity_type="order",
        entity_id=entity_id,
        event_type="order.updated",
        created_at="2025-06-01T00:00:00Z",
        payload={"secret": True},
        recipients=[(1, kit.X25519_PUBLIC)],
    )
    assert env.payload_kind == 1
    return StoredEvent(env, seq, T0 + timedelta(seconds=seq), env.signing_hash())


def test_registry_picks_by_entity_type_with_merge_as_default() -> None:
    def count(document: Any, event: StoredEvent) -> Any:
        return {"count": document.get("count", 0) + 1}

    registry = DEFAULT_REGISTRY.with_projector("inventory", count)
    assert registry.projector_for("order") is merge_projector
    assert registry.projector_for("inventory") is count
    assert DEFAULT_REGISTRY.projector_for("inventory") is merge_projector  # unchanged
    events = [stored(1, entity_type="inventory"), stored(2, entity_type="inventory")]
    result = fold(kit.STREAM, 0, events, {}, registry)
    assert [d.document for d in result.documents] == [{"count": 2}]
    assert ProjectorRegistry(default=count).projector_for("order") is count


def test_fold_versions_documents_and_times() -> None:
    events = [
        stored(1, payload={"status": "new", "total": 10}),
        stored(2, "ORD-2", payload={"status": "new"}),
        stored(3, payload={"status": "paid", "total": None}),
    ]
    result = fold(kit.STREAM, 0, events, {})
    assert result.checkpoint == 3 and result.events == 3
    by_id = {d.entity_id: d for d in result.documents}
    assert by_id["ORD-1"].document == {"status": "paid"}
    assert by_id["ORD-1"].version == 2
    assert by_id["ORD-1"].updated_at == T0 + timedelta(seconds=3)
    assert by_id["ORD-2"].version == 1


def test_fold_continues_from_current_documents() -> None:
    current = {
        ("order", "ORD-1"): ProjectionDocument(
            kit.TENANT, kit.STORE_ID, "order", "ORD-1", 4, {"a": 1}, T0
        )
    }
    result = fold(kit.STREAM, 10, [stored(11, payload={"b": 2})], current)
    (document,) = result.documents
    assert (document.version, document.document) == (5, {"a": 1, "b": 2})
    assert current[("order", "ORD-1")].document == {"a": 1}  # not changed in place


def test_encrypted_events_count_but_leave_the_document() -> None:
    result = fold(kit.STREAM, 0, [stored(1, payload={"a": 1}), encrypted(2)], {})
    (document,) = result.documents
    assert (document.version, document.document) == (2, {"a": 1})
    assert document.updated_at == T0 + timedelta(seconds=2)
    only = fold(kit.STREAM, 0, [encrypted(1)], {})
    assert (only.documents[0].version, only.documents[0].document) == (1, {})


def test_fold_stops_at_a_hole_and_skips_what_was_folded() -> None:
    events = [stored(1), stored(2), stored(4), stored(5)]
    result = fold(kit.STREAM, 0, events, {})
    assert (result.checkpoint, result.events) == (2, 2)
    assert fold(kit.STREAM, 3, events, {}).checkpoint == 5
    nothing = fold(kit.STREAM, 2, [stored(4)], {})
    assert (nothing.checkpoint, nothing.events, nothing.documents) == (2, 0, [])
    assert fold(kit.STREAM, 1, events, {}).documents[0].version == 1


def test_fold_is_deterministic() -> None:
    events = [stored(i, f"ORD-{i % 3}", payload={"n": i}) for i in range(1, 20)]
    first = fold(kit.STREAM, 0, events, {})
    halves = fold(kit.STREAM, 0, events[:7], {})
    current = {(d.entity_type, d.entity_id): d for d in halves.documents}
    rest = fold(kit.STREAM, 7, events[7:], current)
    merged = {**current, **{(d.entity_type, d.entity_id): d for d in rest.documents}}
    assert {(d.entity_type, d.entity_id): d for d in first.documents} == merged
    assert uuid.UUID(int=0) not in {d.tenant_id for d in first.documents}

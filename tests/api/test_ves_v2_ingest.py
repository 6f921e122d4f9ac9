"""VES signing version 2 at the HTTP ingest, on both stores: V2 and mixed batches are
sequenced with receipts over the V2 hash, every mismatch between version and signature is
refused with the store unchanged, and ``REQUIRE_SIGNED_EXECUTION_CONTROLS`` refuses new
V1 events while exact V1 replays keep their receipts."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from stateset_sequencer.testing import kit, pg
from stateset_sequencer.ves import hashing
from stateset_sequencer.ves.envelope import VesEventEnvelope
from stateset_sequencer.ves.signing import Receipt, verify_receipt
from tests.api.conftest import Api, open_api, settings_for

INGEST = "/api/v1/ves/events/ingest"
COMMAND = uuid.UUID("8af726e2-40e9-4cb6-b7d0-ea463765a9a7")


def v2_event(i: int, **kwargs: Any) -> VesEventEnvelope:
    return kit.event(i, command_id=uuid.uuid5(COMMAND, str(i)), base_version=0, **kwargs)


def signed_over(env: VesEventEnvelope, version: int) -> VesEventEnvelope:
    """``env`` carrying a valid signature over the hash of the *other* recipe."""
    other = dataclasses.replace(env.signing_fields(), ves_version=version)
    return env.model_copy(
        update={"agent_signature": kit.AGENT.sign(hashing.event_signing_hash(other))}
    )


def body(events: list[Any]) -> str:
    return json.dumps({"agentId": str(kit.AGENT_ID), "events": events})


async def post(api: Api, text: str) -> Any:
    return await api.client.post(
        INGEST, content=text, headers={**api.headers(), "content-type": "application/json"}
    )


def check_receipts(api: Api, sent: list[VesEventEnvelope], wire: list[dict[str, Any]]) -> None:
    by_id = {e.event_id: e for e in sent}
    for item in wire:
        receipt = Receipt.from_wire(item)
        env = by_id[receipt.event_id]
        verify_receipt(
            receipt,
            tenant_id=env.tenant_id,
            store_id=env.store_id,
            event_signing_hash=env.signing_hash(),
            sequencer_public_key=api.services.sequencer.receipt_signer.public_key,
        )


async def test_v2_and_mixed_batches_are_sequenced_and_replayed(api: Api) -> None:
    await api.register_agent()
    batch = [v2_event(1), kit.event(2, ves_version=1), kit.event(3), v2_event(4)]
    assert [e.ves_version for e in batch] == [2, 1, 2, 2]
    first = await api.ingest(batch)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert (answer["eventsAccepted"], answer["eventsRejected"], answer["headSequence"]) == (4, 0, 4)
    check_receipts(api, batch, answer["receipts"])

    stored = await api.store.read_range(kit.STREAM, 1, 4)
    assert [s.envelope for s in stored] == batch
    assert [s.event_signing_hash for s in stored] == [e.signing_hash() for e in batch]
    read = await api.client.get(f"/api/v1/ves/events/{batch[0].event_id}", headers=api.headers())
    item = read.json()["event"]
    assert (item["ves_version"], item["command_id"], item["base_version"]) == (
        2,
        str(batch[0].command_id),
        0,
    )

    again = await api.ingest(batch)
    assert again.json()["receipts"] == answer["receipts"]
    assert again.json()["eventsAccepted"] == 0


def wrong_recipe_v2(i: int) -> VesEventEnvelope:
    return signed_over(v2_event(i), 1)


def wrong_recipe_v1(i: int) -> VesEventEnvelope:
    return signed_over(kit.event(i, ves_version=1, command_id=COMMAND, base_version=0), 2)


def relabelled_as_v1(i: int) -> VesEventEnvelope:
    return v2_event(i).model_copy(update={"ves_version": 1})


def relabelled_as_v2(i: int) -> VesEventEnvelope:
    return kit.event(i, ves_version=1, command_id=COMMAND).model_copy(update={"ves_version": 2})


def command_changed(i: int) -> VesEventEnvelope:
    return v2_event(i).model_copy(update={"command_id": uuid.uuid4()})


def command_dropped(i: int) -> VesEventEnvelope:
    return v2_event(i).model_copy(update={"command_id": None})


def base_changed(i: int) -> VesEventEnvelope:
    return v2_event(i).model_copy(update={"base_version": 1})


def base_added(i: int) -> VesEventEnvelope:
    return kit.event(i).model_copy(update={"base_version": 0})


def version_0(i: int) -> VesEventEnvelope:
    return kit.event(i).model_copy(update={"ves_version": 0})


def version_3(i: int) -> VesEventEnvelope:
    return kit.event(i).model_copy(update={"ves_version": 3})


def v2_base_beyond_safe(i: int) -> VesEventEnvelope:
    return v2_event(i).model_copy(update={"base_version": 2**53})


# (name, builder, reason): each event is refused on its own, in a 200 answer.
REFUSED: list[tuple[str, Callable[[int], VesEventEnvelope], str]] = [
    ("V2 signed over the V1 hash", wrong_recipe_v2, "invalid_signature"),
    ("V1 signed over the V2 hash", wrong_recipe_v1, "invalid_signature"),
    ("V2 relabelled as V1", relabelled_as_v1, "invalid_signature"),
    ("V1 relabelled as V2", relabelled_as_v2, "invalid_signature"),
    ("command_id changed after signing", command_changed, "invalid_signature"),
    ("command_id dropped after signing", command_dropped, "invalid_signature"),
    ("base_version changed after signing", base_changed, "invalid_signature"),
    ("base_version added after signing", base_added, "invalid_signature"),
    ("ves_version 0", version_0, "unsupported_version"),
    ("ves_version 3", version_3, "unsupported_version"),
    ("V2 base_version 2^53", v2_base_beyond_safe, "schema_validation: base_version"),
]


@pytest.mark.parametrize(("name", "build", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_mismatched_versions_and_controls_are_refused(
    api: Api, name: str, build: Callable[[int], VesEventEnvelope], reason: str
) -> None:
    await api.register_agent()
    before = await kit.snapshot(api.store)
    bad = build(5)
    response = await api.ingest([bad])
    assert response.status_code == 200, (name, response.text)
    answer = response.json()
    assert (answer["eventsAccepted"], answer["eventsRejected"], answer["headSequence"]) == (0, 1, 0)
    assert [(r["event_id"], r["reason"]) for r in answer["rejections"]] == [
        (str(bad.event_id), reason)
    ]
    assert await kit.snapshot(api.store) == before


async def test_a_refused_event_leaves_its_neighbours_and_numbers_alone(api: Api) -> None:
    await api.register_agent()
    good = [v2_event(1), kit.event(3, ves_version=1)]
    response = await api.ingest([good[0], command_changed(2), good[1]])
    answer = response.json()
    assert (answer["eventsAccepted"], answer["eventsRejected"]) == (2, 1)
    assert (answer["sequenceStart"], answer["sequenceEnd"]) == (1, 2)
    check_receipts(api, good, answer["receipts"])


# (name, changes to a V2 wire event, code): refused as a whole request, before any event.
UNPARSABLE: list[tuple[str, dict[str, Any], str]] = [
    ("ves_version 2^32", {"ves_version": 2**32}, "ves_version"),
    ("ves_version -1", {"ves_version": -1}, "ves_version"),
    ("base_version 2^64", {"base_version": 2**64}, "base_version"),
    ("command_id not a UUID", {"command_id": "cmd-1"}, "command_id"),
    ("command_id a number", {"command_id": 7}, "command_id"),
    ("base_version a string", {"base_version": "0"}, "base_version"),
]


@pytest.mark.parametrize(("name", "changes", "field"), UNPARSABLE, ids=[u[0] for u in UNPARSABLE])
async def test_values_outside_the_wire_types_are_422(
    api: Api, name: str, changes: dict[str, Any], field: str
) -> None:
    await api.register_agent()
    before = await kit.snapshot(api.store)
    wire = v2_event(6).to_wire() | changes
    response = await post(api, body([wire]))
    assert response.status_code == 422, (name, response.text)
    error = response.json()["error"]
    assert error["code"] == "INVALID_FIELD_VALUE"
    assert field in error["message"]
    assert await kit.snapshot(api.store) == before


async def test_v1_keeps_its_unsigned_u64_base_version(api: Api) -> None:
    # V1 does not sign base_version, so a value beyond 2^53 is still judged as before: by
    # the concurrency check (this entity is new), not by the V2 signing limit.
    await api.register_agent()
    before = await kit.snapshot(api.store)
    v1 = kit.event(7, ves_version=1, base_version=2**60)
    response = await api.ingest([v1])
    [rejection] = response.json()["rejections"]
    assert rejection["reason"].startswith("version_conflict")
    assert await kit.snapshot(api.store) == before


# --- REQUIRE_SIGNED_EXECUTION_CONTROLS -----------------------------------------------------


@asynccontextmanager
async def database(backend: str) -> AsyncIterator[str | None]:
    if backend == "postgres":
        async with pg.scratch_database("seqv2") as url:
            yield url
    else:
        yield None


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_required_controls_refuse_new_v1_but_replay_stored_v1(
    backend: str, tmp_path: Path
) -> None:
    stored_v1 = kit.event(1, ves_version=1)
    async with database(backend) as url:
        # Before the switch: a V1 writer stores an event.
        async with open_api(settings_for(url, tmp_path / "data")) as api:
            assert api.services.sequencer.require_signed_execution_controls is False
            await api.register_agent()
            first = await api.ingest([stored_v1])
            assert first.json()["eventsAccepted"] == 1
            receipt = first.json()["receipts"][0]

        # After every writer moved to V2, the operator turns the requirement on.
        settings = settings_for(url, tmp_path / "data", REQUIRE_SIGNED_EXECUTION_CONTROLS="true")
        async with open_api(settings) as api:
            assert api.services.sequencer.require_signed_execution_controls is True
            before = await kit.snapshot(api.store)
            new_v1 = kit.event(2, ves_version=1)
            refused = await api.ingest([new_v1])
            answer = refused.json()
            assert (answer["eventsAccepted"], answer["headSequence"]) == (0, 1)
            [rejection] = answer["rejections"]
            assert rejection["event_id"] == str(new_v1.event_id)
            assert rejection["reason"] == "signed_execution_controls_required"
            assert "ves_version 2" in rejection["message"]
            assert await kit.snapshot(api.store) == before

            # An exact replay gets its stored receipt; a V2 event takes the next number.
            v2 = v2_event(3)
            mixed = await api.ingest([stored_v1, new_v1, v2])
            answer = mixed.json()
            assert (answer["eventsAccepted"], answer["eventsRejected"]) == (1, 1)
            assert answer["receipts"][0] == receipt
            assert Receipt.from_wire(answer["receipts"][1]).sequence_number == 2
            assert [r["reason"] for r in answer["rejections"]] == [
                "signed_execution_controls_required"
            ]
            # Other content under the stored V1 id is still a duplicate, not a V1 refusal.
            altered = kit.resign(stored_v1, entity_id="ORD-other")
            duplicate = await api.ingest([altered])
            assert duplicate.json()["rejections"][0]["reason"] == "duplicate_event_id"


async def test_the_requirement_refuses_a_misspelt_value_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="REQUIRE_SIGNED_EXECUTION_CONTROLS"):
        settings_for(None, tmp_path, REQUIRE_SIGNED_EXECUTION_CONTROLS="ture")

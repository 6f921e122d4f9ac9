"""The client SDK signs with version 2 unless told otherwise, and checks each receipt
against the hash of the version the event was signed with."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from typing import Any

import httpx
import pytest

from stateset_sequencer.client import Agent, ReceiptMismatch, SequencerClient
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import envelope, hashing, signing
from stateset_sequencer.ves.errors import EnvelopeInvalid

RECEIPTS = signing.ReceiptSigner(uuid.UUID(int=7), kit.SEQUENCER_SEED)
AGENT = Agent(kit.AGENT, kit.TENANT, kit.STORE_ID, kit.AGENT_ID)
COMMAND = uuid.UUID("8af726e2-40e9-4cb6-b7d0-ea463765a9a7")


def test_an_agent_signs_v2_by_default_and_v1_on_request() -> None:
    event = AGENT.event(
        "order", "o1", "order.updated", {"n": 1}, command_id=COMMAND, base_version=3
    )
    assert event.ves_version == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event.created_at)
    envelope.verify_signature(event, kit.AGENT.public_key, envelope.validate(event))
    old = dataclasses.replace(AGENT, ves_version=1)
    v1 = old.event("order", "o1", "order.updated", {"n": 1}, command_id=COMMAND)
    assert v1.ves_version == 1 and v1.command_id == COMMAND
    envelope.verify_signature(v1, kit.AGENT.public_key, envelope.validate(v1))
    with pytest.raises(EnvelopeInvalid):  # created_at is signed as given, so it must parse
        old.event("order", "o1", "order.updated", {"n": 1}, created_at="soon")


def test_an_agent_with_an_unknown_version_refuses_to_sign() -> None:
    with pytest.raises(EnvelopeInvalid) as info:
        dataclasses.replace(AGENT, ves_version=3).event("order", "o1", "order.created", {})
    assert info.value.reason == "unsupported_version"


def answer_with(hash_of: Any) -> httpx.MockTransport:
    """Ingest answers with receipts over ``hash_of(envelope)``."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/ves/sequencer":
            return httpx.Response(200, json=kit.sequencer_answer(RECEIPTS))
        sent = json.loads(request.content)
        events = [envelope.parse_envelope(e) for e in sent["events"]]
        receipts = [
            RECEIPTS.issue(
                tenant_id=e.tenant_id,
                store_id=e.store_id,
                event_id=e.event_id,
                sequence_number=n,
                event_signing_hash=hash_of(e),
                sequenced_at="2025-06-01T00:00:00.000+00:00",
            ).to_wire()
            for n, e in enumerate(events, start=1)
        ]
        return httpx.Response(
            200,
            json={
                "batchId": str(uuid.uuid4()),
                "eventsAccepted": len(receipts),
                "eventsRejected": 0,
                "sequenceStart": 1,
                "sequenceEnd": len(receipts),
                "headSequence": len(receipts),
                "receipts": receipts,
            },
        )

    return httpx.MockTransport(handle)


def v1_hash(env: envelope.VesEventEnvelope) -> bytes:
    return hashing.event_signing_hash(dataclasses.replace(env.signing_fields(), ves_version=1))


async def test_record_sends_a_v2_event_and_checks_its_receipt() -> None:
    transport = answer_with(lambda e: e.signing_hash())
    async with SequencerClient("http://sequencer.test", transport=transport) as client:
        event, outcome = await client.record(
            AGENT, "order", "o1", "order.created", {"n": 1}, command_id=COMMAND, base_version=0
        )
        assert event.ves_version == 2 and outcome.events_accepted == 1
        assert outcome.receipts[0].event_id == event.event_id
        old = dataclasses.replace(AGENT, ves_version=1)
        v1, _ = await client.record(old, "order", "o2", "order.created", {"n": 2})
        assert v1.ves_version == 1


async def test_a_receipt_over_the_v1_hash_of_a_v2_event_is_refused() -> None:
    async with SequencerClient("http://sequencer.test", transport=answer_with(v1_hash)) as client:
        with pytest.raises(ReceiptMismatch):
            await client.record(AGENT, "order", "o1", "order.created", {"n": 1})
        # For a V1 event the two are the same hash, so its receipt checks.
        old = dataclasses.replace(AGENT, ves_version=1)
        _, outcome = await client.record(old, "order", "o1", "order.created", {"n": 1})
        assert outcome.events_accepted == 1

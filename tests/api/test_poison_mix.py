"""Good and poisoned batches at once on one stream (issue 11, item 8): a validly signed
event carrying something no store can hold, in a field its signature does not cover, is
refused with 400 before the stream transaction, so it never fails the batches merged with
it. Every good batch gets its receipts; the store holds exactly the good events, gap-free.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from stateset_sequencer.testing import kit
from tests.api.conftest import Api

INGEST = "/api/v1/ves/events/ingest"
GOOD_CLIENTS = 4
POISON_CLIENTS = 2
ROUNDS = 5
BATCH = 3

# What each poisoned event carries; none of it is covered by the agent's signature.
POISONS: dict[str, tuple[str, str]] = {
    # field -> (JSON text put in place of "MARKER", the path the refusal names)
    "bundle": ('{"x": "\\ud800"}', "agent_signature_bundle.x"),
    "bundle_key": ('{"\\udfff": 1}', "agent_signature_bundle"),
    "bundle_deep": ('{"a": [1, {"b": "\\ud800"}]}', "agent_signature_bundle.a[1].b"),
    "scheme": ("3000000000", "agent_signature_scheme"),
}


def _poisoned_body(index: int, kind: str) -> tuple[uuid.UUID, str]:
    """A validly signed event, with the poison put in an unsigned field."""
    event = kit.event(900_000 + index)
    wire = event.to_wire()
    field = "agent_signature_scheme" if kind == "scheme" else "agent_signature_bundle"
    wire[field] = "MARKER"
    text = json.dumps({"agentId": str(kit.AGENT_ID), "events": [wire]})
    return event.event_id, text.replace('"MARKER"', POISONS[kind][0])


@pytest.mark.parametrize("kind", sorted(POISONS))
async def test_poisoned_batches_fail_alone_and_every_good_batch_gets_receipts(
    api: Api, kind: str
) -> None:
    await api.register_agent()
    good_events: list[list[Any]] = [
        [kit.event(w * 1000 + r * 10 + i) for i in range(BATCH)]
        for w in range(GOOD_CLIENTS)
        for r in range(ROUNDS)
    ]
    poisoned: list[dict[str, Any]] = []
    poisoned_ids: list[uuid.UUID] = []

    async def good(batches: list[list[Any]]) -> list[dict[str, Any]]:
        bodies = []
        for batch in batches:
            response = await api.ingest(batch)
            assert response.status_code == 200, response.text
            bodies.append(response.json())
        return bodies

    async def poison(client: int) -> None:
        for r in range(ROUNDS):
            event_id, body = _poisoned_body(client * 100 + r, kind)
            poisoned_ids.append(event_id)
            response = await api.client.post(
                INGEST,
                content=body,
                headers={**api.headers(), "content-type": "application/json"},
            )
            poisoned.append({"status": response.status_code, **response.json()})

    per_client = [good_events[w * ROUNDS : (w + 1) * ROUNDS] for w in range(GOOD_CLIENTS)]
    results = await asyncio.gather(
        *(good(batches) for batches in per_client), *(poison(c) for c in range(POISON_CLIENTS))
    )
    answers = [body for client in results[:GOOD_CLIENTS] if client for body in client]

    assert len(poisoned) == POISON_CLIENTS * ROUNDS
    for answer in poisoned:
        assert answer["status"] == 400, answer
        error = answer["error"]
        assert (error["code"], error["details"]["reason"]) == (
            "INVALID_FIELD_VALUE",
            "INVALID_FIELD",
        )
        assert POISONS[kind][1] in error["message"]
    sent = [e for batch in good_events for e in batch]
    assert sum(a["eventsAccepted"] for a in answers) == len(sent)
    receipts = {r["eventId"]: r["sequenceNumber"] for a in answers for r in a["receipts"]}
    assert set(receipts) == {str(e.event_id) for e in sent}
    # Gap-free from 1, and the store holds exactly the good events.
    assert sorted(receipts.values()) == list(range(1, len(sent) + 1))
    assert await api.store.head(kit.STREAM) == len(sent)
    stored = await api.store.read_range(kit.STREAM, 1, len(sent) + 10)
    assert {s.envelope.event_id for s in stored} == {e.event_id for e in sent}
    for event_id in poisoned_ids:
        assert await api.store.get_event(event_id) is None

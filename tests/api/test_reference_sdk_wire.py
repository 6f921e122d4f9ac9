"""Our server driven with the wire bodies the reference's Python SDK (0.8.x) sends and the
fields it reads back (REFERENCE_DELTA §7, restated in docs/COMPATIBILITY.md).

The envelopes are built here by hand, with hashlib and the ``cryptography`` package, the
way that SDK builds them: snake_case fields, ``0x`` hex, ``created_at`` with milliseconds
and ``Z``, ``command_id``/``base_version`` only when given. Nothing in this file signs
through our ``ves`` package, so a slip there cannot hide itself; the hand-written signing
hash is first held to the reference's published V2 vector.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.api.conftest import Api, MakeApi

both_backends = pytest.mark.parametrize("backend", ["sqlite", "postgres"])

TENANT = uuid.UUID("5d9c63c4-2a1f-4c0e-9a57-1d8b1f0e6a01")
STORE = uuid.UUID("0b7e3c52-91d4-4f3a-8c6e-2f4a9d1b7c02")
AGENT = uuid.UUID("7f1e2d3c-4b5a-4968-8776-a5b4c3d2e103")
SEED = bytes([7]) * 32
ZERO32 = bytes(32)

# --- the SDK's recipes, written out -------------------------------------------------------


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def v1_hash(version: int, e: dict[str, Any]) -> bytes:
    return hashlib.sha256(
        b"VES_EVENTSIG_V1"
        + struct.pack(">I", version)
        + uuid.UUID(e["tenant_id"]).bytes
        + uuid.UUID(e["store_id"]).bytes
        + uuid.UUID(e["event_id"]).bytes
        + uuid.UUID(e["source_agent_id"]).bytes
        + struct.pack(">I", e["agent_key_id"])
        + _str(e["entity_type"])
        + _str(e["entity_id"])
        + _str(e["event_type"])
        + _str(e["created_at"])
        + struct.pack(">I", e["payload_kind"])
        + bytes.fromhex(e["payload_plain_hash"][2:])
        + bytes.fromhex(e["payload_cipher_hash"][2:])
    ).digest()


def signing_hash(e: dict[str, Any]) -> bytes:
    version = e["ves_version"]
    if version == 1:
        return v1_hash(1, e)
    command = b"\x00"
    if e.get("command_id") is not None:
        command = b"\x01" + uuid.UUID(e["command_id"]).bytes
    base = b"\x00"
    if e.get("base_version") is not None:
        base = b"\x01" + struct.pack(">Q", e["base_version"])
    return hashlib.sha256(b"VES_EVENTSIG_V2" + v1_hash(2, e) + command + base).digest()


def canonical(payload: Any) -> bytes:
    # RFC 8785 for the payloads used here (ASCII keys, integers, short strings, one
    # float that prints the same in both): sorted keys, no whitespace, raw UTF-8.
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def plain_hash(payload: Any) -> bytes:
    return hashlib.sha256(b"VES_PAYLOAD_PLAIN_V1" + canonical(payload)).digest()


def create_event(
    version: int,
    entity_type: str,
    entity_id: str,
    event_type: str,
    payload: dict[str, Any],
    *,
    command_id: uuid.UUID | None = None,
    base_version: int | None = None,
    key: Ed25519PrivateKey | None = None,
    created_at: str = "2026-12-02T10:00:00.000Z",
) -> dict[str, Any]:
    """``SequencerClient.create_event``: the envelope, signed, as the SDK sends it."""
    event: dict[str, Any] = {
        "ves_version": version,
        "event_id": str(uuid.uuid4()),
        "tenant_id": str(TENANT),
        "store_id": str(STORE),
        "source_agent_id": str(AGENT),
        "agent_key_id": 1,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "event_type": event_type,
        "created_at": created_at,
        "payload_kind": 0,
        "payload": payload,
        "payload_plain_hash": "0x" + plain_hash(payload).hex(),
        "payload_cipher_hash": "0x" + ZERO32.hex(),
    }
    if command_id is not None:
        event["command_id"] = str(command_id)
    if base_version is not None:
        event["base_version"] = base_version
    signer = key or Ed25519PrivateKey.from_private_bytes(SEED)
    event["agent_signature"] = "0x" + signer.sign(signing_hash(event)).hex()
    return event


def test_the_hand_written_recipes_give_the_reference_vectors() -> None:
    ones = "11111111-1111-4111-8111-111111111111"
    vector = {
        "ves_version": 2,
        "tenant_id": ones,
        "store_id": ones,
        "event_id": ones,
        "source_agent_id": ones,
        "agent_key_id": 1,
        "entity_type": "order",
        "entity_id": "o1",
        "event_type": "order.created",
        "created_at": "2026-09-05T00:00:00Z",
        "payload_kind": 0,
        "payload_plain_hash": "0x" + ZERO32.hex(),
        "payload_cipher_hash": "0x" + ZERO32.hex(),
        "command_id": ones,
        "base_version": 0,
    }
    assert (
        signing_hash(vector).hex()
        == "27dee9ebd0747eafc2b08121f144343627dfe1829a06f818eb23f0c50e048cc5"
    )
    assert (
        signing_hash({**vector, "ves_version": 1}).hex()
        == "efcbd708d5898ba0b5d737f788e7259740e43992b6f6377d2aa373a0e6938bfb"
    )
    assert (
        plain_hash({"approved": True, "amount": 12.5, "note": "café"}).hex()
        == "89e1d898d457b0706a7313f80f856f17d5f048c64b49c672a5bbffe2e7bb0e43"
    )
    sig = Ed25519PrivateKey.from_private_bytes(SEED).sign(signing_hash(vector))
    assert sig.hex().startswith("3a80f7d61f52d502")


# --- the SDK's HTTP calls ------------------------------------------------------------------


class Sdk:
    """The SDK's requests: its headers, paths, query names and bodies."""

    def __init__(self, client: httpx.AsyncClient, api_key: str) -> None:
        self.client = client
        self.headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Authorization": f"ApiKey {api_key}",
        }
        self.stream = {"tenant_id": str(TENANT), "store_id": str(STORE)}

    async def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> httpx.Response:
        content = None if body is None else json.dumps(body).encode()
        return await self.client.request(
            method, path, params=params, content=content, headers=self.headers
        )

    async def ingest(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        response = await self.call(
            "POST", "/api/v1/ves/events/ingest", body={"agentId": str(AGENT), "events": events}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.call("GET", path, params={**self.stream, **params})
        assert response.status_code == 200, (path, response.text)
        body: dict[str, Any] = response.json()
        return body


def rejection_for(result: dict[str, Any], event: dict[str, Any]) -> dict[str, Any] | None:
    """``record_action``'s lookup: the rejection whose ``event_id`` (or ``eventId``) is
    the event's."""
    for item in result.get("rejections") or []:
        if (item.get("event_id") or item.get("eventId")) == event["event_id"]:
            found: dict[str, Any] = item
            return found
    return None


async def setup(api: Api) -> Sdk:
    """What an operator does before the SDK runs: register the agent's public key and
    give the agent a write key of its own."""
    public = Ed25519PrivateKey.from_private_bytes(SEED).public_key().public_bytes_raw()
    registered = await api.client.post(
        "/api/v1/agents/keys",
        json={
            "tenantId": str(TENANT),
            "agentId": str(AGENT),
            "keyId": 1,
            "publicKey": "0x" + public.hex(),
        },
        headers=api.headers(),
    )
    assert registered.status_code == 200, registered.text
    key = await api.key(TENANT, write=True, agent_id=AGENT, store_ids=(STORE,))
    return Sdk(api.client, key)


@both_backends
async def test_ingest_replay_and_reads(make_api: MakeApi, backend: str) -> None:
    api = await make_api(backend)
    sdk = await setup(api)
    command = uuid.uuid4()
    v1 = create_event(1, "order", "ord/1", "order.created", {"total": 10})
    v2 = create_event(
        2, "order", "ord/1", "order.updated", {"total": 12}, command_id=command, base_version=1
    )
    first = await sdk.ingest([v1])
    assert first["receipts"][0]["sequenceNumber"] == 1 and rejection_for(first, v1) is None
    second = await sdk.ingest([v2])
    assert second["receipts"][0]["sequenceNumber"] == 2 and rejection_for(second, v2) is None

    # The SDK retries by sending the same signed bytes: the stored receipt comes back.
    again = await sdk.ingest([v2])
    assert again["receipts"] == second["receipts"] and again["eventsAccepted"] == 0

    assert await sdk.get("/api/v1/ves/head") == {"head_sequence": 2}
    page = await sdk.get("/api/v1/ves/events", **{"from": 1, "limit": 100})
    assert (page["count"], page["next_sequence"], page["head_sequence"]) == (2, 3, 2)
    assert page["has_more"] is False
    envelopes = [item["envelope"] for item in page["events"]]
    assert [e["sequence_number"] for e in envelopes] == [1, 2]
    stored = envelopes[1]
    for name in ("ves_version", "command_id", "base_version", "agent_signature", "created_at"):
        assert stored[name] == v2[name], name
    assert "command_id" not in envelopes[0] and "sequenced_at" in stored

    # wait_for_event's walk: next_sequence, one event at a time.
    walked, start = [], 1
    while True:
        step = await sdk.get("/api/v1/ves/events", **{"from": start, "limit": 1})
        if not step["events"]:
            break
        walked.append(step["events"][0]["envelope"]["event_id"])
        start = step["next_sequence"]
    assert walked == [v1["event_id"], v2["event_id"]]

    # quote(..., safe=''): the slash in the entity id arrives as %2F.
    path = f"/api/v1/ves/entities/{quote('order', safe='')}/{quote('ord/1', safe='')}"
    history = await sdk.get(path, **{"from": 0, "limit": 100})
    assert (history["entity_type"], history["entity_id"]) == ("order", "ord/1")
    assert (history["count"], history["total"], history["current_version"]) == (2, 2, 2)
    assert history["has_more"] is False
    assert [i["envelope"]["event_id"] for i in history["events"]] == [
        v1["event_id"],
        v2["event_id"],
    ]


@both_backends
async def test_cursor_acknowledge(make_api: MakeApi, backend: str) -> None:
    api = await make_api(backend)
    sdk = await setup(api)
    await sdk.ingest(
        [create_event(2, "order", f"o{i}", "order.created", {"i": i}) for i in range(3)]
    )
    path = f"/api/v1/ves/cursors/{AGENT}"
    empty = await sdk.get(path)
    assert empty["acknowledgedSequence"] == 0 and empty["headSequence"] == 3
    assert empty["lag"] == 3 and empty["agentId"] == str(AGENT)
    body = {"tenantId": str(TENANT), "storeId": str(STORE), "sequenceNumber": 2}
    acked = await sdk.call("PUT", path, body=body)
    assert acked.status_code == 200, acked.text
    assert (acked.json()["acknowledgedSequence"], acked.json()["lag"]) == (2, 1)
    older = await sdk.call("PUT", path, body={**body, "sequenceNumber": 1})
    assert older.status_code == 200 and older.json()["acknowledgedSequence"] == 2
    past_head = await sdk.call("PUT", path, body={**body, "sequenceNumber": 4})
    assert past_head.status_code == 400
    assert (await sdk.get(path))["acknowledgedSequence"] == 2


@both_backends
async def test_policy_set_get_and_enforced(make_api: MakeApi, backend: str) -> None:
    api = await make_api(backend)
    sdk = await setup(api)
    admin = Sdk(api.client, await api.key(TENANT, admin=True))
    path = f"/api/v1/agents/{AGENT}/policy"
    policy = {
        "allowedEventTypes": ["order.*"],
        "allowedEntityTypes": ["order"],
        "requireBaseVersion": True,
        "maxPayloadBytes": 1024,
        "enabled": True,
    }
    missing = await admin.call("GET", path, params={"tenant_id": str(TENANT)})
    assert missing.status_code == 404
    put = await admin.call("PUT", path, body={**policy, "tenantId": str(TENANT)})
    assert put.status_code == 200, put.text
    got = await admin.call("GET", path, params={"tenant_id": str(TENANT)})
    assert got.status_code == 200
    expected = {**policy, "tenantId": str(TENANT), "agentId": str(AGENT)}
    # Every field of the reference's AgentEventPolicy, as sent; we add the two timestamps.
    assert {k: v for k, v in got.json().items() if k in expected} == expected
    # The agent's own key is not an admin: it may not change its own policy.
    denied = await sdk.call("PUT", path, body={**policy, "tenantId": str(TENANT)})
    assert denied.status_code == 403

    allowed = create_event(2, "order", "o1", "order.created", {"n": 1})
    wrong_type = create_event(2, "order", "o2", "invoice.created", {"n": 2})
    no_base = create_event(2, "order", "o1", "order.updated", {"n": 3})
    result = await sdk.ingest([allowed, wrong_type, no_base])
    assert result["eventsAccepted"] == 1 and result["headSequence"] == 1
    assert rejection_for(result, allowed) is None
    refused = rejection_for(result, wrong_type)
    assert refused is not None
    assert refused["message"] == "event type is not allowed for this agent: invoice.created"
    base = rejection_for(result, no_base)
    assert base is not None
    assert base["message"] == "base_version is required when modifying an existing entity"


@both_backends
async def test_projection(make_api: MakeApi, backend: str) -> None:
    api = await make_api(backend, PROJECTION_POLL_INTERVAL_MS=20)
    sdk = await setup(api)
    await sdk.ingest(
        [
            create_event(2, "order", "o1", "order.created", {"status": "new", "total": 5}),
            create_event(2, "order", "o1", "order.paid", {"status": "paid"}, base_version=1),
        ]
    )
    path = "/api/v1/projections/order/o1"
    for _ in range(500):  # the worker folds in the background; wait on the outcome
        response = await sdk.call("GET", path, params={**sdk.stream, "source": "ves"})
        if response.status_code == 200 and response.json()["version"] == 2:
            break
        await asyncio.sleep(0.02)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["document"] == {"status": "paid", "total": 5}
    assert (body["entity_type"], body["entity_id"], body["source"]) == ("order", "o1", "ves")
    assert (body["tenant_id"], body["store_id"]) == (str(TENANT), str(STORE))
    nothing = await sdk.call("GET", "/api/v1/projections/order/none", params=sdk.stream)
    assert nothing.status_code == 404

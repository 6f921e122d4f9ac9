"""``POST /api/v1/ves/events/ingest`` over HTTP: the reference's wire format byte for byte,
and every kind of bad input answered with its precise status and code, the store unchanged.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest

from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import hashing
from stateset_sequencer.ves.signing import Receipt, verify_receipt
from tests.api.conftest import Api, MakeApi

# A request body written out as REFERENCE_MAP §4.1 shows it (camelCase wrapper, snake_case
# envelope, 0x hex), carrying ves_sig_1's full_signing_test event and the values the
# vectors give for it. Nothing here is produced by our own serialiser.
REFERENCE_BODY = """{
  "agentId": "22222222-2222-2222-2222-222222222222",
  "events": [{
    "ves_version": 1,
    "event_id": "11111111-1111-1111-1111-111111111111",
    "tenant_id": "00000000-0000-0000-0000-000000000001",
    "store_id": "00000000-0000-0000-0000-000000000002",
    "source_agent_id": "22222222-2222-2222-2222-222222222222",
    "agent_key_id": 1,
    "entity_type": "InventoryItem",
    "entity_id": "WIDGET-001",
    "event_type": "Adjusted",
    "created_at": "2025-01-01T00:00:00Z",
    "payload_kind": 0,
    "payload": {"delta": 100, "reason": "test"},
    "payload_plain_hash": "0x815ab060b3f26dacf429ce062f8befb81f52938e692010255f86d12c3e4c2cda",
    "payload_cipher_hash": "0x0000000000000000000000000000000000000000000000000000000000000000",
    "agent_signature": "SIGNATURE",
    "sequence_number": 999,
    "unknown_future_field": {"ignored": true}
  }]
}""".replace(
    "SIGNATURE",
    "0xa0478a20df91042a3a3cf4388553875e6ef488aaae9726cffb9968e352cbd12"
    "14fd6b13d77b19fd29b4584743984aa96a90183a41f89e09ddfbfbcc837f9b00a",
)
REF_TENANT = uuid.UUID(int=1)
REF_STORE = uuid.UUID(int=2)
REF_AGENT = uuid.UUID("22222222-2222-2222-2222-222222222222")
REF_EVENT = uuid.UUID("11111111-1111-1111-1111-111111111111")
REF_PUBLIC_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
REF_SIGNING_HASH = "4dd87d2bff38574cdc3e61e9aea0cbc4109eaf2962f3894f3d82431082343ff6"
INGEST = "/api/v1/ves/events/ingest"


async def _post(api: Api, body: str | bytes, key: str | None = None) -> Any:
    return await api.client.post(
        INGEST,
        content=body,
        headers={**api.headers(*(k for k in [key] if k)), "content-type": "application/json"},
    )


async def test_reference_wire_body_is_sequenced_and_replayed(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/agents/keys",
        json={
            "tenantId": str(REF_TENANT),
            "agentId": str(REF_AGENT),
            "keyId": 1,
            "publicKey": REF_PUBLIC_KEY,
        },
        headers=api.headers(),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "tenantId": str(REF_TENANT),
        "agentId": str(REF_AGENT),
        "keyId": 1,
        "keyAlgorithm": 1,
        "message": "Agent key registered",
    }

    first = await _post(api, REFERENCE_BODY)
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {
        "batchId",
        "eventsAccepted",
        "eventsRejected",
        "sequenceStart",
        "sequenceEnd",
        "headSequence",
        "receipts",
    }  # empty rejections are omitted, as the reference omits them
    assert (body["eventsAccepted"], body["eventsRejected"]) == (1, 0)
    assert (body["sequenceStart"], body["sequenceEnd"], body["headSequence"]) == (1, 1, 1)
    (wire,) = body["receipts"]
    assert set(wire) == {
        "sequencerId",
        "eventId",
        "sequenceNumber",
        "sequencedAt",
        "receiptHash",
        "signatureAlg",
        "sequencerSignature",
        "sequencerKeyVersion",
    }
    assert not wire["receiptHash"].startswith("0x") and wire["signatureAlg"] == "ed25519"
    receipt = Receipt.from_wire(wire)
    assert receipt.sequence_number == 1  # the client's sequence_number is ignored
    verify_receipt(
        receipt,
        tenant_id=REF_TENANT,
        store_id=REF_STORE,
        event_signing_hash=bytes.fromhex(REF_SIGNING_HASH),
        sequencer_public_key=api.services.sequencer.receipt_signer.public_key,
    )
    assert (
        wire["receiptHash"]
        == hashing.receipt_hash(
            REF_TENANT, REF_STORE, REF_EVENT, 1, bytes.fromhex(REF_SIGNING_HASH)
        ).hex()
    )

    again = await _post(api, REFERENCE_BODY)
    assert again.status_code == 200
    replay = again.json()
    assert (replay["eventsAccepted"], replay["headSequence"]) == (0, 1)
    assert replay["receipts"] == [wire]  # the stored receipt, byte for byte

    stored = await api.client.get(f"/api/v1/ves/events/{REF_EVENT}", headers=api.headers())
    assert stored.status_code == 200
    item = stored.json()["event"]
    sent = json.loads(REFERENCE_BODY)["events"][0]
    for name in ("created_at", "payload", "payload_plain_hash", "agent_signature", "entity_id"):
        assert item[name] == sent[name]
    assert item["sequence_number"] == 1 and "unknown_future_field" not in item


async def test_per_event_rejections_come_back_in_a_200(api: Api) -> None:
    await api.register_agent()
    good = kit.event(1)
    forged = kit.event(2).model_copy(update={"agent_signature": bytes(64)})
    response = await api.ingest([good, forged])
    assert response.status_code == 200
    body = response.json()
    assert (body["eventsAccepted"], body["eventsRejected"]) == (1, 1)
    assert body["rejections"] == [
        {
            "event_id": str(forged.event_id),
            "reason": "invalid_signature",
            "message": "Agent signature does not verify",
        }
    ]


def _wire_event(**changes: Any) -> dict[str, Any]:
    wire = kit.event(7).to_wire()
    wire.update(changes)
    return {key: value for key, value in wire.items() if value is not _DROP}


_DROP = object()


def _body(events: list[Any], agent: Any = str(kit.AGENT_ID)) -> str:
    return json.dumps({"agentId": agent, "events": events})


# (name, body text, status, code, reason or None)
BAD_BODIES: list[tuple[str, str, int, str, str | None]] = [
    ("malformed JSON", '{"agentId": ', 400, "INVALID_REQUEST_BODY", None),
    ("NaN literal", '{"agentId": NaN, "events": []}', 400, "INVALID_REQUEST_BODY", None),
    ("not an object", "[1, 2]", 422, "INVALID_REQUEST_BODY", None),
    ("missing agentId", '{"events": []}', 422, "MISSING_REQUIRED_FIELD", None),
    (
        "missing events",
        json.dumps({"agentId": str(kit.AGENT_ID)}),
        422,
        "MISSING_REQUIRED_FIELD",
        None,
    ),
    ("agentId not a UUID", _body([], agent="agent-7"), 422, "INVALID_FIELD_VALUE", None),
    ("agentId a number", _body([], agent=7), 422, "INVALID_FIELD_VALUE", None),
    (
        "events an object",
        json.dumps({"agentId": str(kit.AGENT_ID), "events": {}}),
        422,
        "INVALID_FIELD_VALUE",
        None,
    ),
    ("event not an object", _body(["x"]), 422, "INVALID_FIELD_VALUE", None),
    (
        "false is not an integer",
        _body([_wire_event(agent_key_id=False)]),
        422,
        "INVALID_FIELD_VALUE",
        None,
    ),
    ("string version", _body([_wire_event(ves_version="1")]), 422, "INVALID_FIELD_VALUE", None),
    ("negative key id", _body([_wire_event(agent_key_id=-1)]), 422, "INVALID_FIELD_VALUE", None),
    ("key id over u32", _body([_wire_event(agent_key_id=2**32)]), 422, "INVALID_FIELD_VALUE", None),
    ("payload_kind 2", _body([_wire_event(payload_kind=2)]), 422, "INVALID_FIELD_VALUE", None),
    (
        "event_id not a UUID",
        _body([_wire_event(event_id="not-a-uuid")]),
        422,
        "INVALID_FIELD_VALUE",
        None,
    ),
    (
        "bad hex hash",
        _body([_wire_event(payload_plain_hash="0xzz")]),
        422,
        "INVALID_FIELD_VALUE",
        None,
    ),
    (
        "short signature",
        _body([_wire_event(agent_signature="0x" + "ab" * 63)]),
        422,
        "INVALID_FIELD_VALUE",
        None,
    ),
    (
        "missing signature",
        _body([_wire_event(agent_signature=_DROP)]),
        422,
        "MISSING_REQUIRED_FIELD",
        None,
    ),
    ("empty batch", _body([]), 400, "INVALID_FIELD_VALUE", "EMPTY_BATCH"),
    (
        "source agent differs",
        _body([_wire_event(source_agent_id=str(uuid.uuid4()))]),
        400,
        "INVALID_FIELD_VALUE",
        "AGENT_MISMATCH",
    ),
    (
        "entity_type too long",
        _body([_wire_event(entity_type="x" * 129)]),
        400,
        "INVALID_FIELD_VALUE",
        "INVALID_FIELD",
    ),
    (
        "empty entity_id",
        _body([_wire_event(entity_id="")]),
        400,
        "INVALID_FIELD_VALUE",
        "INVALID_FIELD",
    ),
    (
        "null payload",
        _body([_wire_event(payload=None)]),
        400,
        "INVALID_FIELD_VALUE",
        "MISSING_PAYLOAD",
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "status", "code", "reason"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_bodies(
    sqlite_api: Api, name: str, text: str, status: int, code: str, reason: str | None
) -> None:
    api = sqlite_api
    await api.register_agent()
    before = await kit.snapshot(api.store)
    response = await _post(api, text)
    assert response.status_code == status, (name, response.text)
    error = response.json()["error"]
    assert (error["code"], response.headers["x-error-code"]) == (code, code)
    assert error["numeric_code"] > 1000 and error["message"]
    assert error.get("details", {}).get("reason") == reason
    assert error["request_id"] == response.headers["x-request-id"]
    assert await kit.snapshot(api.store) == before


async def test_mixed_streams_and_foreign_tenant_refused(api: Api) -> None:
    await api.register_agent()
    other = StreamKey(kit.TENANT, uuid.uuid4())
    before = await kit.snapshot(api.store, [kit.STREAM, other])
    mixed = await api.ingest([kit.event(1), kit.event(2, stream=other)])
    assert mixed.status_code == 400
    assert mixed.json()["error"]["details"]["reason"] == "MIXED_STREAM"

    reader = await api.key(write=False)
    refused = await api.ingest([kit.event(3)], key=reader)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "INSUFFICIENT_PERMISSIONS"

    foreign = await api.key(uuid.uuid4(), write=True)
    cross = await api.ingest([kit.event(4)], key=foreign)
    assert cross.status_code == 403
    assert cross.json()["error"]["details"]["reason"] == "tenant_access_denied"
    assert await kit.snapshot(api.store, [kit.STREAM, other]) == before


async def test_size_limits(make_api: MakeApi) -> None:
    api = await make_api(
        "sqlite", MAX_EVENTS_PER_BATCH=3, MAX_EVENT_PAYLOAD_SIZE=200, MAX_BODY_SIZE_BYTES=20_000
    )
    await api.register_agent()
    before = await kit.snapshot(api.store)

    too_many = await api.ingest([kit.event(i) for i in range(4)])
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "BATCH_TOO_LARGE"

    fat = kit.event(1, payload={"blob": "x" * 300})
    too_fat = await api.ingest([fat])
    assert too_fat.status_code == 413
    assert too_fat.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert too_fat.json()["error"]["details"]["reason"] == "PAYLOAD_TOO_LARGE"

    huge = _body([_wire_event(payload={"blob": "x" * 30_000})])
    too_big = await _post(api, huge)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["details"]["reason"] == "BODY_TOO_LARGE"
    assert too_big.headers["x-content-type-options"] == "nosniff"

    async def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        for _ in range(30):
            yield b" " * 1000

    streamed = await api.client.post(
        INGEST, content=chunks(), headers={**api.headers(), "content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert await kit.snapshot(api.store) == before


async def test_strict_format_refuses_bare_hex(make_api: MakeApi) -> None:
    api = await make_api("sqlite", VES_STRICT_FORMAT_VALIDATION="true")
    await api.register_agent()
    bare = _wire_event(payload_plain_hash=_wire_event()["payload_plain_hash"][2:])
    response = await _post(api, _body([bare]))
    assert response.status_code == 422
    assert "payload_plain_hash" in response.json()["error"]["message"]
    ok = await _post(api, _body([_wire_event()]))
    assert ok.status_code == 200 and ok.json()["eventsAccepted"] == 1


async def test_nul_in_a_text_field_is_refused_on_both_stores(api: Api) -> None:
    # PostgreSQL text cannot hold NUL; both stores refuse it the same way, before writing.
    await api.register_agent()
    before = await kit.snapshot(api.store)
    response = await api.ingest([kit.event(1, entity_id="ORD\x00-1")])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["reason"] == "INVALID_FIELD"
    assert await kit.snapshot(api.store) == before


async def test_store_scoped_admin_sees_and_revokes_only_keys_within_its_stores(api: Api) -> None:
    mine = uuid.uuid4()
    scoped_admin = await api.key(admin=True, store_ids=(mine,))
    await api.key(store_ids=(mine,))
    wide = await api.key()  # every store of the tenant
    listed = await api.client.get(
        "/api/v1/admin/api-keys",
        params={"tenant_id": str(kit.TENANT)},
        headers=api.headers(scoped_admin),
    )
    assert listed.status_code == 200
    assert all(k["storeIds"] == [str(mine)] for k in listed.json()["keys"])
    prefix = hashlib.sha256(wide.encode()).hexdigest()[:16]
    refused = await api.client.delete(
        f"/api/v1/admin/api-keys/{prefix}", headers=api.headers(scoped_admin)
    )
    assert refused.status_code == 404
    still = await api.client.get("/health/detailed", headers=api.headers(wide))
    assert still.status_code == 403  # the wide key still authenticates (and is not admin)


async def test_streamed_body_over_the_limit_on_a_model_route_is_413(make_api: MakeApi) -> None:
    api = await make_api("sqlite", MAX_JSON_BODY_BYTES=2_000)

    async def chunks() -> Any:  # no Content-Length, so only the streaming limit can act
        yield b'{"tenantId": "' + str(kit.TENANT).encode() + b'", "agentId": "'
        for _ in range(10):
            yield b"x" * 500

    response = await api.client.post(
        "/api/v1/agents/keys",
        content=chunks(),
        headers={**api.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["details"] == {"reason": "BODY_TOO_LARGE", "limit_bytes": 2000}
    assert "MAX_JSON_BODY_BYTES" in response.json()["error"]["message"]
    assert await api.store.list_agent_keys(kit.TENANT) == []

"""Commitments and inclusion proofs over HTTP on both backends: the golden example's roots
and proofs, the chain rules, every refusal with its status and reason and the store left
as it was, another tenant's requests, forged proofs, and the anchor service's routes.

A 1000-event stream's proofs are checked with the project's verifier and with one written
here from the rules alone (VES_PROTOCOL §6.2, the reference SDK's local check)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import pytest

from stateset_sequencer.store.records import StreamKey
from stateset_sequencer.testing import kit
from stateset_sequencer.ves import merkle
from tests.api.conftest import ADMIN_KEY, Api
from tests.api.test_auth import api_error

VES = "/api/v1/ves"
GOLDEN_TENANT = uuid.UUID("00000000-0000-0000-0000-000000000001")
GOLDEN_STORE = uuid.UUID("00000000-0000-0000-0000-000000000002")
GOLDEN_STREAM = StreamKey(GOLDEN_TENANT, GOLDEN_STORE)
OTHER_TENANT = uuid.UUID("00000000-0000-0000-0000-0000000000a2")
SHAPE = {
    "batch_id",
    "tenant_id",
    "store_id",
    "ves_version",
    "tree_depth",
    "leaf_count",
    "padded_leaf_count",
    "merkle_root",
    "prev_state_root",
    "new_state_root",
    "sequence_start",
    "sequence_end",
    "committed_at",
    "chain_id",
    "chain_tx_hash",
    "chain_block_number",
    "anchored_at",
    "is_anchored",
}


def stream_query(stream: StreamKey = kit.STREAM) -> dict[str, str]:
    return {"tenant_id": str(stream.tenant_id), "store_id": str(stream.store_id)}


async def commit(
    api: Api, start: Any, end: Any, stream: StreamKey = kit.STREAM, key: str = ADMIN_KEY
) -> httpx.Response:
    body = {
        "tenant_id": str(stream.tenant_id),
        "store_id": str(stream.store_id),
        "sequence_start": start,
        "sequence_end": end,
    }
    return await api.client.post(f"{VES}/commitments", json=body, headers=api.headers(key))


async def proof(
    api: Api, seq: int, stream: StreamKey = kit.STREAM, key: str = ADMIN_KEY, **extra: str
) -> httpx.Response:
    return await api.client.get(
        f"{VES}/proofs/{seq}", params=stream_query(stream) | extra, headers=api.headers(key)
    )


async def verify(api: Api, body: dict[str, Any]) -> httpx.Response:
    return await api.client.post(f"{VES}/proofs/verify", json=body, headers=api.headers())


async def ingest(api: Api, count: int) -> None:
    await api.register_agent()
    for first in range(0, count, 500):
        events = [kit.event(i) for i in range(first, min(first + 500, count))]
        response = await api.ingest(events)
        assert response.status_code == 200, response.text
        assert response.json()["eventsAccepted"] == len(events), response.text


async def golden_stream(api: Api, golden: dict[str, Any]) -> None:
    g = golden["golden_example"]
    response = await api.client.post(
        "/api/v1/agents/keys",
        json={
            "tenantId": str(GOLDEN_TENANT),
            "agentId": g["events"][0]["source_agent_id"],
            "keyId": 1,
            "publicKey": "0x" + g["public_key"],
        },
        headers=api.headers(),
    )
    assert response.status_code == 200, response.text
    wire = [{k: v for k, v in ev.items() if not k.startswith("_")} for ev in g["events"]]
    sent = await api.client.post(
        f"{VES}/events/ingest",
        json={"agentId": wire[0]["source_agent_id"], "events": wire},
        headers=api.headers(),
    )
    assert sent.status_code == 200 and sent.json()["eventsAccepted"] == len(wire), sent.text


def independent_check(proof: dict[str, Any], root_hex: str, leaf_hex: str) -> bool:
    """The reference SDK's local rules, written out without the project's code."""
    if proof["merkle_root"] != root_hex or proof["leaf_hash"] != leaf_hex:
        return False
    path, directions, index = proof["proof_path"], proof["directions"], proof["leaf_index"]
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 2**53:
        return False
    if not isinstance(path, list) or len(path) > 64 or len(directions) != len(path):
        return False
    current = bytes.fromhex(leaf_hex)
    for sibling_hex, direction in zip(path, directions, strict=True):
        left = index % 2 == 0
        if direction is not left:
            return False
        sibling = bytes.fromhex(sibling_hex)
        pair = current + sibling if left else sibling + current
        current = hashlib.sha256(b"VES_NODE_V1" + pair).digest()
        index //= 2
    return index == 0 and current.hex() == root_hex


# --- the golden example ---------------------------------------------------------------------


async def test_the_golden_events_commit_to_the_golden_roots_and_proofs(
    api: Api, golden: dict[str, Any]
) -> None:
    await golden_stream(api, golden)
    g = golden["golden_example"]
    first = await commit(api, 1, 3, GOLDEN_STREAM)
    assert first.status_code == 200, first.text
    one = first.json()
    assert set(one) == SHAPE and one["is_anchored"] is False and one["chain_tx_hash"] is None
    for name in ("leaf_count", "padded_leaf_count", "tree_depth", "merkle_root"):
        assert one[name] == g["batch1"][name], name
    assert (one["prev_state_root"], one["new_state_root"]) == (
        g["batch1"]["prev_state_root"],
        g["batch1"]["new_state_root"],
    )
    again = await commit(api, 1, 3, GOLDEN_STREAM)
    assert again.status_code == 200 and again.json() == one  # the stored one, not a new one

    second = (await commit(api, 4, 5, GOLDEN_STREAM)).json()
    assert second["prev_state_root"] == one["new_state_root"] == g["batch2"]["prev_state_root"]
    assert second["new_state_root"] == g["batch2"]["new_state_root"]
    assert second["merkle_root"] == g["batch2"]["merkle_root"]

    for expected in g["batch1"]["proofs"]:
        seq = expected["leaf_index"] + 1
        for extra in ({}, {"batch_id": one["batch_id"]}):
            got = (await proof(api, seq, GOLDEN_STREAM, **extra)).json()
            assert got["batch_id"] == one["batch_id"] and got["sequence_number"] == seq
            for name in ("leaf_index", "leaf_hash", "proof_path", "directions"):
                assert got[name] == expected[name], (seq, name)
            assert got["merkle_root"] == one["merkle_root"]
        checked = await verify(api, got)  # the SDK sends the proof as it was given
        assert checked.status_code == 200 and checked.json()["valid"] is True

    event_id = g["events"][4]["event_id"]
    by_event = await api.client.get(f"{VES}/events/{event_id}/proof", headers=api.headers())
    assert by_event.status_code == 200, by_event.text
    assert by_event.json()["batch_id"] == second["batch_id"]
    assert by_event.json()["leaf_hash"] == g["events"][4]["_leaf_hash"]

    listed = await api.client.get(
        f"{VES}/commitments", params=stream_query(GOLDEN_STREAM), headers=api.headers()
    )
    assert [c["batch_id"] for c in listed.json()["commitments"]] == [
        one["batch_id"],
        second["batch_id"],
    ]
    fetched = await api.client.get(f"{VES}/commitments/{one['batch_id']}", headers=api.headers())
    assert fetched.json() == one


async def test_every_proof_of_a_1000_event_stream_verifies_both_ways(api: Api) -> None:
    await ingest(api, 1000)
    ranges = [(1, 600), (601, 1000)]
    roots = {}
    for start, end in ranges:
        made = await commit(api, start, end)
        assert made.status_code == 200, made.text
        roots[start] = made.json()
    assert roots[601]["prev_state_root"] == roots[1]["new_state_root"]
    events = await api.store.read_range(kit.STREAM, 1, 1000)
    for event in events:
        seq = event.sequence_number
        batch = roots[1] if seq <= 600 else roots[601]
        got = (await proof(api, seq)).json()
        leaf = hashlib.sha256(
            b"VES_LEAF_V1"
            + kit.TENANT.bytes
            + kit.STORE_ID.bytes
            + seq.to_bytes(8, "big")
            + event.event_signing_hash
            + event.envelope.agent_signature
        ).hexdigest()
        assert independent_check(got, batch["merkle_root"], leaf), seq
        assert len(got["proof_path"]) == batch["tree_depth"]
        merkle.verify_inclusion(
            bytes.fromhex(got["leaf_hash"]),
            bytes.fromhex(batch["merkle_root"]),
            [bytes.fromhex(p) for p in got["proof_path"]],
            got["leaf_index"],
        )


# --- the chain rules and bad input ----------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "status", "code", "reason"),
    [
        (3, 2, 400, "INVALID_FIELD_VALUE", "INVALID_RANGE"),  # inverted
        (2, 4, 400, "INVALID_FIELD_VALUE", "RANGE_NOT_NEXT"),  # overlaps 1..3
        (5, 5, 400, "INVALID_FIELD_VALUE", "RANGE_NOT_NEXT"),  # leaves a gap after 3
        (1, 2, 409, "ALREADY_EXISTS", "RANGE_CONFLICT"),  # 1 is committed up to 3
        (4, 9, 400, "INVALID_FIELD_VALUE", "EVENTS_MISSING"),  # past the head (5)
        (4, 4 + (1 << 20), 400, "INVALID_FIELD_VALUE", "RANGE_TOO_LARGE"),
    ],
)
async def test_bad_ranges_are_refused_and_write_nothing(
    api: Api, start: int, end: int, status: int, code: str, reason: str
) -> None:
    await ingest(api, 5)
    assert (await commit(api, 1, 3)).status_code == 200
    before = await kit.snapshot(api.store)
    api_error(await commit(api, start, end), status, code, reason)
    assert await kit.snapshot(api.store) == before


async def test_an_empty_stream_has_nothing_to_commit(api: Api) -> None:
    before = await kit.snapshot(api.store)
    api_error(await commit(api, 1, 1), 400, "INVALID_FIELD_VALUE", "EVENTS_MISSING")
    nothing = await api.client.get(
        f"{VES}/commitments", params=stream_query() | {"anchored": "any"}, headers=api.headers()
    )
    assert nothing.json() == {"commitments": [], "count": 0}
    assert await kit.snapshot(api.store) == before


@pytest.mark.parametrize(
    "body",
    [
        {"sequence_start": 0, "sequence_end": 1},
        {"sequence_start": -1, "sequence_end": 1},
        {"sequence_start": "1", "sequence_end": 2},
        {"sequence_start": 1.0, "sequence_end": 2},
        {"sequence_start": True, "sequence_end": 2},
        {"sequence_start": 1, "sequence_end": 2**63},
        {"sequence_start": 1},
        {"tenant_id": "nope", "sequence_start": 1, "sequence_end": 1},
    ],
)
async def test_wrongly_typed_bodies_are_refused(sqlite_api: Api, body: dict[str, Any]) -> None:
    await ingest(sqlite_api, 2)
    before = await kit.snapshot(sqlite_api.store)
    full = {"tenant_id": str(kit.TENANT), "store_id": str(kit.STORE_ID)} | body
    response = await sqlite_api.client.post(
        f"{VES}/commitments", json=full, headers=sqlite_api.headers()
    )
    assert response.status_code in (400, 422), response.text
    assert "Traceback" not in response.text and "pydantic" not in response.text.lower()
    assert await kit.snapshot(sqlite_api.store) == before


async def test_malformed_json_is_400(sqlite_api: Api) -> None:
    response = await sqlite_api.client.post(
        f"{VES}/commitments",
        content=b'{"tenant_id": ',
        headers=sqlite_api.headers() | {"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text


# --- who may ---------------------------------------------------------------------------------


async def test_another_tenant_sees_nothing(api: Api) -> None:
    await ingest(api, 3)
    batch = (await commit(api, 1, 3)).json()["batch_id"]
    outsider = await api.key(OTHER_TENANT, write=True, admin=True)
    before = await kit.snapshot(api.store)
    api_error(await commit(api, 4, 4, key=outsider), 403, "INSUFFICIENT_PERMISSIONS")
    denied = await api.client.get(f"{VES}/commitments/{batch}", headers=api.headers(outsider))
    api_error(denied, 403, "INSUFFICIENT_PERMISSIONS")
    assert batch not in denied.text and "merkle_root" not in denied.text
    api_error(await proof(api, 1, key=outsider), 403, "INSUFFICIENT_PERMISSIONS")
    listed = await api.client.get(
        f"{VES}/commitments", params=stream_query(), headers=api.headers(outsider)
    )
    api_error(listed, 403, "INSUFFICIENT_PERMISSIONS")
    event = (await api.store.read_range(kit.STREAM, 1, 1))[0]
    by_event = await api.client.get(
        f"{VES}/events/{event.envelope.event_id}/proof", headers=api.headers(outsider)
    )
    api_error(by_event, 404, "EVENT_NOT_FOUND")
    # Naming another stream's batch in one's own stream is refused too.
    own = StreamKey(OTHER_TENANT, kit.STORE_ID)
    crossed = await proof(api, 1, own, key=outsider, batch_id=batch)
    api_error(crossed, 403, "INSUFFICIENT_PERMISSIONS", "commitment_of_another_stream")
    assert await kit.snapshot(api.store) == before


async def test_a_read_key_may_read_but_not_commit(api: Api) -> None:
    await ingest(api, 2)
    reader = await api.key()
    api_error(await commit(api, 1, 2, key=reader), 403, "INSUFFICIENT_PERMISSIONS")
    assert (await commit(api, 1, 2)).status_code == 200
    assert (await proof(api, 2, key=reader)).status_code == 200


# --- proofs ----------------------------------------------------------------------------------


async def test_proofs_of_what_is_not_committed_are_clear_404s(api: Api) -> None:
    await ingest(api, 5)
    api_error(await proof(api, 1), 404, "RESOURCE_NOT_FOUND", "NOT_COMMITTED")
    batch = (await commit(api, 1, 3)).json()["batch_id"]
    api_error(await proof(api, 4), 404, "RESOURCE_NOT_FOUND", "NOT_COMMITTED")
    api_error(await proof(api, 99), 404, "RESOURCE_NOT_FOUND", "NOT_COMMITTED")
    outside = await proof(api, 4, batch_id=batch)
    api_error(outside, 400, "INVALID_FIELD_VALUE", "OUTSIDE_COMMITMENT")
    unknown = await proof(api, 1, batch_id=str(uuid.uuid4()))
    api_error(unknown, 404, "BATCH_NOT_FOUND", "COMMITMENT_NOT_FOUND")
    for bad in ("0", "-1", str(2**63), "x"):
        response = await api.client.get(
            f"{VES}/proofs/{bad}", params=stream_query(), headers=api.headers()
        )
        assert response.status_code == 400, (bad, response.text)
    missing = await api.client.get(f"{VES}/events/{uuid.uuid4()}/proof", headers=api.headers())
    api_error(missing, 404, "EVENT_NOT_FOUND")


async def test_forged_proofs_are_not_valid(sqlite_api: Api) -> None:
    api = sqlite_api
    await ingest(api, 6)
    await commit(api, 1, 6)
    honest = (await proof(api, 3)).json()
    assert (await verify(api, honest)).json()["valid"] is True

    def flipped(hex_text: str, bit: int) -> str:
        raw = bytearray(bytes.fromhex(hex_text))
        raw[bit // 8] ^= 1 << (bit % 8)
        return raw.hex()

    forgeries: list[dict[str, Any]] = []
    for bit in (0, 7, 100, 255):
        forgeries.append(honest | {"leaf_hash": flipped(honest["leaf_hash"], bit)})
        forgeries.append(honest | {"merkle_root": flipped(honest["merkle_root"], bit)})
        path = list(honest["proof_path"])
        path[bit % len(path)] = flipped(path[bit % len(path)], bit)
        forgeries.append(honest | {"proof_path": path})
    forgeries += [
        honest | {"leaf_index": honest["leaf_index"] + 1},
        honest | {"leaf_index": 2 ** len(honest["proof_path"])},
        honest | {"proof_path": honest["proof_path"][:-1], "directions": None},
        honest | {"proof_path": [*honest["proof_path"], "00" * 32], "directions": None},
        honest | {"directions": [not d for d in honest["directions"]]},
        honest | {"directions": honest["directions"][:-1]},
    ]
    for forged in forgeries:
        response = await verify(api, forged)
        assert response.status_code == 200, response.text
        assert response.json()["valid"] is False, forged


@pytest.mark.parametrize(
    "change",
    [
        {"leaf_hash": "zz" * 32},
        {"leaf_hash": "00" * 31},
        {"merkle_root": 5},
        {"proof_path": ["00" * 32] * 65},
        {"proof_path": "00"},
        {"leaf_index": -1},
        {"leaf_index": "0"},
        {"directions": ["yes"]},
    ],
)
async def test_malformed_proofs_are_refused(sqlite_api: Api, change: dict[str, Any]) -> None:
    body = {"leaf_hash": "00" * 32, "merkle_root": "00" * 32, "proof_path": [], "leaf_index": 0}
    response = await verify(sqlite_api, body | change)
    assert response.status_code in (400, 422), response.text
    assert "Traceback" not in response.text


# --- the anchor service's routes --------------------------------------------------------------


async def test_the_anchor_service_reports_anchors(api: Api) -> None:
    await ingest(api, 4)
    first = (await commit(api, 1, 2)).json()
    second = (await commit(api, 3, 4)).json()
    tenant_admin = await api.key(admin=True, write=True)
    refused = await api.client.get("/v1/commitments/pending", headers=api.headers(tenant_admin))
    assert refused.status_code == 403, refused.text
    pending = await api.client.get("/v1/commitments/pending", headers=api.headers())
    assert pending.status_code == 200, pending.text
    listed = pending.json()["commitments"]
    assert [c["batch_id"] for c in listed] == [first["batch_id"], second["batch_id"]]
    assert listed[0]["events_root"] == "0x" + first["merkle_root"]
    assert pending.headers.get("deprecation") is not None  # a legacy path (docs/EDGE.md)

    tx = "0x" + "ab" * 32
    url = f"/v1/commitments/{first['batch_id']}/anchored"
    body = {"chain_tx_hash": tx, "chain_id": 84532, "block_number": 7}
    done = await api.client.post(url, json=body, headers=api.headers())
    assert done.status_code == 200 and done.json()["status"] == "anchored", done.text
    again = await api.client.post(url, json=body, headers=api.headers())
    assert again.json()["status"] == "already_anchored"
    before = await kit.snapshot(api.store)
    other = await api.client.post(
        url, json=body | {"chain_tx_hash": "0x" + "cd" * 32}, headers=api.headers()
    )
    assert other.status_code == 409 and other.json()["code"] == "ALREADY_ANCHORED"
    unknown = await api.client.post(
        f"/v1/commitments/{uuid.uuid4()}/anchored", json=body, headers=api.headers()
    )
    assert unknown.status_code == 404
    for bad in ({"chain_tx_hash": "0x12", "chain_id": 1}, {"chain_tx_hash": tx, "chain_id": -1}):
        malformed = await api.client.post(url, json=bad, headers=api.headers())
        assert malformed.status_code in (400, 422), malformed.text
    as_tenant = await api.client.post(
        f"/v1/commitments/{second['batch_id']}/anchored",
        json=body,
        headers=api.headers(tenant_admin),
    )
    assert as_tenant.status_code == 403
    assert await kit.snapshot(api.store) == before

    stored = (
        await api.client.get(f"{VES}/commitments/{first['batch_id']}", headers=api.headers())
    ).json()
    assert stored["is_anchored"] is True and stored["chain_tx_hash"] == "ab" * 32
    assert (stored["chain_id"], stored["chain_block_number"]) == (84532, 7)
    default = await api.client.get(
        f"{VES}/commitments", params=stream_query(), headers=api.headers()
    )
    assert [c["batch_id"] for c in default.json()["commitments"]] == [second["batch_id"]]
    anchored = await api.client.get(
        f"{VES}/commitments", params=stream_query() | {"anchored": "true"}, headers=api.headers()
    )
    assert [c["batch_id"] for c in anchored.json()["commitments"]] == [first["batch_id"]]
    left = (await api.client.get("/v1/commitments/pending", headers=api.headers())).json()
    assert [c["batch_id"] for c in left["commitments"]] == [second["batch_id"]]

"""Hostile request bodies (issue 11, items 7 and 9): every answer says what was wrong with
the request in our words, with a stable code, and never a library's or Python's own text
(codec messages, interpreter hints, exception class names, tracebacks); nothing is a 500.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from stateset_sequencer.testing import kit
from tests.api.conftest import Api

INGEST = "/api/v1/ves/events/ingest"
JSON_ROUTES = [
    INGEST,
    "/api/v1/agents/keys",
    "/api/v1/admin/api-keys",
    "/api/v1/schemas",
    "/api/v1/schemas/validate",
]
# What Python, its codecs and libraries put in their messages, and we must not.
MARKERS = (
    "codec",
    "sys.",
    "int_max_str_digits",
    "Traceback",
    "Error:",
    "Exception",
    "UnicodeDecode",
    "UnicodeEncode",
    "JSONDecode",
    "Expecting",
    "(char ",
    "Value error",
    "unable to parse raw data",
    "There was an error parsing",
    "NoneType",
)
CODES = {
    "INVALID_REQUEST_BODY",
    "MISSING_REQUIRED_FIELD",
    "INVALID_FIELD_VALUE",
    "SCHEMA_VALIDATION_FAILED",
    "SCHEMA_NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
}
HOSTILE: dict[str, bytes] = {
    "huge_int": b'{"agentId": ' + b"9" * 5000 + b"}",
    "huge_int_nested": b'{"events": [{"payload": [' + b"1" * 4500 + b"]}]}",
    "invalid_utf8": b'{"agentId": "\xb7\xff"}',
    "invalid_utf8_key": b'{"\xc3": 1}',
    "utf16": '{"agentId": 1}'.encode("utf-16"),
    "bom": b'\xef\xbb\xbf{"agentId": 1}',
    # Deeper than the decoder goes, yet within the small routes' body limits (16 KiB).
    "deep_array": b"[" * 5000 + b"]" * 5000,
    "deep_object": b'{"a":' * 2000 + b"1" + b"}" * 2000,
    "lone_surrogates": b'{"agentId": "\\ud800", "tenantId": "\\udfff", "eventType": "\\ud800"}',
    "lone_surrogate_key": b'{"\\ud800": 1}',
    "nan": b'{"agentId": NaN}',
    "infinity": b'{"agentId": -Infinity}',
    "float_overflow": b'{"agentId": 1e999}',
    "duplicate_keys": b'{"agentId": "a", "agentId": "b"}',
    "truncated": b'{"agentId": ',
    "raw_control": b'{"agentId": "\x01"}',
    "empty": b"",
    "not_an_object": b"[1, 2]",
}


def assert_our_words(response: Any, where: str) -> None:
    assert response.status_code < 500, (where, response.status_code, response.text)
    text = response.text
    for marker in MARKERS:
        assert marker not in text, (where, marker, text)
    body = response.json()
    if response.status_code >= 400:
        error = body["error"]
        if isinstance(error, dict):  # the API's body; the agent routes answer flat
            assert error["code"] in CODES, (where, body)
            assert error["message"], (where, body)
        else:
            assert isinstance(body.get("code"), str), (where, body)
    for rejection in body.get("rejections", []) if isinstance(body, dict) else []:
        for marker in MARKERS:
            assert marker not in rejection["message"], (where, marker, rejection)


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_bodies_are_answered_in_our_words(sqlite_api: Api, name: str) -> None:
    api = sqlite_api
    before = await kit.snapshot(api.store)
    for route in JSON_ROUTES:
        response = await api.client.post(
            route,
            content=HOSTILE[name],
            headers={**api.headers(), "content-type": "application/json"},
        )
        assert_our_words(response, f"{route} {name}")
        assert response.status_code >= 400, (route, name, response.text)
    assert await kit.snapshot(api.store) == before


async def test_known_faults_have_precise_messages(sqlite_api: Api) -> None:
    api = sqlite_api
    expected = {
        "huge_int": "an integer has more than 4300 digits",
        "invalid_utf8": "not valid UTF-8 (byte 13)",
        "deep_array": "nested too deeply",
        "truncated": "not valid JSON at line 1, column 13",
        "nan": "NaN is not valid JSON",
    }
    for route in (INGEST, "/api/v1/schemas"):
        for name, message in expected.items():
            if route != INGEST and name == "nan":
                continue  # FastAPI's decoder reads NaN; the model then refuses it
            response = await api.client.post(
                route,
                content=HOSTILE[name],
                headers={**api.headers(), "content-type": "application/json"},
            )
            assert response.status_code == 400, (route, name, response.text)
            error = response.json()["error"]
            assert error["code"] == "INVALID_REQUEST_BODY"
            assert error["message"] == f"Malformed JSON body: {message}", (route, error)


def _event_paths(wire: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every string in an event's wire form."""
    if isinstance(wire, str):
        return [path]
    if isinstance(wire, dict):
        return [p for key, value in wire.items() for p in _event_paths(value, (*path, key))]
    if isinstance(wire, list):
        return [p for i, value in enumerate(wire) for p in _event_paths(value, (*path, i))]
    return []


def _with_marker(wire: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    copy: Any = json.loads(json.dumps(wire))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = "MARKER"
    result: dict[str, Any] = copy
    return result


async def test_a_lone_surrogate_in_any_field_is_a_4xx_in_our_words(sqlite_api: Api) -> None:
    """Items 7 and 9: a lone surrogate in every string of an event (encrypted, with a
    bundle) and of the wrapper; never a 500 (the payload-size check used to crash)."""
    api = sqlite_api
    await api.register_agent()
    event = kit.event(1, recipients=[(1, kit.X25519_PUBLIC)])
    wire = {**event.to_wire(), "agent_signature_bundle": {"note": "x", "list": ["y"]}}
    plain = {**kit.event(2).to_wire(), "payload": {"note": "x", "deep": [{"k": "v"}]}}
    before = await kit.snapshot(api.store)
    cases = [(wire, p) for p in _event_paths(wire)] + [(plain, p) for p in _event_paths(plain)]
    assert len(cases) > 20
    for base, path in cases:
        body = json.dumps({"agentId": str(kit.AGENT_ID), "events": [_with_marker(base, path)]})
        response = await api.client.post(
            INGEST,
            content=body.replace('"MARKER"', '"\\ud800"'),
            headers={**api.headers(), "content-type": "application/json"},
        )
        assert_our_words(response, str(path))
        if response.status_code == 200:  # refused per event, as the reference does
            assert response.json()["eventsAccepted"] == 0, (path, response.text)
    # A surrogate in a member name of the payload, too.
    body = json.dumps({"agentId": str(kit.AGENT_ID), "events": [plain]})
    response = await api.client.post(
        INGEST,
        content=body.replace('"note"', '"\\ud800"'),
        headers={**api.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "payload" in response.json()["error"]["message"]
    assert_our_words(response, "payload member name")
    assert await kit.snapshot(api.store) == before


async def test_a_lone_surrogate_in_the_payload_is_a_400_naming_where(api: Api) -> None:
    """Item 9 on both backends: the payload-size check no longer crashes (500); the
    refusal is the storable-text rule's 400, naming the string at fault."""
    await api.register_agent()
    before = await kit.snapshot(api.store)
    wire = {**kit.event(1).to_wire(), "payload": {"items": [{"sku": "MARKER"}]}}
    body = json.dumps({"agentId": str(kit.AGENT_ID), "events": [wire]})
    response = await api.client.post(
        INGEST,
        content=body.replace('"MARKER"', '"\\ud800"'),
        headers={**api.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["details"]["reason"]) == ("INVALID_FIELD_VALUE", "INVALID_FIELD")
    assert "payload.items[0].sku is not valid UTF-8" in error["message"]
    assert await kit.snapshot(api.store) == before


@pytest.mark.parametrize("value", [None, 7, True, [], {}])
async def test_wrongly_typed_fields_are_named_in_json_terms(sqlite_api: Api, value: Any) -> None:
    """A UUID, hex or timestamp field given another JSON type says which, in JSON's words
    (null, a number, an object), never Python's type names."""
    api = sqlite_api
    for name in ("event_id", "payload_plain_hash", "agent_signature", "created_at"):
        wire = {**kit.event(1).to_wire(), name: value}
        response = await api.client.post(
            INGEST,
            json={"agentId": str(kit.AGENT_ID), "events": [wire]},
            headers=api.headers(),
        )
        assert_our_words(response, f"{name}={value!r}")
        assert response.status_code in (400, 422), (name, value, response.text)

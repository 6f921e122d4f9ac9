"""Services speak in reasons, the HTTP layer in statuses: the one table of reasons, the
one mapping of store faults, the storable-text rule over HTTP on both backends, the
backend's name in ``/health/detailed``, and the limits the served OpenAPI states."""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import pkgutil
from typing import Any

import httpx
import pytest

from stateset_sequencer import anchoring, sequencer
from stateset_sequencer.api.http import errors
from stateset_sequencer.api.http.errors import (
    ERROR_CODES,
    REASONS,
    SERVICE_REASONS,
    STORE_FAULTS,
    Body,
    status_for,
)
from stateset_sequencer.store.errors import (
    ConcurrentWriteError,
    IntegrityError,
    MigrationError,
    OperationalError,
    StoreError,
)
from stateset_sequencer.testing import kit
from tests.api.conftest import Api, MakeApi
from tests.api.test_auth import agent_error, api_error, auth_failure, stream_params

INGEST = "/api/v1/ves/events/ingest"
HEAD = "/api/v1/ves/head"

# --- the table of reasons -------------------------------------------------------------------


def _reason_enums_in_services() -> set[type[enum.StrEnum]]:
    """Every ``*Reason`` enum defined in a module of ``sequencer/`` or ``anchoring/``, found
    by walking the packages, so that a new service's reasons cannot be left out of
    ``SERVICE_REASONS``."""
    found: set[type[enum.StrEnum]] = set()
    modules = [
        f"{package.__name__}.{info.name}"
        for package in (sequencer, anchoring)
        for info in pkgutil.iter_modules(package.__path__)
    ]
    for name in modules:
        module = importlib.import_module(name)
        for _name, value in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(value, enum.StrEnum)
                and value.__module__ == module.__name__
                and value.__name__.endswith("Reason")
            ):
                found.add(value)
    return found


def test_every_reason_a_service_can_raise_has_a_row() -> None:
    assert set(SERVICE_REASONS) == _reason_enums_in_services()
    members = [member for kind in SERVICE_REASONS for member in kind]
    values = [str(member) for member in members]
    assert len(values) == len(set(values)), "two services share a reason string"
    missing = [f"{type(m).__name__}.{m.name}" for m in members if m not in REASONS]
    assert not missing, f"reasons without a row in api/http/errors.py: {missing}"
    assert set(REASONS) == set(members), "rows for reasons no service raises"


@pytest.mark.parametrize("reason", sorted(REASONS), ids=str)
def test_each_row_is_answerable(reason: str) -> None:
    wire = REASONS[reason]
    assert wire.bodies, reason
    assert 400 <= wire.status < 500
    if wire.api is not None:
        # An ApiError code names its own status in the reference's table: they agree.
        assert ERROR_CODES[wire.api][1] == wire.status
        assert wire.detail
        answer = errors.api_error(reason, "m")
        assert (answer.status, answer.code, answer.details["reason"]) == (
            wire.status,
            wire.api,
            wire.detail,
        )
    if wire.agent is not None:
        refused = errors.agent_error(reason, "m")
        assert (refused.status, refused.code) == (wire.status, wire.agent)
    assert status_for(reason) == wire.status


def test_scope_refusals_use_the_route_body_and_credential_faults_the_auth_body() -> None:
    scope = {"insufficient_permissions", "tenant_access_denied", "store_access_denied"}
    for reason, wire in REASONS.items():
        if reason in scope:
            assert wire.bodies == {Body.API, Body.AGENT}
            assert (wire.api, wire.agent, wire.status) == (
                "INSUFFICIENT_PERMISSIONS",
                "FORBIDDEN",
                403,
            )
        elif wire.auth is not None:
            assert wire.bodies == {Body.AUTH} and wire.auth == reason


# --- store faults: one mapping on every route -----------------------------------------------


def test_store_fault_table() -> None:
    got = {kind: (f.status, f.code, f.retry_after is not None) for kind, f in STORE_FAULTS}
    assert got == {
        OperationalError: (503, "SERVICE_UNAVAILABLE", True),
        ConcurrentWriteError: (503, "SERVICE_UNAVAILABLE", True),
        IntegrityError: (500, "DATABASE_ERROR", False),
        MigrationError: (500, "DATABASE_ERROR", False),
        StoreError: (500, "DATABASE_ERROR", False),
    }
    assert STORE_FAULTS[-1][0] is StoreError  # the catch-all comes last


def _fail_with(exc: StoreError) -> Any:
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


def _assert_store_fault(response: httpx.Response, kind: type[StoreError]) -> None:
    if kind in (OperationalError, ConcurrentWriteError):
        api_error(response, 503, "SERVICE_UNAVAILABLE")
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["retry_after"] == int(response.headers["Retry-After"])
    else:
        api_error(response, 500, "DATABASE_ERROR")
        assert "Retry-After" not in response.headers
    error = response.json()["error"]
    assert "secret driver text" not in error["message"]  # the driver's text is only logged


FAULTS = [
    OperationalError("secret driver text"),
    IntegrityError("secret driver text"),
    ConcurrentWriteError("secret driver text"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: type(f).__name__)
async def test_store_fault_on_ingest(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch, fault: StoreError
) -> None:
    await sqlite_api.register_agent()
    monkeypatch.setattr(sqlite_api.store, "existing", _fail_with(fault))
    response = await sqlite_api.ingest([kit.event(1)])
    _assert_store_fault(response, type(fault))


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: type(f).__name__)
async def test_store_fault_on_a_read_route(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch, fault: StoreError
) -> None:
    monkeypatch.setattr(sqlite_api.store, "head", _fail_with(fault))
    response = await sqlite_api.client.get(
        HEAD, params=stream_params(), headers=sqlite_api.headers()
    )
    _assert_store_fault(response, type(fault))


async def test_the_same_fault_is_the_same_answer_on_ingest_and_reads(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sqlite_api.register_agent()
    down = OperationalError("connection refused")
    monkeypatch.setattr(sqlite_api.store, "existing", _fail_with(down))
    monkeypatch.setattr(sqlite_api.store, "head", _fail_with(down))
    on_ingest = await sqlite_api.ingest([kit.event(1)])
    on_read = await sqlite_api.client.get(
        HEAD, params=stream_params(), headers=sqlite_api.headers()
    )
    for response in (on_ingest, on_read):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == on_ingest.headers["Retry-After"]
    ingest_error, read_error = on_ingest.json()["error"], on_read.json()["error"]
    for error in (ingest_error, read_error):
        error.pop("request_id")
    assert ingest_error == read_error


async def test_a_conflict_that_outlasts_the_retries_is_a_retryable_503(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sqlite_api.register_agent()
    monkeypatch.setattr(sqlite_api.store, "append_transaction", lambda *a, **k: _RaisingContext())
    response = await sqlite_api.ingest([kit.event(1)])
    _assert_store_fault(response, ConcurrentWriteError)
    assert response.json()["error"]["details"]["reason"] == "WRITE_CONFLICT"


class _RaisingContext:
    async def __aenter__(self) -> Any:
        raise ConcurrentWriteError("another writer took the event id")

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_auth_backend_fault_is_the_auth_bodys_503(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_api.store, "get_api_key", _fail_with(OperationalError("down")))
    response = await sqlite_api.client.get(
        HEAD, params=stream_params(), headers=sqlite_api.headers()
    )
    auth_failure(response, 503, "auth_backend_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


# --- /health/detailed names the backend as the reference does ------------------------------


async def test_health_detailed_names_the_backend_healthy_and_down(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = "sqlite" if api.services.settings.DATABASE_URL is None else "postgresql"
    assert api.store.capabilities.name == expected
    healthy = await api.client.get("/health/detailed", headers=api.headers())
    assert healthy.status_code == 200, healthy.text
    assert healthy.json()["components"]["database"]["name"] == expected

    monkeypatch.setattr(api.store, "ping", _fail_with(OperationalError("down")))
    down = await api.client.get("/health/detailed", headers=api.headers())
    assert down.status_code == 503
    database = down.json()["components"]["database"]
    assert database["name"] == expected
    # Our words: the exception class is an internal, for the log only.
    assert (database["status"], database["message"]) == ("unhealthy", "the database did not answer")


async def test_health_detailed_refusal_goes_through_the_table(api: Api) -> None:
    reader = await api.key()
    refused = await api.client.get("/health/detailed", headers=api.headers(reader))
    agent_error(refused, 403, "FORBIDDEN")
    assert refused.json()["error"] == "Admin permission required"


# --- the storable-text rule, the same on both backends ---------------------------------------


async def test_unstorable_entity_paths_match_nothing_without_asking_the_store(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NUL was refused at ingest on every backend, so no stored entity has it: both
    backends answer an empty page (200, as before), and neither is queried."""
    await api.register_agent()
    await api.ingest([kit.event(1)])
    monkeypatch.setattr(api.store, "read_entity", _fail_with(StoreError("must not be asked")))
    for prefix in ("/api/v1/ves/entities", "/api/v1/entities"):
        for path in (f"{prefix}/order/ORD%00-1", f"{prefix}/or%00der/ORD-1"):
            response = await api.client.get(path, params=stream_params(), headers=api.headers())
            assert response.status_code == 200, (path, response.text)
            body = response.json()
            assert (body["events"], body["total"], body["has_more"]) == ([], 0, False)
        # Over the byte limit stays the reference's 400, before the store is asked, NUL
        # or not (the size is checked first, as everywhere).
        for entity_id in ("€" * 171, "%00" + "€" * 171):
            long_id = await api.client.get(
                f"{prefix}/order/{entity_id}", params=stream_params(), headers=api.headers()
            )
            api_error(long_id, 400, "INVALID_FIELD_VALUE")


def _raw_ingest(event: dict[str, Any], marker: str, replacement: str) -> str:
    text = json.dumps({"agentId": str(kit.AGENT_ID), "events": [event]})
    assert marker in text
    return text.replace(marker, replacement)


@pytest.mark.parametrize("where", ["payload", "agent_signature_bundle", "entity_id"])
async def test_lone_surrogates_are_refused_whole_on_both_backends(api: Api, where: str) -> None:
    """JSON's ``\\ud800`` escape decodes to text neither store can hold: the request is
    refused (400, nothing written) like any other unstorable text, not a crash (500)."""
    await api.register_agent()
    before = await kit.snapshot(api.store)
    wire = kit.event(1).to_wire()
    if where == "payload":
        wire["payload"] = {"note": "MARKER"}
    elif where == "agent_signature_bundle":
        wire["agent_signature_bundle"] = {"note": "MARKER"}
    else:
        wire["entity_id"] = "ORD-MARKER"
    response = await api.client.post(
        INGEST,
        content=_raw_ingest(wire, "MARKER", "\\ud800"),
        headers={**api.headers(), "content-type": "application/json"},
    )
    api_error(response, 400, "INVALID_FIELD_VALUE", "INVALID_FIELD")
    assert where in response.json()["error"]["message"]
    assert await kit.snapshot(api.store) == before


async def test_an_audit_row_for_a_nul_path_is_kept_on_both_backends(api: Api) -> None:
    """The path of a refused request goes into the audit log; PostgreSQL text cannot hold
    NUL, so the stored copy is made storable (U+FFFD) and the row is kept on both."""
    response = await api.client.get("/api/v1/ves/entities/order/a%00b", params=stream_params())
    auth_failure(response, 401, "missing_auth")
    await api.services.auth_failures.flush()
    rows = await api.store.list_audit(action="auth.failure")
    assert [row.resource_id for row in rows] == ["/api/v1/ves/entities/order/a\ufffdb"]


# --- the served OpenAPI states the real limits -----------------------------------------------


async def _document(api: Api) -> dict[str, Any]:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _events_schema(document: dict[str, Any]) -> dict[str, Any]:
    body = document["paths"][INGEST]["post"]["requestBody"]
    schema: dict[str, Any] = body["content"]["application/json"]["schema"]
    events: dict[str, Any] = schema["properties"]["events"]
    return events


async def test_openapi_states_the_configured_batch_limit(make_api: MakeApi) -> None:
    small = await make_api("sqlite", MAX_EVENTS_PER_BATCH=3, MAX_EVENT_PAYLOAD_SIZE=200)
    default = await make_api("sqlite")
    small_events = _events_schema(await _document(small))
    # Two apps in one process, each with its own limits: neither writes into the other's.
    default_events = _events_schema(await _document(default))
    assert (small_events["minItems"], small_events["maxItems"]) == (1, 3)
    assert default_events["maxItems"] == default.services.settings.MAX_EVENTS_PER_BATCH == 1000
    assert "200 bytes" in small_events["description"]
    assert _events_schema(await _document(small))["maxItems"] == 3

    envelope = (await _document(small))["components"]["schemas"]["VesEventEnvelope"]
    for name, limit in (("entity_type", 128), ("entity_id", 512), ("event_type", 256)):
        stated = envelope["properties"][name]
        assert (stated["minLength"], stated["maxLength"]) == (1, limit)
        assert f"{limit} bytes of UTF-8" in stated["description"]

    # The document changed, not the answers: one event too many is still our 413.
    await small.register_agent()
    too_many = await small.ingest([kit.event(i) for i in range(4)])
    api_error(too_many, 413, "BATCH_TOO_LARGE", "BATCH_TOO_LARGE")
    empty = await small.client.post(
        INGEST, json={"agentId": str(kit.AGENT_ID), "events": []}, headers=small.headers()
    )
    api_error(empty, 400, "INVALID_FIELD_VALUE", "EMPTY_BATCH")


async def test_every_route_documents_store_faults(sqlite_api: Api) -> None:
    document = await _document(sqlite_api)
    for path in (INGEST, HEAD, "/api/v1/agents/keys", "/api/v1/schemas"):
        for operation in document["paths"][path].values():
            assert {"500", "503"} <= set(operation["responses"]), path

"""The served OpenAPI document, held to account by schemathesis.

Every operation in ``/openapi.json`` is fuzzed in process (schemathesis's ASGI transport,
no socket) on a SQLite store, as the bootstrap admin so that requests get past
authentication into the handlers. Each response must not be a 5xx, must match the
schema the document gives for its status, and must carry a documented content type.
A failure here means the document lies or a handler crashes: fix that, not the checks.

Schema-valid requests must also be accepted (``positive_data_acceptance``: no 400, 413
or 422 for data the document calls valid), except on the operations in
:data:`NOT_YET_STATED`, whose models do not state every rule their handlers apply; each
entry says which. A 405 must name the allowed methods (``unsupported_method``).

Bounds: schemathesis's own ``seed`` and ``deterministic`` generation (the same cases on
every run), at most ``MAX_EXAMPLES`` fuzzed cases per operation on top of the examples
and coverage phases, no shrinking (a failure is reported as found), no example database.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    unsupported_method,
)
from starlette.types import Receive, Scope, Send

from stateset_sequencer.anchoring.anchorer import Anchorer
from stateset_sequencer.api.http.app import create_app
from stateset_sequencer.api.http.deps import admin_ip_guard, authenticate
from stateset_sequencer.config import Settings
from stateset_sequencer.runtime import Services, start_services
from stateset_sequencer.sequencer import registration
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.evm import Evm
from stateset_sequencer.ves import signing
from tests.api.conftest import ADMIN_KEY, BASE, Api, settings_for

if TYPE_CHECKING:
    # schemathesis's own alias for a case of an OpenAPI operation (defined for type
    # checkers only, so imported only for them).
    from schemathesis.specs.openapi.schemas import OpenApiCase

# Fuzzed cases per operation (the examples and coverage phases add theirs, unbounded by
# this). 31 operations at 50 take ~45 s on 2 busy cores, the ingest body alone ~12 s;
# generation cost grows faster than linearly (75 took ~85 s), so 50 keeps the file well
# under 90 s.
MAX_EXAMPLES = 50
SEED = 20250601
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# Operations where a schema-valid request may still be refused as invalid, and why: the
# rules their handlers check that their request models do not state yet.
NOT_YET_STATED = {
    "POST /api/v1/ves/events/ingest": "envelope formats (RFC 3339 created_at, ves_version 1, "
    "the payload kind's fields) are checked by hand and not in the component schemas",
    "POST /api/v1/agents/keys": "validFrom/validTo must be RFC 3339, publicKey 32 bytes of "
    "hex, keyAlgorithm one the security profile allows",
    "POST /api/v1/admin/api-keys": "read, write and admin all false is NO_PERMISSIONS; "
    "repeated storeIds are STORE_IDS_DUPLICATE; expiresAt must lie in the next 10 years, "
    "and expiresAt and ttlSeconds exclude each other",
    "POST /api/v1/agents/{agent_id}/api-keys": "repeated storeIds are STORE_IDS_DUPLICATE; "
    "expiresAt must lie in the next 10 years, and expiresAt and ttlSeconds exclude each other",
    "POST /api/v1/schemas": "schemaJson must itself be a valid JSON Schema; compatibility "
    "one of forward, backward, full, none",
    "POST /api/v1/schemas/validate": "an event type with no registered schema is 400 "
    "SCHEMA_NOT_FOUND, the reference's status for it",
    "PUT /api/v1/ves/cursors/{agent_id}": "a sequenceNumber past the stream's head is 400, "
    "as the reference; the head is data, not schema",
    "POST /api/v1/ves/commitments": "the range must start where the stream's last "
    "commitment ends and every event of it must be stored; that is data, not schema",
    "PUT /api/v1/agents/{agent_id}/policy": "rules are bounded in UTF-8 bytes (maxLength "
    "counts characters) and must be storable text (no NUL, no lone surrogate)",
    "POST /api/v1/ves/commitments/anchor": "sequence_start and sequence_end go together, "
    "and there must be new events to commit; the second is data, not schema",
}
REGISTER = "POST /api/v1/agents/register"
# A literal path whose other methods land on a sibling route with a UUID (or integer)
# segment: GET of the literal path is that route's 400 (not a UUID), not a 405. The fix
# belongs in the owning routers (a ``{name:uuid}``-style convertor that also takes
# upper-case UUIDs).
SHADOWED_BY_A_UUID_ROUTE = {
    REGISTER: "GET /api/v1/agents/{agent_id}",
    "POST /api/v1/ves/events/ingest": "GET /api/v1/ves/events/{event_id}",
    "POST /api/v1/schemas/validate": "GET /api/v1/schemas/{schema_id}",
    "POST /api/v1/ves/proofs/verify": "GET /api/v1/ves/proofs/{sequence_number}",
    "POST /api/v1/ves/commitments/anchor": "GET /api/v1/ves/commitments/{batch_id}",
    "POST /api/v1/ves/commitments/verify": "GET /api/v1/ves/commitments/{batch_id}",
}
AUTH = {"Authorization": f"ApiKey {ADMIN_KEY}"}


class LifespanApp:
    """The app with its services started and stopped by the ASGI lifespan.

    Schemathesis drives ASGI apps from an event loop of its own, on a helper thread;
    the store's connections belong to the loop that opened them, so the services must be
    started on that loop, which is what the lifespan runs on.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self.app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.app is None:
            raise RuntimeError("the app is served only between lifespan startup and shutdown")
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            services = await start_services(self.settings, announce=False)
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": repr(exc)})
            return
        try:
            await seed(services)
        except Exception as exc:
            await services.close()
            await send({"type": "lifespan.startup.failed", "message": repr(exc)})
            return
        self.services, self.app = services, create_app(services)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        self.services, self.app = None, None
        await services.close()
        await send({"type": "lifespan.shutdown.complete"})


async def seed(services: Services) -> None:
    """A registered agent and a few sequenced events, so reads of the known stream return
    real items (whose shape the response schemas must then describe).

    Schemathesis ends the lifespan after every test and starts it again for the next one,
    on the same data directory, so this must be idempotent (a re-ingest is a replay)."""
    if not await services.store.list_agent_keys(kit.TENANT, kit.AGENT_ID):
        await kit.register(services.store)
    await services.sequencer.ingest(kit.AGENT_ID, [kit.event(i) for i in range(3)])
    # Anchoring on the in-process chain, so that its routes answer from their handlers
    # rather than with the 503 of a service where it is off.
    services.chain = in_process_chain().chain()
    services.anchorer = Anchorer(services.store, services.chain, confirmations=1)


@cache
def in_process_chain() -> Evm:
    return Evm.start()


def fuzz_config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "deterministic": True,
                "max-examples": MAX_EXAMPLES,
                "no-shrink": True,
                "database": "none",
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                # Stateful runs are a separate API (state machines), not parametrize;
                # the hand-made walk below chains create -> read -> revoke instead.
                "stateful": {"enabled": False},
            },
        }
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LifespanApp]:
    # Public registration on, with a budget the fuzzer cannot spend, so its cases reach
    # the rules instead of 403 REGISTRATION_DISABLED or 429.
    settings = settings_for(
        None,
        Path(tmp_path_factory.mktemp("fuzz")),
        PUBLIC_AGENT_REGISTRATION_ENABLED="true",
        PUBLIC_AGENT_REGISTRATION_RATE_LIMIT_PER_MINUTE=1_000_000,
    )
    app = LifespanApp(settings)
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()


# A live stream answers for as long as the client listens, and schemathesis reads a whole
# body: tests/api/test_stream.py feeds it bad input instead.
NOT_FUZZED = {"/api/v1/ves/events/stream"}


@pytest.fixture(scope="module")
def fuzz_schema(served: LifespanApp) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", served, config=fuzz_config())


schema = schemathesis.pytest.from_fixture("fuzz_schema").exclude(path=sorted(NOT_FUZZED))


def refused_for_a_rule_json_schema_cannot_state(case: OpenApiCase, response: Response) -> bool:
    """Two rules are stated in words only, because JSON Schema has no way to say them:

    * integers must be JSON integers: 7220.0 is an integer to JSON Schema, and refused
      (422) here as by the reference;
    * registration bounds text in UTF-8 bytes (as the reference counts), JSON Schema in
      characters: a name of 100 'é' is schema-valid and 200 bytes long.
    """
    if response.status_code == 422 and _holds_an_integral_float(case.body):
        return True
    if case.operation.label != REGISTER or response.status_code != 400:
        return False
    limits = {
        "NAME_TOO_LONG": ("name", registration.MAX_NAME_BYTES),
        "DESCRIPTION_TOO_LONG": ("description", registration.MAX_DESCRIPTION_BYTES),
    }
    code = response.json().get("code")
    if code not in limits or not isinstance(case.body, dict):
        return False
    field, limit = limits[code]
    text = str(case.body.get(field) or "")
    return len(text) <= limit < len(text.strip().encode("utf-8"))


def _holds_an_integral_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_holds_an_integral_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_an_integral_float(v) for v in value)
    return False


@schema.parametrize()
def test_every_operation_conforms(case: OpenApiCase) -> None:
    response = case.call(headers=AUTH)
    checks = list(CHECKS)
    if case.operation.label not in SHADOWED_BY_A_UUID_ROUTE:
        checks.append(unsupported_method)
    if case.operation.label not in NOT_YET_STATED and not (
        refused_for_a_rule_json_schema_cannot_state(case, response)
    ):
        checks.append(positive_data_acceptance)
    case.validate_response(response, checks=checks, headers=AUTH)


# --- hand-made cases over real data ---------------------------------------------------------


class Walk:
    """Calls made by hand through the same transport and checks as the fuzzer, for the
    answers random inputs cannot reach: successful ingests, reads of sequenced events,
    conflicts, and refusals of a caller without the needed permission."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.failures: list[str] = []

    def call(
        self,
        method: str,
        path: str,
        expect: int,
        *,
        key: str = ADMIN_KEY,
        path_parameters: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        operation = self.schema[path][method]
        kwargs: dict[str, Any] = {"path_parameters": path_parameters or {}, "query": query or {}}
        if body is not None:
            kwargs["body"] = body
            kwargs["media_type"] = "application/json"
        case = operation.Case(**kwargs)
        headers = {"Authorization": f"ApiKey {key}"}
        response = case.call(headers=headers)
        label = f"{method} {path} -> {response.status_code}"
        if response.status_code != expect:
            self.failures.append(f"{label}, expected {expect}: {response.text[:300]}")
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except schemathesis.errors.FailureGroup as group:
            self.failures.extend(f"{label}: {failure}" for failure in group.exceptions)
        content_type = response.headers.get("content-type", [""])
        if "json" in str(content_type) and response.text:
            return response.json()
        return response.text


def test_hand_made_cases_conform(fuzz_schema: Any) -> None:
    walk = Walk(fuzz_schema)
    tenant, store = str(kit.TENANT), str(kit.STORE_ID)
    stream = {"tenant_id": tenant, "store_id": store}
    agent = str(uuid.uuid4())
    public_key = "0x" + kit.AGENT.public_key.hex()

    key_body = {"tenantId": tenant, "agentId": agent, "keyId": 1, "publicKey": public_key}
    walk.call("POST", "/api/v1/agents/keys", 200, body=key_body)
    walk.call("POST", "/api/v1/agents/keys", 200, body=key_body)  # the same key: "already"
    other_key = {**key_body, "publicKey": "0x" + signing.Signer(bytes([5]) * 32).public_key.hex()}
    walk.call("POST", "/api/v1/agents/keys", 409, body=other_key)
    walk.call("GET", "/api/v1/agents/keys", 200, query={"tenant_id": tenant})
    walk.call(
        "DELETE",
        "/api/v1/agents/keys/{tenant_id}/{agent_id}/{key_id}",
        200,
        path_parameters={"tenant_id": tenant, "agent_id": agent, "key_id": 1},
    )

    events = [kit.event(100 + i) for i in range(3)]
    batch = {"agentId": str(kit.AGENT_ID), "events": [e.to_wire() for e in events]}
    walk.call("POST", "/api/v1/ves/events/ingest", 200, body=batch)
    walk.call("POST", "/api/v1/ves/events/ingest", 200, body=batch)  # exact replay
    forged = kit.event(200).model_copy(update={"agent_signature": bytes(64)})
    walk.call(
        "POST",
        "/api/v1/ves/events/ingest",
        200,
        body={"agentId": str(kit.AGENT_ID), "events": [forged.to_wire()]},
    )
    walk.call(
        "POST", "/api/v1/ves/events/ingest", 400, body={"agentId": str(kit.AGENT_ID), "events": []}
    )

    walk.call("GET", "/api/v1/ves/events", 200, query=stream)
    walk.call(
        "GET",
        "/api/v1/ves/events/{event_id}",
        200,
        path_parameters={"event_id": str(events[0].event_id)},
    )
    walk.call("GET", "/api/v1/ves/head", 200, query=stream)
    walk.call("GET", "/api/v1/head", 200, query=stream)
    walk.call("GET", "/api/v1/events", 200, query=stream)
    entity = {"entity_type": "order", "entity_id": "ORD-100"}
    for path in ("/api/v1/ves/entities/{entity_type}/{entity_id}",
                 "/api/v1/entities/{entity_type}/{entity_id}"):  # fmt: skip
        walk.call("GET", path, 200, path_parameters=entity, query=stream)
    walk.call("GET", "/api/v1/ves/sequencer", 200)

    schema_body = {
        "tenantId": tenant,
        "eventType": "order.created",
        "schemaJson": {"type": "object", "required": ["n"]},
        "description": "orders",
    }
    created = walk.call("POST", "/api/v1/schemas", 200, body=schema_body)
    schema_id = {"schema_id": created["id"]}
    by_type = {"event_type": "order.created"}
    walk.call("GET", "/api/v1/schemas", 200, query={"tenant_id": tenant})
    walk.call("GET", "/api/v1/schemas/{schema_id}", 200, path_parameters=schema_id)
    walk.call(
        "GET",
        "/api/v1/schemas/event-type/{event_type}",
        200,
        path_parameters=by_type,
        query={"tenant_id": tenant, "version": 1},
    )
    walk.call(
        "GET",
        "/api/v1/schemas/event-type/{event_type}/latest",
        200,
        path_parameters=by_type,
        query={"tenant_id": tenant},
    )
    walk.call(
        "POST",
        "/api/v1/schemas/validate",
        200,
        body={"tenantId": tenant, "eventType": "order.created", "payload": {"m": 1}},
    )
    walk.call(
        "PUT",
        "/api/v1/schemas/{schema_id}/status",
        200,
        path_parameters=schema_id,
        body={"status": "deprecated"},
    )
    walk.call("DELETE", "/api/v1/schemas/{schema_id}", 200, path_parameters=schema_id)

    minted = walk.call(
        "POST",
        "/api/v1/admin/api-keys",
        200,
        body={"tenantId": tenant, "agentId": agent, "write": True, "rateLimit": 1000},
    )
    walk.call("GET", "/api/v1/admin/api-keys", 200, query={"tenant_id": tenant})
    as_agent = {"agent_id": agent}
    walk.call("GET", "/api/v1/agents/{agent_id}", 200, path_parameters=as_agent)
    walk.call("GET", "/api/v1/agents/{agent_id}/api-keys", 200, path_parameters=as_agent)
    walk.call(
        "POST",
        "/api/v1/agents/{agent_id}/api-keys",
        200,
        path_parameters=as_agent,
        body={"readOnly": True},
    )
    walk.call(
        "DELETE",
        "/api/v1/agents/{agent_id}/api-keys/{key_prefix}",
        200,
        path_parameters={**as_agent, "key_prefix": minted["keyHashPrefix"]},
    )
    walk.call(
        "DELETE",
        "/api/v1/admin/api-keys/{key_hash_prefix}",
        409,
        path_parameters={"key_hash_prefix": minted["keyHashPrefix"]},
    )
    for path in ("/health", "/ready", "/health/detailed", "/metrics"):
        walk.call("GET", path, 200)
    for path in ("/health", "/ready"):
        walk.call("HEAD", path, 200)

    registered = walk.call("POST", "/api/v1/agents/register", 200, body={"name": "walker"})
    walk.call("POST", "/api/v1/agents/register", 403, body={"name": "w", "admin": True})
    walk.call("POST", "/api/v1/agents/register", 400, body={"name": "w", "tenantId": tenant})
    walk.call(
        "GET",
        "/api/v1/agents/{agent_id}",
        200,
        key=registered["apiKey"],
        path_parameters={"agent_id": registered["agentId"]},
    )

    # A read-only key of another tenant: every refusal must be a documented body.
    reader = walk.call("POST", "/api/v1/admin/api-keys", 200, body={"tenantId": str(uuid.uuid4())})[
        "apiKey"
    ]
    refusals: list[tuple[str, str, int, dict[str, Any]]] = [
        ("GET", "/metrics", 403, {}),
        ("GET", "/health/detailed", 403, {}),
        ("GET", "/api/v1/admin/api-keys", 403, {"query": {"tenant_id": tenant}}),
        ("POST", "/api/v1/admin/api-keys", 403, {"body": {"tenantId": tenant}}),
        ("POST", "/api/v1/agents/keys", 403, {"body": key_body}),
        ("GET", "/api/v1/agents/keys", 403, {"query": {"tenant_id": tenant}}),
        ("POST", "/api/v1/ves/events/ingest", 403, {"body": batch}),
        ("GET", "/api/v1/ves/events", 403, {"query": stream}),
        ("GET", "/api/v1/head", 403, {"query": stream}),
        ("POST", "/api/v1/schemas", 403, {"body": schema_body}),
        ("GET", "/api/v1/agents/{agent_id}", 403, {"path_parameters": as_agent}),
    ]
    for method, path, expect, extra in refusals:
        walk.call(method, path, expect, key=reader, **extra)
    walk.call("GET", "/api/v1/ves/head", 401, key="ss_" + "x" * 40, query=stream)
    assert not walk.failures, "\n\n".join(walk.failures)


# --- the document itself ----------------------------------------------------------------------


def _dependency_calls(dependant: Dependant) -> set[Any]:
    found: set[Any] = set()
    for sub in dependant.dependencies:
        found.add(sub.call)
        found |= _dependency_calls(sub)
    return found


def api_routes(app: FastAPI) -> list[RouteContext]:
    """The app's API routes with their router prefixes and dependencies applied (this
    FastAPI keeps an included router as one lazy entry of ``app.routes``)."""
    return [c for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def openapi_path(route: RouteContext) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", str(route.path))  # {entity_id:path} -> {entity_id}


def expected_4xx(route: RouteContext) -> set[int]:
    """The 4xx answers a route can give whatever its handler does: the edge's body limit
    everywhere; bad input where there is input (400 for path and query, 422 for a body);
    refusals where a credential or the admin allowlist is checked."""
    statuses = {413}
    dependant: Dependant = route.dependant
    calls = _dependency_calls(dependant)
    if authenticate in calls:
        statuses |= {401, 403, 429}
    if admin_ip_guard in calls:
        statuses.add(403)
    if dependant.path_params or dependant.query_params:
        statuses.add(400)
    if route.body_field is not None or "requestBody" in (route.openapi_extra or {}):
        statuses |= {400, 422}
    return statuses


async def test_openapi_document_lists_every_route_with_its_errors(sqlite_api: Api) -> None:
    app = create_app(sqlite_api.services)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")

    routes = api_routes(app)
    assert len(routes) >= 30  # a sanity floor: the walk above did find the routers
    # FastAPI's own pages (/openapi.json, /docs, /redoc) are plain Routes; every API route
    # must be documented, none hidden.
    assert [openapi_path(r) for r in routes if not r.include_in_schema] == []
    served = {
        (openapi_path(r), method.lower())
        for r in routes
        for method in r.methods or ()  # FastAPI routes answer HEAD only where declared
    }
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "options", "head"}
    }
    assert documented == served

    missing: list[str] = []
    for route in routes:
        path = openapi_path(route)
        for method in sorted(route.methods or ()):
            operation = document["paths"][path][method.lower()]
            for status in sorted(expected_4xx(route)):
                content = operation["responses"].get(str(status), {}).get("content", {})
                if "schema" not in content.get("application/json", {}):
                    missing.append(f"{method} {path}: {status}")
    assert not missing, "4xx answers without a documented JSON schema:\n" + "\n".join(missing)

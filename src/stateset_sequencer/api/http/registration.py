"""``POST /api/v1/agents/register``: the reference's public self-registration, with no
credential (``sequencer/registration.py`` holds the rules).

The switch and the per-client budget are checked before the body is read, and the body
is read only up to :data:`MAX_BODY_BYTES`: an anonymous caller costs no more than that.
Refusals answer in the agent body (``{"success": false, "error", "code"}``) with the
reference's codes; a body that is not the documented JSON answers like every other
route's (``INVALID_REQUEST_BODY`` and the 422 field errors).
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError

from ...sequencer import registration
from ...sequencer.api_keys import KeyRequestError
from ...sequencer.registration import (
    Quota,
    RegistrationError,
    RegistrationRequest,
)
from ...store.errors import StoreError
from .deps import ServicesDep, client_ip
from .errors import AGENT_ERROR_SCHEMA, ApiError, agent_error, responses, wire_for
from .validation import pydantic_error

log = structlog.get_logger("stateset_sequencer.http")

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

# The largest body a valid request can need: a 128-byte name and a 1,024-byte description
# even if every character is sent as a \\uXXXX escape, 50 store ids, and the flags.
MAX_BODY_BYTES = 16 * 1024


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StrictStr
    description: StrictStr | None = None
    tenantId: uuid.UUID | None = None  # noqa: N815 - wire names in the reference's camelCase
    storeIds: list[uuid.UUID] | None = None  # noqa: N815
    readOnly: StrictBool = False  # noqa: N815
    admin: StrictBool = False
    rateLimit: StrictInt | None = None  # noqa: N815


class Registered(BaseModel):
    success: bool
    agentId: str  # noqa: N815
    tenantId: str  # noqa: N815
    apiKey: str  # noqa: N815
    permissions: str
    message: str


# The body as the rules read it, so a schema-valid request is one the route accepts.
# JSON Schema counts characters where the limits count UTF-8 bytes: a name of 128
# characters can still be too long, which NAME_TOO_LONG says.
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": registration.MAX_NAME_BYTES,
            # Something besides whitespace (the name is trimmed), and no NUL.
            "pattern": "^[^\\x00]*[^\\s\\x00][^\\x00]*$",
            "description": f"1-{registration.MAX_NAME_BYTES} bytes of UTF-8 after trimming.",
        },
        "description": {
            "type": ["string", "null"],
            "maxLength": registration.MAX_DESCRIPTION_BYTES,
            "pattern": "^[^\\x00]*$",
            "description": f"At most {registration.MAX_DESCRIPTION_BYTES} bytes of UTF-8.",
        },
        "tenantId": {
            "type": "null",
            "description": "Must be absent or null: registration always creates a new tenant "
            "(any other value: 400 TENANT_ID_NOT_ALLOWED).",
        },
        "storeIds": {
            "type": ["array", "null"],
            "items": {"type": "string", "format": "uuid"},
            "maxItems": registration.MAX_STORE_IDS,
            "uniqueItems": True,
            "description": "Stores the key is limited to; empty or absent: every store.",
        },
        "readOnly": {"type": "boolean", "default": False},
        "admin": {
            "type": "boolean",
            "const": False,
            "description": "Must be false (true: 403 ADMIN_NOT_ALLOWED).",
        },
        "rateLimit": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": registration.MAX_RATE_LIMIT,
            "description": "Requests per rate-limit window for the minted key; a JSON "
            "integer (100.0 is refused with 422).",
        },
    },
}

QUOTA_HEADERS = {
    name: {"description": text, "schema": {"type": "integer"}}
    for name, text in (
        ("ratelimit-limit", "Registrations allowed per window for this client address"),
        ("ratelimit-remaining", "Registrations left in the current window"),
        ("ratelimit-reset", "Seconds until the window resets"),
    )
}
AGENT_BODY = {"application/json": {"schema": AGENT_ERROR_SCHEMA}}


def registrar(request: Request) -> registration.Registrar:
    value: registration.Registrar = request.app.state.registrar
    return value


def _quota_headers(quota: Quota | None) -> dict[str, str]:
    if quota is None:
        return {}
    return {
        "ratelimit-limit": str(quota.limit),
        "ratelimit-remaining": str(quota.remaining),
        "ratelimit-reset": str(quota.reset_seconds),
    }


def _too_large() -> ApiError:
    return ApiError(
        "PAYLOAD_TOO_LARGE",
        f"Request body exceeds {MAX_BODY_BYTES} bytes",
        reason="BODY_TOO_LARGE",
    )


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> RegistrationRequest:
    try:
        body = RegisterBody.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0].get("type") == "json_invalid":
            raise ApiError("INVALID_REQUEST_BODY", "Malformed JSON body") from None
        raise pydantic_error(exc) from None
    return RegistrationRequest(
        name=body.name,
        description=body.description,
        tenant_id=body.tenantId,
        store_ids=tuple(body.storeIds) if body.storeIds is not None else None,
        read_only=body.readOnly,
        admin=body.admin,
        rate_limit=body.rateLimit,
    )


@router.post(
    "/register",
    response_model=Registered,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": REQUEST_SCHEMA}},
        },
        "security": [],
    },
    responses={
        **responses(),
        200: {"description": "registered", "headers": QUOTA_HEADERS},
        403: {"description": "registration disabled, or admin asked for", "content": AGENT_BODY},
        429: {
            "description": "this client's registrations are spent for the window",
            "headers": {
                **QUOTA_HEADERS,
                "Retry-After": {"description": "seconds", "schema": {"type": "integer"}},
            },
            "content": AGENT_BODY,
        },
    },
)
async def register_agent(request: Request, services: ServicesDep) -> JSONResponse:
    """Register an agent without a credential: a new tenant, a new agent id and an API
    key for them (never admin). Off unless ``PUBLIC_AGENT_REGISTRATION_ENABLED=true``;
    each client address may register ``PUBLIC_AGENT_REGISTRATION_RATE_LIMIT_PER_MINUTE``
    times per window (default 30 a minute). The key is shown only in this answer."""
    gate = registrar(request)
    counter = services.metrics.agent_registrations
    client = client_ip(request, services)
    quota: Quota | None = None
    try:
        quota = gate.admit(client)
        parsed = _parse(await _read_body(request))
        done = await gate.register(
            services.store,
            parsed,
            quota,
            client=client,
            user_agent=request.headers.get("user-agent"),
            request_id=getattr(request.state, "request_id", None),
        )
    except RegistrationError as exc:
        code = wire_for(exc.reason).agent or str(exc.reason)
        counter.labels("error", code).inc()
        log.info("registration refused", code=code, client=client)
        error = agent_error(exc.reason, exc.message).response()
        error.headers.update(_quota_headers(exc.quota or quota))
        if exc.reason is registration.RegistrationReason.RATE_LIMIT_EXCEEDED and exc.quota:
            error.headers["Retry-After"] = str(exc.quota.reset_seconds)
        return error
    except KeyRequestError as exc:
        # The minting rule refused the key: check() should have caught it first.
        counter.labels("error", str(exc.reason)).inc()
        log.warning("registration refused by the minting rule", code=str(exc.reason))
        raise agent_error(exc.reason, exc.message) from None
    except ApiError as exc:
        counter.labels("error", exc.code).inc()
        raise
    except StoreError:
        counter.labels("error", "INTERNAL_ERROR").inc()
        raise
    counter.labels("success", "REGISTERED").inc()
    log.info("agent registered", agent_id=str(done.agent_id), tenant_id=str(done.tenant_id))
    return JSONResponse(
        {
            "success": True,
            "agentId": str(done.agent_id),
            "tenantId": str(done.tenant_id),
            "apiKey": done.api_key,
            "permissions": done.permissions,
            "message": "Agent registered. Store the API key now: it cannot be retrieved later.",
        },
        headers={**_quota_headers(done.quota), "Cache-Control": "no-store"},
    )

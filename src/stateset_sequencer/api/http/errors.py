"""The reference's three error bodies, one exception type per body, and the one table
that turns a service's reason into an HTTP answer.

* :class:`ApiError` — ``{"error": {"code", "numeric_code", "message", ...}}`` with an
  ``x-error-code`` header: ingest, reads, schemas (the reference's ``ApiError``).
* :class:`AuthFailure` — ``{"error": "<msg>", "code": "<snake_code>"}``: the auth
  middleware's body, with ``Retry-After`` on 429.
* :class:`AgentError` — ``{"success": false, "error", "code"}``: agent, admin and detailed
  health handlers.

Clients of the reference branch on these shapes, so each route keeps the one the
reference uses for it.

Services (``sequencer/``) raise exceptions that carry a *reason* (a member of
``BatchReason``, ``AuthReason``, ``KeyReason`` or ``SchemaReason``) and a message, never
a status. :data:`REASONS` maps every reason to its status and to its code in each body it
can be answered with; :func:`api_error`, :func:`agent_error` and :func:`auth_failure`
build the answer from it. A test walks every member of those enums and fails on one
without a row here.

Store faults have one mapping too, :data:`STORE_FAULTS`, applied on every route (ingest
included) by :func:`store_fault`; see there.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from ...anchoring.faults import NOT_CONFIGURED, AnchorReason, ChainError, ChainFailure
from ...sequencer.api_keys import KeyReason
from ...sequencer.auth import AuthError, AuthReason
from ...sequencer.commitments import CommitmentReason
from ...sequencer.cursors import CursorReason
from ...sequencer.ingest import BatchReason
from ...sequencer.policies import PolicyReason
from ...sequencer.projections import ProjectionReason
from ...sequencer.registration import RegistrationReason
from ...sequencer.schemas import SchemaReason
from ...store.errors import (
    ConcurrentWriteError,
    IntegrityError,
    MigrationError,
    OperationalError,
    StoreError,
)

# code -> (numeric code, HTTP status), as in the reference's src/api/error.rs
ERROR_CODES: dict[str, tuple[int, int]] = {
    "AUTH_REQUIRED": (1001, 401),
    "INVALID_API_KEY": (1002, 401),
    "INVALID_TOKEN": (1003, 401),
    "TOKEN_EXPIRED": (1004, 401),
    "INSUFFICIENT_PERMISSIONS": (1005, 403),
    "RATE_LIMIT_EXCEEDED": (2001, 429),
    "INVALID_REQUEST_BODY": (3001, 400),
    "MISSING_REQUIRED_FIELD": (3002, 400),
    "INVALID_FIELD_VALUE": (3003, 400),
    "PAYLOAD_TOO_LARGE": (3004, 413),
    "BATCH_TOO_LARGE": (3005, 413),
    "SCHEMA_VALIDATION_FAILED": (3006, 400),
    "SCHEMA_NOT_FOUND": (3007, 400),
    "RESOURCE_NOT_FOUND": (4001, 404),
    "EVENT_NOT_FOUND": (4002, 404),
    "BATCH_NOT_FOUND": (4003, 404),
    "ENTITY_NOT_FOUND": (4004, 404),
    "AGENT_KEY_NOT_FOUND": (4005, 404),
    "ALREADY_EXISTS": (5004, 409),
    "INVALID_PUBLIC_KEY": (6003, 400),
    "SEQUENCE_GAP": (7003, 409),
    "DATABASE_ERROR": (8001, 500),
    "SERVICE_UNAVAILABLE": (8002, 503),
    "TIMEOUT": (8003, 504),
    "INTERNAL_ERROR": (8999, 500),
}


class ApiError(Exception):
    """An error answered with the reference's ``ApiError`` body. ``reason`` is our finer
    cause (e.g. ``EMPTY_BATCH``), sent as ``details.reason`` so the reference's ``code``
    stays what its clients expect."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        numeric, default_status = ERROR_CODES[code]
        self.code = code
        self.numeric_code = numeric
        self.status = status if status is not None else default_status
        self.message = message
        self.details = dict(details or {})
        if reason is not None:
            self.details["reason"] = reason
        self.retry_after = retry_after

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "numeric_code": self.numeric_code,
            "message": self.message,
        }
        if request_id:
            error["request_id"] = request_id
        if self.details:
            error["details"] = self.details
        if self.retry_after is not None:
            error["retry_after"] = self.retry_after
        # The reference's clients read the nested object; its 0.8 SDK reads a flat
        # ``message`` and ``code`` (and would otherwise surface the object as its message):
        # both are given, so either finds what it looks for.
        return {"error": error, "message": self.message, "code": self.code}

    def response(self, request_id: str | None = None) -> JSONResponse:
        headers = {"x-error-code": self.code}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return JSONResponse(self.body(request_id), status_code=self.status, headers=headers)


class AuthFailure(Exception):
    """The auth middleware's refusal: ``{"error": msg, "code": snake_code}``."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        headers = {"x-error-code": self.code}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return JSONResponse(
            {"error": self.message, "code": self.code}, status_code=self.status, headers=headers
        )


class AgentError(Exception):
    """An agent/admin handler's refusal: ``{"success": false, "error", "code"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"success": False, "error": self.message, "code": self.code},
            status_code=self.status,
            headers={"x-error-code": self.code},
        )


# --- service reasons -> HTTP ----------------------------------------------------------------


class Body(enum.Enum):
    """The reference's three error bodies."""

    API = "api"  # ApiError: {"error": {"code", "numeric_code", "message", "details"}}
    AUTH = "auth"  # AuthFailure: {"error", "code"}
    AGENT = "agent"  # AgentError: {"success": false, "error", "code"}


@dataclass(frozen=True, slots=True)
class Wire:
    """How one reason is answered: its status, and its code in each body it can be
    answered with (None: never in that body). ``detail`` is what an ApiError body sends
    as ``details.reason`` (our finer cause beside the reference's coarser ``code``)."""

    status: int
    api: str | None = None
    agent: str | None = None
    auth: str | None = None
    detail: str | None = None

    @property
    def bodies(self) -> frozenset[Body]:
        named = {Body.API: self.api, Body.AGENT: self.agent, Body.AUTH: self.auth}
        return frozenset(body for body, code in named.items() if code is not None)


def _api(status: int, code: str, detail: str) -> Wire:
    return Wire(status, api=code, detail=detail)


def _agent(status: int, code: str) -> Wire:
    return Wire(status, agent=code)


# A scope refusal is answered in the body of the route that checks it: ApiError on
# ingest, reads and schemas (the reference's INSUFFICIENT_PERMISSIONS, with our reason),
# the agent body's FORBIDDEN on agent, admin and health routes.
def _scope(reason: str) -> Wire:
    return Wire(403, api="INSUFFICIENT_PERMISSIONS", agent="FORBIDDEN", detail=reason)


REASONS: dict[str, Wire] = {
    # sequencer/ingest.py: whole-batch faults (ApiError, as the reference's ingest handler)
    BatchReason.EMPTY_BATCH: _api(400, "INVALID_FIELD_VALUE", "EMPTY_BATCH"),
    BatchReason.MIXED_STREAM: _api(400, "INVALID_FIELD_VALUE", "MIXED_STREAM"),
    BatchReason.SOURCE_AGENT_MISMATCH: _api(400, "INVALID_FIELD_VALUE", "AGENT_MISMATCH"),
    BatchReason.AGENT_MISMATCH: _api(403, "INSUFFICIENT_PERMISSIONS", "AGENT_MISMATCH"),
    BatchReason.INVALID_FIELD: _api(400, "INVALID_FIELD_VALUE", "INVALID_FIELD"),
    BatchReason.MISSING_PAYLOAD: _api(400, "INVALID_FIELD_VALUE", "MISSING_PAYLOAD"),
    BatchReason.BATCH_TOO_LARGE: _api(413, "BATCH_TOO_LARGE", "BATCH_TOO_LARGE"),
    BatchReason.PAYLOAD_TOO_LARGE: _api(413, "PAYLOAD_TOO_LARGE", "PAYLOAD_TOO_LARGE"),
    # sequencer/auth.py: credentials (the auth middleware's body) ...
    AuthReason.MISSING_AUTH: Wire(401, auth="missing_auth"),
    AuthReason.INVALID_API_KEY: Wire(401, auth="invalid_api_key"),
    AuthReason.INVALID_JWT: Wire(401, auth="invalid_jwt"),
    AuthReason.TOKEN_EXPIRED: Wire(401, auth="token_expired"),
    AuthReason.RATE_LIMITED: Wire(429, auth="rate_limited"),
    # ours: an API key past its expires_at (docs/API_KEYS.md)
    AuthReason.API_KEY_EXPIRED: Wire(401, auth="api_key_expired"),
    # ... and scopes (the body of the route that checks them)
    AuthReason.INSUFFICIENT_PERMISSIONS: _scope("insufficient_permissions"),
    AuthReason.TENANT_ACCESS_DENIED: _scope("tenant_access_denied"),
    AuthReason.STORE_ACCESS_DENIED: _scope("store_access_denied"),
    # process-wide views and tenant-wide objects: the refusal names what is missing
    AuthReason.OPERATOR_REQUIRED: Wire(
        403, api="INSUFFICIENT_PERMISSIONS", agent="OPERATOR_REQUIRED", detail="operator_required"
    ),
    AuthReason.TENANT_WIDE_REQUIRED: Wire(
        403, api="INSUFFICIENT_PERMISSIONS", agent="TENANT_WIDE_REQUIRED", detail="tenant_wide"
    ),
    # sequencer/api_keys.py (the agent/admin body; its code is the reason)
    KeyReason.STORE_IDS_TOO_MANY: _agent(400, "STORE_IDS_TOO_MANY"),
    KeyReason.STORE_IDS_DUPLICATE: _agent(400, "STORE_IDS_DUPLICATE"),
    KeyReason.RATE_LIMIT_INVALID: _agent(400, "RATE_LIMIT_INVALID"),
    KeyReason.NO_PERMISSIONS: _agent(400, "NO_PERMISSIONS"),
    KeyReason.INVALID_KEY_PREFIX: _agent(400, "INVALID_KEY_PREFIX"),
    KeyReason.KEY_NOT_FOUND: _agent(404, "KEY_NOT_FOUND"),
    KeyReason.AMBIGUOUS_PREFIX: _agent(409, "AMBIGUOUS_PREFIX"),
    KeyReason.ALREADY_REVOKED: _agent(409, "ALREADY_REVOKED"),
    KeyReason.TENANT_WIDENED: _agent(403, "TENANT_WIDENED"),
    KeyReason.STORE_SCOPE_WIDENED: _agent(403, "STORE_SCOPE_WIDENED"),
    KeyReason.AGENT_SCOPE_WIDENED: _agent(403, "AGENT_SCOPE_WIDENED"),
    KeyReason.ADMIN_WIDENED: _agent(403, "ADMIN_NOT_ALLOWED"),
    KeyReason.WRITE_WIDENED: _agent(403, "WRITE_NOT_ALLOWED"),
    KeyReason.RATE_LIMIT_WIDENED: _agent(403, "RATE_LIMIT_WIDENED"),
    KeyReason.EXPIRY_WIDENED: _agent(403, "EXPIRY_WIDENED"),
    KeyReason.EXPIRY_INVALID: _agent(400, "EXPIRY_INVALID"),
    KeyReason.EXPIRY_IN_PAST: _agent(400, "EXPIRY_IN_PAST"),
    KeyReason.EXPIRY_TOO_FAR: _agent(400, "EXPIRY_TOO_FAR"),
    KeyReason.KEY_LIMIT_REACHED: _agent(409, "KEY_LIMIT_REACHED"),
    KeyReason.LAST_ADMIN_KEY: _agent(409, "LAST_ADMIN_KEY"),
    # sequencer/schemas.py (ApiError, the reference's INVALID_FIELD_VALUE with our reason)
    SchemaReason.INVALID_EVENT_TYPE: _api(400, "INVALID_FIELD_VALUE", "INVALID_EVENT_TYPE"),
    SchemaReason.INVALID_COMPATIBILITY: _api(400, "INVALID_FIELD_VALUE", "INVALID_COMPATIBILITY"),
    SchemaReason.INVALID_DESCRIPTION: _api(400, "INVALID_FIELD_VALUE", "INVALID_DESCRIPTION"),
    SchemaReason.DESCRIPTION_TOO_LONG: _api(400, "INVALID_FIELD_VALUE", "DESCRIPTION_TOO_LONG"),
    SchemaReason.INVALID_SCHEMA: _api(400, "INVALID_FIELD_VALUE", "INVALID_SCHEMA"),
    SchemaReason.SCHEMA_TOO_LARGE: _api(400, "INVALID_FIELD_VALUE", "SCHEMA_TOO_LARGE"),
    SchemaReason.INVALID_STATUS: _api(400, "INVALID_FIELD_VALUE", "INVALID_STATUS"),
    # sequencer/registration.py (the agent body; its code is the reason, as the reference's)
    RegistrationReason.REGISTRATION_DISABLED: _agent(403, "REGISTRATION_DISABLED"),
    RegistrationReason.RATE_LIMIT_EXCEEDED: _agent(429, "RATE_LIMIT_EXCEEDED"),
    RegistrationReason.INVALID_NAME: _agent(400, "INVALID_NAME"),
    RegistrationReason.NAME_TOO_LONG: _agent(400, "NAME_TOO_LONG"),
    RegistrationReason.DESCRIPTION_TOO_LONG: _agent(400, "DESCRIPTION_TOO_LONG"),
    RegistrationReason.INVALID_DESCRIPTION: _agent(400, "INVALID_DESCRIPTION"),
    RegistrationReason.STORE_IDS_TOO_MANY: _agent(400, "STORE_IDS_TOO_MANY"),
    RegistrationReason.STORE_IDS_DUPLICATE: _agent(400, "STORE_IDS_DUPLICATE"),
    RegistrationReason.RATE_LIMIT_INVALID: _agent(400, "RATE_LIMIT_INVALID"),
    RegistrationReason.TENANT_ID_NOT_ALLOWED: _agent(400, "TENANT_ID_NOT_ALLOWED"),
    RegistrationReason.ADMIN_NOT_ALLOWED: _agent(403, "ADMIN_NOT_ALLOWED"),
    # sequencer/policies.py (the agent body, as the other /api/v1/agents routes; the
    # reference answers these in plain text with the same statuses and messages)
    PolicyReason.TOO_MANY_RULES: _agent(400, "POLICY_TOO_MANY_RULES"),
    PolicyReason.INVALID_RULE: _agent(400, "POLICY_INVALID_RULE"),
    PolicyReason.INVALID_MAX_PAYLOAD: _agent(400, "POLICY_INVALID_MAX_PAYLOAD_BYTES"),
    PolicyReason.POLICY_NOT_FOUND: _agent(404, "AGENT_POLICY_NOT_FOUND"),
    PolicyReason.AGENT_NOT_FOUND: _agent(404, "AGENT_NOT_FOUND"),
    # sequencer/cursors.py (ApiError, as the reads): another agent's cursor is a scope
    # refusal; one past the head is the reference's own 400. (Over HTTP a sequence that is
    # no u64 is already refused by the body model, 422 as the reference's extractor.)
    CursorReason.AGENT_ACCESS_DENIED: _scope("agent_access_denied"),
    CursorReason.INVALID_SEQUENCE: _api(400, "INVALID_FIELD_VALUE", "INVALID_SEQUENCE"),
    CursorReason.AHEAD_OF_HEAD: _api(400, "INVALID_FIELD_VALUE", "AHEAD_OF_HEAD"),
    # sequencer/projections.py (ApiError, as the reads)
    ProjectionReason.INVALID_SOURCE: _api(400, "INVALID_FIELD_VALUE", "INVALID_SOURCE"),
    ProjectionReason.NOT_FOUND: _api(404, "RESOURCE_NOT_FOUND", "PROJECTION_NOT_FOUND"),
    ProjectionReason.LEGACY_NOT_KEPT: _api(
        404, "RESOURCE_NOT_FOUND", "LEGACY_PROJECTIONS_NOT_KEPT"
    ),
    # sequencer/commitments.py (ApiError, as the reads). The reference answers every range
    # fault 400 in plain text; a start already committed to another end is ours, 409.
    CommitmentReason.INVALID_RANGE: _api(400, "INVALID_FIELD_VALUE", "INVALID_RANGE"),
    CommitmentReason.RANGE_TOO_LARGE: _api(400, "INVALID_FIELD_VALUE", "RANGE_TOO_LARGE"),
    CommitmentReason.NOT_NEXT: _api(400, "INVALID_FIELD_VALUE", "RANGE_NOT_NEXT"),
    CommitmentReason.RANGE_CONFLICT: _api(409, "ALREADY_EXISTS", "RANGE_CONFLICT"),
    CommitmentReason.EVENTS_MISSING: _api(400, "INVALID_FIELD_VALUE", "EVENTS_MISSING"),
    CommitmentReason.NOTHING_TO_COMMIT: _api(400, "INVALID_FIELD_VALUE", "NOTHING_TO_COMMIT"),
    CommitmentReason.NOT_FOUND: _api(404, "BATCH_NOT_FOUND", "COMMITMENT_NOT_FOUND"),
    CommitmentReason.NOT_COMMITTED: _api(404, "RESOURCE_NOT_FOUND", "NOT_COMMITTED"),
    CommitmentReason.OUTSIDE_COMMITMENT: _api(400, "INVALID_FIELD_VALUE", "OUTSIDE_COMMITMENT"),
    CommitmentReason.WRONG_STREAM: _scope("commitment_of_another_stream"),
    # anchoring/anchorer.py (ApiError, as the commitment routes): a commitment whose
    # predecessor in its stream is not on chain yet would revert SequenceGap; the chain
    # holding other roots for the batch, or another transaction recorded meanwhile, are
    # conflicts the caller must look at, not retry.
    AnchorReason.OUT_OF_ORDER: _api(409, "SEQUENCE_GAP", "ANCHOR_OUT_OF_ORDER"),
    AnchorReason.CHAIN_DISAGREES: _api(409, "ALREADY_EXISTS", "ANCHOR_CHAIN_DISAGREES"),
    AnchorReason.RECORD_CONFLICT: _api(409, "ALREADY_EXISTS", "ANCHOR_RECORD_CONFLICT"),
}

SERVICE_REASONS: tuple[type[enum.StrEnum], ...] = (
    BatchReason,
    AuthReason,
    KeyReason,
    SchemaReason,
    RegistrationReason,
    PolicyReason,
    CursorReason,
    ProjectionReason,
    CommitmentReason,
    AnchorReason,
)
"""Every enum of reasons a service raises; the test of the table walks these."""


def wire_for(reason: str) -> Wire:
    return REASONS[reason]


def status_for(reason: str) -> int:
    """The HTTP status a service reason is answered with."""
    return REASONS[reason].status


def api_error(reason: str, message: str, *, retry_after: int | None = None) -> ApiError:
    """The ApiError answer for a reason (ingest, reads, schemas)."""
    wire = REASONS[reason]
    if wire.api is None:
        raise LookupError(f"reason {reason} has no ApiError form")
    return ApiError(
        wire.api, message, status=wire.status, reason=wire.detail, retry_after=retry_after
    )


def agent_error(reason: str, message: str) -> AgentError:
    """The agent/admin body's answer for a reason."""
    wire = REASONS[reason]
    if wire.agent is None:
        raise LookupError(f"reason {reason} has no agent-body form")
    return AgentError(wire.status, wire.agent, message)


def auth_failure(exc: AuthError) -> AuthFailure:
    """The auth middleware's answer for a refused credential or rate limit."""
    wire = REASONS[exc.reason]
    if wire.auth is None:
        raise LookupError(f"reason {exc.reason} has no auth-body form")
    return AuthFailure(wire.status, wire.auth, exc.message, exc.retry_after)


# --- store faults -> HTTP --------------------------------------------------------------------

DB_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class StoreFault:
    status: int
    code: str  # the ApiError code
    detail: str  # details.reason
    message: str
    retry_after: int | None = None


STORE_FAULTS: tuple[tuple[type[StoreError], StoreFault], ...] = (
    (
        OperationalError,
        StoreFault(
            503,
            "SERVICE_UNAVAILABLE",
            "DATABASE_UNAVAILABLE",
            "Database unavailable",
            DB_RETRY_AFTER_SECONDS,
        ),
    ),
    (
        ConcurrentWriteError,
        StoreFault(
            503,
            "SERVICE_UNAVAILABLE",
            "WRITE_CONFLICT",
            "Concurrent writes kept conflicting; retry",
            DB_RETRY_AFTER_SECONDS,
        ),
    ),
    (IntegrityError, StoreFault(500, "DATABASE_ERROR", "DATABASE_INTEGRITY", "Database error")),
    (MigrationError, StoreFault(500, "DATABASE_ERROR", "DATABASE_MIGRATION", "Database error")),
    (StoreError, StoreFault(500, "DATABASE_ERROR", "DATABASE_ERROR", "Database error")),
)
"""The one mapping of store faults, the same on every route, ingest included (first
matching class wins):

* the database is unreachable or refused the operation (:class:`OperationalError`), or
  concurrent writers kept colliding after the sequencer's own retries
  (:class:`ConcurrentWriteError`): **503** ``SERVICE_UNAVAILABLE`` with ``Retry-After``.
  Nothing was written, and the same request may well succeed in a moment: that is what a
  client's retry loop and an operator's alert need to see. The reference answers 500
  ``DATABASE_ERROR`` on ingest for every database fault; we differ on purpose here (its
  own auth layer already answers an unavailable backend with 503);
* anything else (:class:`IntegrityError`: a row broke a rule of the schema, which is a
  bug or data no retry will fix; :class:`MigrationError`): **500** ``DATABASE_ERROR``, as
  the reference does, without ``Retry-After``.

``details.reason`` names the class of fault; the message never carries the driver's
text (that goes to the log). The auth layer, which answers in its own body, gives its
reference answer for every store fault: 503 ``auth_backend_unavailable`` (it cannot tell
the caller whether the credential is good), with the same ``Retry-After``.
"""

AUTH_BACKEND_UNAVAILABLE = "auth_backend_unavailable"

CHAIN_RETRY_AFTER_SECONDS = 5
# Chain faults, as store faults: the node away or slow is 503/504 with Retry-After (the
# same call may work in a moment); a node or contract that said no is 502 (our upstream
# refused; a retry gives the same answer). details.reason names the class, details.revert
# the contract's custom error. The reference answers all of these 500.
CHAIN_FAULTS: dict[ChainFailure, tuple[int, str]] = {
    ChainFailure.BREAKER_OPEN: (503, "SERVICE_UNAVAILABLE"),
    ChainFailure.UNAVAILABLE: (503, "SERVICE_UNAVAILABLE"),
    ChainFailure.TIMEOUT: (504, "TIMEOUT"),
    ChainFailure.REVERTED: (502, "INTERNAL_ERROR"),
    ChainFailure.REJECTED: (502, "INTERNAL_ERROR"),
    ChainFailure.WRONG_CHAIN: (502, "INTERNAL_ERROR"),
    ChainFailure.LOG_NOT_FOUND: (502, "INTERNAL_ERROR"),
}
ANCHORING_NOT_CONFIGURED = "ANCHORING_NOT_CONFIGURED"


def chain_fault(exc: ChainError, retry_after: float | None = None) -> ApiError:
    """The ApiError answer for a chain fault on any anchoring route."""
    status, code = CHAIN_FAULTS[exc.failure]
    details: dict[str, Any] = {}
    if exc.revert is not None:
        details["revert"] = exc.revert.name
        details["revert_args"] = [a.hex() if isinstance(a, bytes) else a for a in exc.revert.args]
    wait = None
    if status in (503, 504):
        wait = max(int(retry_after or 0), CHAIN_RETRY_AFTER_SECONDS)
    return ApiError(
        code,
        exc.message,
        status=status,
        reason=exc.failure.value.upper(),
        details=details,
        retry_after=wait,
    )


def anchoring_not_configured() -> ApiError:
    return ApiError("SERVICE_UNAVAILABLE", NOT_CONFIGURED, reason=ANCHORING_NOT_CONFIGURED)


def store_fault_of(exc: StoreError) -> StoreFault:
    for kind, fault in STORE_FAULTS:
        if isinstance(exc, kind):
            return fault
    raise AssertionError("StoreError is the last row")  # pragma: no cover


def store_fault(exc: StoreError) -> ApiError:
    """The ApiError answer for a store fault on any route."""
    fault = store_fault_of(exc)
    return ApiError(
        fault.code,
        fault.message,
        status=fault.status,
        reason=fault.detail,
        retry_after=fault.retry_after,
    )


def auth_backend_failure() -> AuthFailure:
    """The auth layer's answer when the store behind credentials fails."""
    return AuthFailure(
        503,
        AUTH_BACKEND_UNAVAILABLE,
        "Authentication backend unavailable",
        retry_after=DB_RETRY_AFTER_SECONDS,
    )


RATE_LIMIT_UNAVAILABLE = "rate_limit_unavailable"


def rate_limit_unavailable() -> AuthFailure:
    """The shared rate limiter failing closed (docs/RATE_LIMITS.md): the request is
    refused, not let through uncounted, and may be retried in a moment."""
    return AuthFailure(
        503,
        RATE_LIMIT_UNAVAILABLE,
        "Rate limiter unavailable; retry shortly",
        retry_after=DB_RETRY_AFTER_SECONDS,
    )


# --- OpenAPI descriptions of the three bodies --------------------------------------------

API_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message", "code"],
    "properties": {
        "message": {"type": "string", "description": "error.message, for flat readers"},
        "code": {"type": "string", "description": "error.code, for flat readers"},
        "error": {
            "type": "object",
            "required": ["code", "numeric_code", "message"],
            "properties": {
                "code": {"type": "string"},
                "numeric_code": {"type": "integer"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "details": {"type": "object"},
                "retry_after": {"type": "integer"},
            },
        },
    },
}
AUTH_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}
AGENT_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["success", "error", "code"],
    "properties": {
        "success": {"type": "boolean", "const": False},
        "error": {"type": "string"},
        "code": {"type": "string"},
    },
}
# Auth and validation answers can come from either layer before a handler runs.
ANY_ERROR_SCHEMA: dict[str, Any] = {
    "anyOf": [API_ERROR_SCHEMA, AUTH_ERROR_SCHEMA, AGENT_ERROR_SCHEMA]
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route's error statuses (plus those any route can give:
    bad input, auth, size limit, rate limit, a store fault (500, 503) and timeout)."""
    return {
        status: {
            "description": "error",
            "content": {"application/json": {"schema": ANY_ERROR_SCHEMA}},
        }
        for status in sorted({400, 401, 403, 413, 422, 429, 500, 503, 504, *statuses})
    }

"""The reference's three error bodies, and one exception type per body.

* :class:`ApiError` — ``{"error": {"code", "numeric_code", "message", ...}}`` with an
  ``x-error-code`` header: ingest, reads, schemas (the reference's ``ApiError``).
* :class:`AuthFailure` — ``{"error": "<msg>", "code": "<snake_code>"}``: the auth
  middleware's body, with ``Retry-After`` on 429.
* :class:`AgentError` — ``{"success": false, "error", "code"}``: agent, admin and detailed
  health handlers.

Clients of the reference branch on these shapes, so each route keeps the one the
reference uses for it.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

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
        return {"error": error}

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


# --- OpenAPI descriptions of the three bodies --------------------------------------------

API_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
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
        }
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
    bad input, auth, size limit, rate limit and timeout)."""
    return {
        status: {
            "description": "error",
            "content": {"application/json": {"schema": ANY_ERROR_SCHEMA}},
        }
        for status in sorted({400, 401, 403, 413, 422, 429, 504, *statuses})
    }

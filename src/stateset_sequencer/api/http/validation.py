"""Input faults as precise API errors: which field, what is wrong, which status.

Malformed JSON is 400 ``INVALID_REQUEST_BODY``; a body that parses but has a wrong type
or a missing field is 422 (as the reference's JSON extractor answers); a bad query or
path parameter is 400 (as its ``Query``/``Path`` extractors answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from .errors import ApiError

MAX_LISTED = 5


def _location(loc: Sequence[Any], prefix: str = "") -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "body"


def _describe(errors: Sequence[Any], prefix: str = "") -> tuple[str, str]:
    """``(code, message)`` for a list of pydantic error dicts."""
    first = errors[0]
    code = "MISSING_REQUIRED_FIELD" if first.get("type") == "missing" else "INVALID_FIELD_VALUE"
    listed = [
        f"{_location(e.get('loc', ()), prefix)}: {e.get('msg', 'invalid')}"
        for e in errors[:MAX_LISTED]
    ]
    more = len(errors) - MAX_LISTED
    return code, "; ".join(listed) + (f" (and {more} more)" if more > 0 else "")


def pydantic_error(exc: ValidationError, prefix: str = "") -> ApiError:
    code, message = _describe(exc.errors(include_url=False, include_input=False), prefix)
    return ApiError(code, message, status=422)


def request_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's own validation of query, path and body parameters."""
    errors = list(exc.errors())
    if not errors:
        return ApiError("INVALID_REQUEST_BODY", "Invalid request")
    first = errors[0]
    kind = first.get("type", "")
    loc = list(first.get("loc", ()))
    if kind == "json_invalid":
        return ApiError("INVALID_REQUEST_BODY", f"Malformed JSON: {first.get('msg', '')}")
    where = loc[0] if loc else "body"
    cleaned = [{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in errors]
    code, message = _describe(cleaned, prefix=str(where) if where != "body" else "")
    if where == "body":
        if kind == "missing" and len(loc) == 1:
            return ApiError("INVALID_REQUEST_BODY", "Request body is required", status=422)
        return ApiError(code, message, status=422)
    return ApiError(code, message, status=400)

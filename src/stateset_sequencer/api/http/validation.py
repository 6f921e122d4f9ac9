"""Input faults as precise API errors: which field, what is wrong, which status.

Malformed JSON is 400 ``INVALID_REQUEST_BODY``; a body that parses but has a wrong type
or a missing field is 422 (as the reference's JSON extractor answers); a bad query or
path parameter is 400 (as its ``Query``/``Path`` extractors answer).

Every message is ours: where the fault is and what is wrong, never a decoder's or a
library's own text (which names Python's codecs, limits and exception classes).
"""

from __future__ import annotations

import json
import sys
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
    listed = [f"{_location(e.get('loc', ()), prefix)}: {_message(e)}" for e in errors[:MAX_LISTED]]
    more = len(errors) - MAX_LISTED
    return code, "; ".join(listed) + (f" (and {more} more)" if more > 0 else "")


# pydantic's messages that speak of its own parser rather than of the request.
_OWN_WORDS = {"string_unicode": "not valid UTF-8 (it holds a lone surrogate)"}


def _message(error: Any) -> str:
    """pydantic's message in our words where it has its own, and without the
    "Value error, " it puts before our validators' messages."""
    own = _OWN_WORDS.get(str(error.get("type", "")))
    if own is not None:
        return own
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def _line_column(doc: Any, pos: Any) -> str:
    if not isinstance(doc, str) or not isinstance(pos, int):
        return ""
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    return f" at line {line}, column {column}"


def body_parse_error(cause: BaseException | None) -> ApiError | None:
    """Our answer for a fault FastAPI met while decoding a JSON body, which it reports as
    a bare 400 with the decoder's exception as the cause; None for any other cause."""
    if isinstance(cause, json.JSONDecodeError):
        where = f" at line {cause.lineno}, column {cause.colno}"
        return ApiError("INVALID_REQUEST_BODY", f"Malformed JSON body: not valid JSON{where}")
    if isinstance(cause, UnicodeDecodeError):
        return ApiError(
            "INVALID_REQUEST_BODY", f"Malformed JSON body: not valid UTF-8 (byte {cause.start})"
        )
    if isinstance(cause, RecursionError):
        return ApiError("INVALID_REQUEST_BODY", "Malformed JSON body: nested too deeply")
    if isinstance(cause, ValueError):  # the decoder's int() over a too-long digit run
        digits = sys.get_int_max_str_digits()
        return ApiError(
            "INVALID_REQUEST_BODY",
            f"Malformed JSON body: an integer has more than {digits} digits",
        )
    return None


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
        # FastAPI's own report of json.loads' fault: loc is ("body", offset), body the text.
        where = _line_column(exc.body, loc[1] if len(loc) > 1 else None)
        return ApiError("INVALID_REQUEST_BODY", f"Malformed JSON body: not valid JSON{where}")
    where = loc[0] if loc else "body"
    cleaned = [{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in errors]
    code, message = _describe(cleaned, prefix=str(where) if where != "body" else "")
    if where == "body":
        if kind == "missing" and len(loc) == 1:
            return ApiError("INVALID_REQUEST_BODY", "Request body is required", status=422)
        return ApiError(code, message, status=422)
    return ApiError(code, message, status=400)

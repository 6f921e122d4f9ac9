"""Text both stores can hold: the one rule, for every field a client can put in a row.

A string is *storable* when

1. it is valid UTF-8: no lone surrogate (JSON's ``"\\ud800"`` escape decodes to one in
   Python, and neither SQLite's nor PostgreSQL's drivers can encode it);
2. its length in UTF-8 **bytes** (not characters: the reference counts bytes) is within
   the field's bounds;
3. it holds no NUL (U+0000): PostgreSQL ``text`` cannot hold it while SQLite's can, and a
   value one backend stores and the other refuses would make the two disagree, so both
   refuse it.

The checks run in that order, so a value with several faults reports the first: the
size, which the reference checks too, before NUL, which is our rule alone (a value over
its limit gets the reference's answer whatever else is wrong with it).

Rules 1 and 2 are also the protocol's own rule for the text fields of an event (the
reference checks byte lengths, and text that is not UTF-8 cannot be hashed):
:func:`utf8_text` is that part alone, for ``ves.envelope``'s per-event check, where a
signed event may well carry NUL. :func:`storable_text` is the whole rule, for every place
that puts text in a row: the ingest pipeline (which refuses the whole request), the
schema registry, the HTTP layer. Both are pure functions of the text, so none of their
callers knows which backend is behind the store. Writers refuse unstorable text; readers
answer that it matches nothing, since nothing stored can equal it.

A JSON value (a payload, an encrypted payload's fields, a signature bundle) is stored as
its JSON text, so the rule applies to that text, whatever the value's strings hold:
NUL in a string is written as the escape ``\\u0000`` and is storable, while a lone
surrogate stays one and is not. Every string of the value, member names included, is
thus covered by checking the one text; :func:`json_fault` then names the string at fault
by its path, so the refusal says where.

Integers have a bound of their own: :data:`INT32_MAX`, for a value a store keeps in a
32-bit column (PostgreSQL ``INTEGER``) although the protocol allows a u32.
"""

from __future__ import annotations

import enum
from typing import Any

from .errors import VesError

INT32_MAX = 2**31 - 1


class TextFault(enum.StrEnum):
    """Why a string cannot be stored, in the order the checks run."""

    NOT_UTF8 = "not_utf8"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    NUL = "nul"


class UnstorableText(VesError):
    """A string breaks the storable-text rule; ``fault`` says which part, ``field`` names
    the value, ``size`` is its UTF-8 byte length when it has one."""

    def __init__(self, field: str, fault: TextFault, message: str, size: int | None) -> None:
        super().__init__(message)
        self.field = field
        self.fault = fault
        self.message = message
        self.size = size


def utf8_size(value: str) -> int | None:
    """UTF-8 byte length; None for text that is not valid UTF-8 (a lone surrogate)."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _check(
    value: str, field: str, max_bytes: int | None, min_bytes: int, nul_ok: bool = False
) -> tuple[int | None, UnstorableText | None]:
    size = utf8_size(value)
    if size is None:
        message = f"{field} is not valid UTF-8 (it holds a lone surrogate)"
        return None, UnstorableText(field, TextFault.NOT_UTF8, message, None)
    if size < min_bytes or (max_bytes is not None and size > max_bytes):
        if max_bytes is None:
            bounds = f"at least {min_bytes}"
        elif min_bytes == 0:
            bounds = f"at most {max_bytes}"
        else:
            bounds = f"{min_bytes}-{max_bytes}"
        fault = TextFault.TOO_SHORT if size < min_bytes else TextFault.TOO_LONG
        message = f"{field} must be {bounds} bytes of UTF-8, got {size}"
        return size, UnstorableText(field, fault, message, size)
    if not nul_ok and "\x00" in value:
        return size, UnstorableText(field, TextFault.NUL, f"{field} must not contain NUL", size)
    return size, None


def text_fault(
    value: str, *, field: str, max_bytes: int | None = None, min_bytes: int = 0
) -> UnstorableText | None:
    """What is wrong with ``value`` under the rule (None: nothing)."""
    return _check(value, field, max_bytes, min_bytes)[1]


def storable_text(
    value: str, *, field: str, max_bytes: int | None = None, min_bytes: int = 0
) -> int:
    """Check ``value`` against the rule and return its UTF-8 byte length; raises
    :class:`UnstorableText` at the first fault."""
    size, fault = _check(value, field, max_bytes, min_bytes)
    if fault is not None:
        raise fault
    assert size is not None
    return size


def utf8_text(value: str, *, field: str, max_bytes: int | None = None, min_bytes: int = 0) -> int:
    """Rules 1 and 2 only (valid UTF-8 within the byte bounds; NUL allowed): the text rule
    of a signed event. Returns the UTF-8 byte length; raises :class:`UnstorableText`."""
    size, fault = _check(value, field, max_bytes, min_bytes, nul_ok=True)
    if fault is not None:
        raise fault
    assert size is not None
    return size


def is_storable(value: str, *, max_bytes: int | None = None, min_bytes: int = 0) -> bool:
    """Whether ``value`` could be stored at all: a read keyed by text that is not storable
    can answer "nothing" without asking the store."""
    return _check(value, "value", max_bytes, min_bytes)[1] is None


def make_storable(value: str, *, max_bytes: int) -> str:
    """``value`` made storable, for free text the service records about a request (an
    audit line; never data a signature covers): NUL and lone surrogates become U+FFFD,
    and the text is cut to ``max_bytes`` at a character boundary."""
    cleaned = "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in value)
    raw = cleaned.encode("utf-8")
    return cleaned if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", "ignore")


def _member(key: str) -> str:
    """A member name as a path step: ``.name`` when plain, else quoted (and cut short)."""
    if key.isidentifier() and key.isascii():
        return f".{key}"
    quoted = "".join(c if c.isprintable() and c not in '"\\' else "?" for c in key[:40])
    return f'["{quoted}{"..." if len(key) > 40 else ""}"]'


def _shorten(path: str, limit: int = 200) -> str:
    """A path short enough for a message, keeping its start and its end."""
    return path if len(path) <= limit else f"{path[: limit - 63]}...{path[-60:]}"


def json_fault(value: Any, *, field: str) -> UnstorableText | None:
    """A string of a decoded JSON value (member names included) that its stored JSON text
    cannot hold, named by its path (``payload.items[2].note``); None when every string is
    valid UTF-8. Walked depth first, without recursion (the value may be deeply nested)."""
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if utf8_size(item) is None:
                where = _shorten(path)
                message = f"{where} is not valid UTF-8 (it holds a lone surrogate)"
                return UnstorableText(where, TextFault.NOT_UTF8, message, None)
        elif isinstance(item, dict):
            children: list[tuple[str, Any]] = []
            for key, child in item.items():
                if isinstance(key, str) and utf8_size(key) is None:
                    where = _shorten(path)
                    message = f"a member name in {where} is not valid UTF-8 (a lone surrogate)"
                    return UnstorableText(where, TextFault.NOT_UTF8, message, None)
                children.append((path + _member(str(key)), child))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(f"{path}[{i}]", child) for i, child in enumerate(item)]))
    return None

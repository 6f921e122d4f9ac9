"""RFC 8785 canonical JSON, byte-identical to the reference's ``serde_json_canonicalizer`` 0.3.1.

What that crate does, and so what this module does (VES_PROTOCOL §2):

* object members sorted by the UTF-16 code units of their keys;
* every number, integers included, goes through an IEEE-754 double and is printed in
  ECMAScript ``Number.prototype.toString`` form, so integers above 2**53 are rounded, not
  refused;
* NaN and infinities are refused, and so are lone surrogates (serde_json cannot hold them);
* strings escaped as serde_json does: ``\\"``, ``\\\\``, the five short control escapes,
  every other control character as lowercase ``\\u00xx``, everything else raw.

A fast path through orjson is taken only for values whose bytes it provably prints the same
(see :func:`_orjson_safe`); a property test compares both paths.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import orjson

from .errors import NonCanonical

JsonValue: TypeAlias = (
    None | bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
)

# json's C encoder escapes exactly serde_json's set with ensure_ascii=False: '"', '\\',
# \b \f \n \r \t, and other C0 controls as lowercase \u00xx; DEL, U+2028/9 and '/' stay raw.
_encode_string = json.encoder.c_encode_basestring or json.encoder.py_encode_basestring  # type: ignore[attr-defined]

# Integers in this range print the same as their double, and orjson prints them exactly.
_SAFE_INT = 2**53
# Keys made only of code points below U+D800 sort identically by code point (orjson) and
# by UTF-16 code unit (the crate); the orders only part for supplementary characters.
_SAFE_KEY_MAX = "\ud7ff"
_FLOAT_PLAIN_MIN = 1e-5
_FLOAT_PLAIN_MAX = 1e15


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value.

    Raises :class:`NonCanonical` for anything JSON cannot carry canonically.
    """
    if _orjson_safe(value, 0):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONEncodeError, TypeError):
            pass  # fall through: the slow path names the fault precisely
    return canonicalize_slow(value)


def canonicalize_slow(value: Any) -> bytes:
    """The reference path alone, without the orjson shortcut: :func:`canonicalize`'s
    fallback, and what tests and benchmarks compare the shortcut with."""
    parts: list[str] = []
    _emit(value, parts, 0)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        raise NonCanonical("string contains a lone surrogate") from None


_MAX_DEPTH = 128  # serde_json's own recursion limit


def _orjson_safe(value: Any, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return bool(-_SAFE_INT <= value <= _SAFE_INT)
    if kind is float:
        # orjson prints shortest round-trip digits like ECMAScript, but lays out integral
        # values ("1.0") and exponents ("1e16", "1e-6") its own way; in this band both
        # print plain decimals and agree byte for byte.
        return bool(_FLOAT_PLAIN_MIN <= abs(value) < _FLOAT_PLAIN_MAX and not value.is_integer())
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (key and max(key) > _SAFE_KEY_MAX):
                return False
            if not _orjson_safe(item, depth + 1):
                return False
        return True
    if kind is list:
        return all(_orjson_safe(item, depth + 1) for item in value)
    # tuples, subclasses and anything else go the reference way
    return False


def _emit(value: Any, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise NonCanonical(f"nesting deeper than {_MAX_DEPTH} levels")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif isinstance(value, int):
        try:
            out.append(es_number(float(value)))
        except OverflowError:
            raise NonCanonical("integer is too large for an IEEE-754 double") from None
    elif isinstance(value, float):
        out.append(es_number(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key in sorted(value, key=_utf16_key):
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(key))
            out.append(":")
            _emit(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _emit(item, out, depth + 1)
        out.append("]")
    else:
        raise NonCanonical(f"{type(value).__name__} is not a JSON value")


def _utf16_key(key: object) -> bytes:
    if not isinstance(key, str):
        raise NonCanonical(f"object key must be a string, got {type(key).__name__}")
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError:
        raise NonCanonical("object key contains a lone surrogate") from None


def es_number(x: float) -> str:
    """ECMAScript ``Number.prototype.toString`` of a double (ECMA-262 §6.1.6.1.20).

    ``repr`` gives the shortest digits that round-trip, which is what ryu-js picks too;
    only the layout rules differ, and they are applied here.
    """
    if math.isnan(x) or math.isinf(x):
        raise NonCanonical("NaN and Infinity have no JSON form")
    if x == 0:
        return "0"  # also -0
    sign = "-" if x < 0 else ""
    text = repr(abs(x))
    mantissa, _, exp_text = text.partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    point = len(int_part) + (int(exp_text) if exp_text else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        exponent = n - 1
        exp_sign = "+" if exponent >= 0 else "-"
        head = digits if k == 1 else digits[0] + "." + digits[1:]
        body = f"{head}e{exp_sign}{abs(exponent)}"
    return sign + body


def loads(text: str | bytes) -> Any:
    """Parse JSON as serde_json does for hashing: UTF-8 only (no byte-order mark, no
    UTF-16), NaN/Infinity literals and numbers beyond the double range are refused;
    duplicate keys keep the last value. Every fault is a :class:`NonCanonical` that says
    in our words what is wrong with the text and where, never the decoder's own message."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NonCanonical(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_parse_float)
    except NonCanonical:
        raise
    except json.JSONDecodeError as exc:
        raise NonCanonical(f"not valid JSON at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise NonCanonical("nested too deeply") from None
    except ValueError:
        # The decoder's only other fault: an integer longer than Python converts.
        raise NonCanonical(
            f"an integer has more than {sys.get_int_max_str_digits()} digits"
        ) from None


def _refuse_constant(name: str) -> Any:
    raise NonCanonical(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NonCanonical(f"number out of range: {text[:40]}")
    return value

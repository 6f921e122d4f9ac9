"""The OpenAPI document as YAML, for ``/docs/openapi.yaml`` (the help link of the
deprecation headers, docs/EDGE.md), without a YAML library.

The text is JSON in YAML's flow style, so YAML 1.2 and JSON readers both load it. YAML
1.1 readers (PyYAML) need two more things, given here: every string double-quoted with
only ASCII inside (escapes for the rest), and every float with a dot and a signed
exponent (``1e-07`` would read as a string, ``1.0e-07`` as a float).
"""

from __future__ import annotations

import json
import math
from typing import Any

_INDENT = "  "


def dumps(value: Any) -> str:
    out: list[str] = []
    _emit(value, 0, out)
    out.append("\n")
    return "".join(out)


def _emit(value: Any, depth: int, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            out.append(("," if i else "") + "\n" + _INDENT * (depth + 1))
            out.append(_string(str(key)) + ": ")
            _emit(item, depth + 1, out)
        out.append("\n" + _INDENT * depth + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, item in enumerate(value):
            out.append(("," if i else "") + "\n" + _INDENT * (depth + 1))
            _emit(item, depth + 1, out)
        out.append("\n" + _INDENT * depth + "]")
    elif isinstance(value, str):
        out.append(_string(value))
    elif value is None or isinstance(value, bool):
        out.append(json.dumps(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_float(value))
    else:
        raise TypeError(f"not JSON data: {type(value).__name__}")


def _string(text: str) -> str:
    # JSON's escapes are a subset of YAML's double-quoted ones.
    return json.dumps(text, ensure_ascii=True)


def _float(number: float) -> str:
    if not math.isfinite(number):
        raise ValueError("not JSON data: a non-finite float")
    text = repr(number)
    mantissa, sep, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    if sep and exponent[0] not in "+-":
        exponent = "+" + exponent
    return mantissa + sep + exponent

"""``ves.storable.json_fault``: the string a JSON value's stored text cannot hold, by path;
and ``jcs.loads``' faults in our words (issue 11, items 7 and 8)."""

from __future__ import annotations

from typing import Any

import pytest

from stateset_sequencer.ves import jcs, storable
from stateset_sequencer.ves.errors import NonCanonical


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"x": "\ud800"}, "bundle.x"),
        ({"a": [1, {"b": "ok"}, {"c": "\udfff"}]}, "bundle.a[2].c"),
        ({"odd key": {"k": "\ud800"}}, 'bundle["odd key"].k'),
        ("\ud800", "bundle"),
        ({"\ud800": 1}, "bundle"),  # a member name: its object is named, never the name
    ],
)
def test_json_fault_names_the_string_at_fault(value: Any, path: str) -> None:
    fault = storable.json_fault(value, field="bundle")
    assert fault is not None and fault.fault is storable.TextFault.NOT_UTF8
    assert fault.field == path and path in fault.message
    fault.message.encode("utf-8")  # the message itself is storable and sendable


def test_json_fault_allows_nul_and_deep_values() -> None:
    """NUL is written as an escape in JSON text, so it is storable there; a deep value is
    walked without recursion."""
    assert storable.json_fault({"a": "x\x00y", "b": [None, 1.5, True]}, field="p") is None
    deep: Any = "\ud800"
    for _ in range(5000):
        deep = [deep]
    fault = storable.json_fault(deep, field="p")
    assert fault is not None and fault.field.endswith("[0]") and len(fault.field) <= 200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"a": ' + b"9" * 5000 + b"}", "an integer has more than 4300 digits"),
        (b'{"a": "\xb7"}', "not valid UTF-8 (byte 7)"),
        ('{"a": 1}'.encode("utf-16"), "not valid UTF-8 (byte 0)"),
        (b"\xef\xbb\xbf{}", "not valid JSON at line 1, column 1"),
        (b"[" * 5000, "nested too deeply"),
        (b'{\n "a": ', "not valid JSON at line 2, column 7"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
    ],
)
def test_loads_says_what_is_wrong_in_our_words(text: bytes, message: str) -> None:
    with pytest.raises(NonCanonical) as info:
        jcs.loads(text)
    assert str(info.value) == message

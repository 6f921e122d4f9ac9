"""RFC 8785 canonical JSON, byte for byte as serde_json_canonicalizer 0.3.1."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.ves import jcs
from stateset_sequencer.ves.errors import NonCanonical
from tests.conftest import VECTORS

JCS_DIR = VECTORS / "jcs"
CASES = sorted(p.name.removesuffix(".input.json") for p in JCS_DIR.glob("*.input.json"))


@pytest.mark.parametrize("name", CASES)
def test_crate_testdata(name: str) -> None:
    value = jcs.loads((JCS_DIR / f"{name}.input.json").read_bytes())
    expected = (JCS_DIR / f"{name}.output.json").read_bytes()
    assert jcs.canonicalize(value) == expected
    assert jcs.canonicalize_slow(value) == expected
    outhex = JCS_DIR / f"{name}.outhex.txt"
    if outhex.exists():
        assert jcs.canonicalize(value) == bytes.fromhex("".join(outhex.read_text().split()))


def test_all_eight_crate_cases_present() -> None:
    assert len(CASES) == 8


# RFC 8785 Appendix B: IEEE-754 bit patterns and their only correct serialisation.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def _double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    assert jcs.es_number(_double(bits)) == expected
    assert jcs.canonicalize(_double(bits)) == expected.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinity_refused(bits: str) -> None:
    with pytest.raises(NonCanonical):
        jcs.canonicalize(_double(bits))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2**64 - 1, b"18446744073709552000"),
        (9007199254740993, b"9007199254740992"),
        (-(2**63), b"-9223372036854776000"),
        (10**21, b"1e+21"),
        (1.0, b"1"),
        (-0.0, b"0"),
        (1e-7, b"1e-7"),
        (123e-9, b"1.23e-7"),
        (0.1, b"0.1"),
        (100, b"100"),
        (True, b"true"),
        (None, b"null"),
        ([], b"[]"),
        ({}, b"{}"),
        ("", b'""'),
    ],
)
def test_numbers_and_scalars_as_the_crate_prints_them(value: Any, expected: bytes) -> None:
    assert jcs.canonicalize(value) == expected


def test_big_integers_are_rounded_not_refused() -> None:
    assert jcs.canonicalize({"n": 2**53 + 1}) == b'{"n":9007199254740992}'


def test_keys_sorted_by_utf16_code_units_not_code_points() -> None:
    # U+FF61 (BMP, above the surrogates) vs U+1F600 (surrogate pair D83D DE00):
    # by code point the emoji sorts last, by UTF-16 code unit it sorts first.
    value = {"\uff61": 1, "\U0001f600": 2, "a": 3}
    assert jcs.canonicalize(value) == '{"a":3,"\U0001f600":2,"\uff61":1}'.encode()
    assert jcs.canonicalize_slow(value) == jcs.canonicalize(value)


def test_string_escaping_follows_serde_json() -> None:
    value = '"\\\b\f\n\r\t\x00\x1f\x7f\u2028\u2029/é'
    expected = '"\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\u2028\u2029/é"'.encode()
    assert jcs.canonicalize(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "\ud800",
        {"k": "x\udfffy"},
        {"\ud800": 1},
        [["\udc00"]],
    ],
)
def test_lone_surrogates_refused(value: Any) -> None:
    with pytest.raises(NonCanonical):
        jcs.canonicalize(value)


@pytest.mark.parametrize(
    "value",
    [
        {1: "non-string key"},
        {"set": {1, 2}},
        b"bytes",
        10**400,
        float("nan"),
        object(),
    ],
)
def test_non_json_values_refused(value: Any) -> None:
    with pytest.raises(NonCanonical):
        jcs.canonicalize(value)


def test_excessive_nesting_refused() -> None:
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(NonCanonical):
        jcs.canonicalize(deep)


@pytest.mark.parametrize(
    "text", ["NaN", "[Infinity]", '{"a": -Infinity}', "1e400", "[1,", "{'a':1}"]
)
def test_loads_refuses_what_serde_json_refuses(text: str) -> None:
    with pytest.raises(NonCanonical):
        jcs.loads(text)


def test_loads_duplicate_keys_last_wins() -> None:
    assert jcs.canonicalize(jcs.loads('{"a":1,"a":2}')) == b'{"a":2}'


def test_golden_payloads_canonicalise(golden: dict[str, Any]) -> None:
    for event in golden["golden_example"]["events"]:
        assert jcs.canonicalize(event["payload"]) == event["_canonical_payload"].encode()


def test_enc_vector_canonicalisation(enc_vectors: dict[str, Any]) -> None:
    for case in enc_vectors["canonicalization"]["vectors"]:
        assert jcs.canonicalize(case["input"]) == case["expected"].encode(), case["name"]


# --- properties ---------------------------------------------------------------------------

# Surrogates cannot be encoded as UTF-8 (typed as hypothesis's category literal).
_NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_text = st.text(st.characters(exclude_categories=_NO_SURROGATES), max_size=12)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=25,
)
_fast_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53) | _text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=25,
)


@given(_json)
def test_fast_path_gives_identical_bytes(value: Any) -> None:
    assert jcs.canonicalize(value) == jcs.canonicalize_slow(value)


@given(_fast_json)
def test_fast_path_eligible_values_identical(value: Any) -> None:
    assert jcs.canonicalize(value) == jcs.canonicalize_slow(value)


@given(
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=1e-6, max_value=1e16)
    | st.floats(min_value=-1e16, max_value=-1e-6)
    | st.sampled_from([1e-5, 1e15, 1e15 - 0.5, 1e-5 * (1 - 2**-52), 0.5, 2.0, 1e16])
)
def test_fast_path_floats_identical_including_band_edges(x: float) -> None:
    assert jcs.canonicalize([x, {"v": x}]) == jcs.canonicalize_slow([x, {"v": x}])


@given(_json)
def test_canonical_form_is_a_fixed_point(value: Any) -> None:
    once = jcs.canonicalize(value)
    assert jcs.canonicalize(jcs.loads(once)) == once


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_es_number_round_trips_to_the_same_double(x: float) -> None:
    text = jcs.es_number(x)
    assert float(text) == x or (x == 0 and float(text) == 0)
    assert not math.isnan(float(text))


def test_path_of_vectors_is_inside_the_project() -> None:
    assert Path(__file__).parents[1] in JCS_DIR.parents

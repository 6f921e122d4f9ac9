"""Binary and text encodings (VES_PROTOCOL §0–§1)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_sequencer.ves import codec
from stateset_sequencer.ves.errors import (
    BadBase64,
    BadHex,
    BadInteger,
    BadLength,
    BadTimestamp,
    BadUuid,
    VesError,
)


def test_encoding_primitives(sig_vectors: dict[str, Any]) -> None:
    prims = sig_vectors["encoding_primitives"]
    for case in prims["u32_be"]:
        assert codec.u32(case["input"]).hex() == case["expected_hex"]
    for case in prims["u64_be"]:
        assert codec.u64(case["input"]).hex() == case["expected_hex"]
    for case in prims["enc_str"]:
        assert codec.enc_str(case["input"]).hex() == case["expected_hex"]
    for case in prims["uuid_bytes"]:
        assert codec.uuid_bytes(case["uuid"]).hex() == case["expected_hex"]


def test_enc_str_counts_bytes_not_characters() -> None:
    assert codec.enc_str("é€😀") == (2 + 3 + 4).to_bytes(4, "big") + "é€😀".encode()


@pytest.mark.parametrize(("fn", "value"), [(codec.u32, -1), (codec.u32, 2**32), (codec.u64, 2**64)])
def test_integer_ranges(fn: Any, value: int) -> None:
    with pytest.raises(BadInteger):
        fn(value)


def test_enc_str_refuses_lone_surrogates() -> None:
    with pytest.raises(BadLength):
        codec.enc_str("\ud800")


@pytest.mark.parametrize(
    "text",
    [
        "00000000-0000-0000-0000-000000000001",
        "00000000000000000000000000000001",
        "{00000000-0000-0000-0000-000000000001}",
        "urn:uuid:00000000-0000-0000-0000-000000000001",
        "00000000-0000-0000-0000-00000000000A".lower(),
    ][:4],
)
def test_uuid_forms_serde_accepts(text: str) -> None:
    assert codec.parse_uuid(text) == uuid.UUID(int=1)


@pytest.mark.parametrize("text", ["", "not-a-uuid", "0000-0000", "g" * 32, "1" * 33])
def test_bad_uuid(text: str) -> None:
    with pytest.raises(BadUuid):
        codec.parse_uuid(text)


def test_uuid_must_be_text() -> None:
    with pytest.raises(BadUuid):
        codec.parse_uuid(1)  # type: ignore[arg-type]


def test_uuid_bytes_are_network_order_not_le() -> None:
    u = uuid.UUID("a1b2c3d4-e5f6-7890-abcd-ef1234567890")
    assert codec.uuid_bytes(u) == u.bytes != u.bytes_le


@pytest.mark.parametrize("text", ["0xABcd", "abcd", "0XABCD", "ABCD"])
def test_hex_prefix_and_case_are_optional(text: str) -> None:
    assert codec.parse_hex(text) == b"\xab\xcd"


@pytest.mark.parametrize("text", ["0xabc", "xyz0", "0x", "0x 1", "ab cd", "0xgg"])
def test_bad_hex(text: str) -> None:
    if text == "0x":
        assert codec.parse_hex(text) == b""
        return
    with pytest.raises(BadHex):
        codec.parse_hex(text)


def test_hex_length_checked() -> None:
    with pytest.raises(BadLength):
        codec.parse_hex("00" * 31, 32)


@pytest.mark.parametrize("text", ["abcd", "0xABCD", "0XABcd"])
def test_strict_hex_needs_0x_and_lowercase(text: str) -> None:
    with pytest.raises(BadHex):
        codec.parse_hex(text, strict=True)
    assert codec.parse_hex("0xabcd", strict=True) == b"\xab\xcd"


def test_hex_output_forms() -> None:
    assert codec.to_0x_hex(b"\xab") == "0xab"
    assert codec.to_bare_hex(b"\xab") == "ab"


def test_base64url_vectors(enc_vectors: dict[str, Any]) -> None:
    for case in enc_vectors["base64url"]["vectors"]:
        raw = bytes.fromhex(case["input_hex"])
        assert codec.b64url_encode(raw) == case["expected"]
        assert codec.b64url_decode(case["expected"]) == raw


def test_base64url_padded_input_accepted_unless_strict() -> None:
    assert codec.b64url_decode("AA==") == b"\x00"
    with pytest.raises(BadBase64):
        codec.b64url_decode("AA==", strict=True)


@pytest.mark.parametrize("text", ["A", "AA=", "A+B/", "AA==A", "****", "AAA=="])
def test_bad_base64url(text: str) -> None:
    with pytest.raises(BadBase64):
        codec.b64url_decode(text)


def test_base64url_strict_refuses_non_canonical_trailing_bits() -> None:
    # "AB" decodes to 0x00 but is not what 0x00 encodes to ("AA").
    assert codec.b64url_decode("AB") == b"\x00"
    with pytest.raises(BadBase64):
        codec.b64url_decode("AB", strict=True)


@given(st.binary(max_size=100))
def test_base64url_round_trip(raw: bytes) -> None:
    assert codec.b64url_decode(codec.b64url_encode(raw), strict=True) == raw


def test_key_text_forms() -> None:
    raw = bytes(range(32))
    for text in (
        raw.hex(),
        "0x" + raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ):
        assert codec.parse_key_text(text) == raw, text


@pytest.mark.parametrize("text", ["", "00" * 31, "zz" * 32, base64.b64encode(b"x" * 31).decode()])
def test_bad_key_text(text: str) -> None:
    with pytest.raises(VesError):
        codec.parse_key_text(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-12-20T17:51:10.243Z", datetime(2025, 12, 20, 17, 51, 10, 243000, UTC)),
        ("2025-01-01T00:00:00+00:00", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01t01:30:00+01:30", datetime(2025, 1, 1, tzinfo=UTC)),
        (
            "2025-01-01T00:00:00.123456789-00:00",
            datetime(2025, 1, 1, 0, 0, 0, 123456, UTC),
        ),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, UTC)),
    ],
)
def test_rfc3339_accepted(text: str, expected: datetime) -> None:
    assert codec.parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2025-01-01",
        "2025-01-01T00:00:00",
        "2025-13-01T00:00:00Z",
        "2025-02-30T00:00:00Z",
        "2025-01-01T24:00:00Z",
        "2025-01-01T00:00:00+24:00",
        "2025-01-01T00:00:00.Z",
        "2025-01-01T00:00:00Z ",
        "25-01-01T00:00:00Z",
        "2025-01-01T00:00:00+0000",
        "２０２５-01-01T00:00:00Z",
    ],
)
def test_rfc3339_refused(text: str) -> None:
    with pytest.raises(BadTimestamp):
        codec.parse_rfc3339(text)


@pytest.mark.parametrize(
    ("micro", "expected"),
    [
        (0, "2025-01-01T00:00:00+00:00"),
        (243000, "2025-01-01T00:00:00.243+00:00"),
        (286333, "2025-01-01T00:00:00.286333+00:00"),
    ],
)
def test_format_rfc3339_matches_chrono_autosi(micro: int, expected: str) -> None:
    moment = datetime(2025, 1, 1, 1, 0, 0, micro, timezone(timedelta(hours=1)))
    assert codec.format_rfc3339(moment) == expected


def test_format_rfc3339_refuses_naive() -> None:
    with pytest.raises(BadTimestamp):
        codec.format_rfc3339(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("nanos", "fraction"),
    [
        (0, ""),
        (250_000_000, ".250"),
        (1_000, ".000001"),
        (123_456_789, ".123456789"),
        (5, ".000000005"),
    ],
)
def test_format_rfc3339_nanos_matches_chrono_autosi(nanos: int, fraction: str) -> None:
    whole = datetime(2025, 1, 1, tzinfo=UTC)
    assert codec.format_rfc3339_nanos(whole, nanos) == f"2025-01-01T00:00:00{fraction}+00:00"
    for bad in (-1, 1_000_000_000):
        with pytest.raises(BadTimestamp):
            codec.format_rfc3339_nanos(whole, bad)


@given(st.integers(0, 253402300799), st.integers(0, 999_999_999))
def test_format_rfc3339_nanos_reads_back_as_the_same_instant(seconds: int, nanos: int) -> None:
    text = codec.format_rfc3339_nanos(datetime.fromtimestamp(seconds, UTC), nanos)
    assert text.endswith("+00:00")
    stamp, _, fraction = text.removesuffix("+00:00").partition(".")
    assert datetime.fromisoformat(stamp + "+00:00").timestamp() == seconds
    # The fewest of 3, 6 or 9 digits that hold the value exactly; none for a whole second.
    expected = 0 if nanos == 0 else 3 if nanos % 10**6 == 0 else 6 if nanos % 1000 == 0 else 9
    assert len(fraction) == expected
    assert int(fraction.ljust(9, "0") or "0") == nanos

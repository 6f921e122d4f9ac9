"""Text and binary encodings shared by every VES hash and wire format (VES_PROTOCOL §0–§1)."""

from __future__ import annotations

import base64
import binascii
import re
import struct
import uuid
from datetime import UTC, datetime, timedelta, timezone

from .errors import BadBase64, BadHex, BadInteger, BadLength, BadTimestamp, BadUuid

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

_HEX_CHARS = frozenset("0123456789abcdefABCDEF")
_pack_u32 = struct.Struct(">I").pack
_pack_u64 = struct.Struct(">Q").pack


def json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words (``null``, ``a number``), for messages
    a client reads: Python's type names (``NoneType``, ``dict``) are not the client's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a value of another kind"


def u32(value: int) -> bytes:
    """Unsigned 32-bit big-endian."""
    if not 0 <= value <= U32_MAX:
        raise BadInteger(f"{value} does not fit in u32")
    return _pack_u32(value)


def u64(value: int) -> bytes:
    """Unsigned 64-bit big-endian."""
    if not 0 <= value <= U64_MAX:
        raise BadInteger(f"{value} does not fit in u64")
    return _pack_u64(value)


def enc_str(value: str) -> bytes:
    """``U32(len utf8) ‖ utf8``: the length counts bytes, not characters."""
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadLength(f"string is not valid UTF-8: {exc.reason}") from None
    return u32(len(raw)) + raw


def uuid_bytes(value: uuid.UUID | str) -> bytes:
    """The 16 RFC 4122 bytes in network order (never ``bytes_le``)."""
    if isinstance(value, uuid.UUID):
        return value.bytes
    return parse_uuid(value).bytes


def parse_uuid(text: str) -> uuid.UUID:
    """Parse a UUID in any form serde's parser accepts: hyphenated, simple, braced, urn."""
    if not isinstance(text, str):
        raise BadUuid(f"expected a UUID string, got {json_kind(text)}")
    try:
        return uuid.UUID(text)
    except ValueError:
        raise BadUuid(f"not a UUID: {text[:64]!r}") from None


def parse_hex(text: str, length: int | None = None, *, strict: bool = False) -> bytes:
    """Decode hex text with an optional ``0x`` prefix, either case.

    ``strict`` is ``VES_STRICT_FORMAT_VALIDATION``: the prefix is then required and the
    digits must be lowercase. ``length`` is the expected number of decoded bytes.
    """
    if not isinstance(text, str):
        raise BadHex(f"expected a hex string, got {json_kind(text)}")
    body = text[2:] if text[:2] in ("0x", "0X") else text
    if strict and (not text.startswith("0x") or body != body.lower()):
        raise BadHex("strict format requires 0x-prefixed lowercase hex")
    if len(body) % 2 or not _HEX_CHARS.issuperset(body):
        raise BadHex(f"not hex: {text[:80]!r}")
    raw = bytes.fromhex(body)
    if length is not None and len(raw) != length:
        raise BadLength(f"expected {length} bytes of hex, got {len(raw)}")
    return raw


def to_0x_hex(raw: bytes) -> str:
    """Envelope form: ``0x`` + lowercase hex."""
    return "0x" + raw.hex()


def to_bare_hex(raw: bytes) -> str:
    """Commitment, proof and receipt form: lowercase hex with no prefix."""
    return raw.hex()


def b64url_encode(raw: bytes) -> str:
    """RFC 4648 §5 base64url without padding (the wire form of encrypted blobs)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_B64STD_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def b64url_decode(text: str, *, strict: bool = False) -> bytes:
    """Decode base64url, unpadded first and padded second, as the reference does.

    ``strict`` requires the canonical unpadded form (re-encoding gives the same text).
    """
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text):
        raise BadBase64("not base64url text")
    body = text.rstrip("=")
    if len(body) % 4 == 1:
        raise BadBase64("base64url text has an impossible length")
    if text != body and len(text) % 4:
        raise BadBase64("base64url padding is wrong")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise BadBase64("not base64url text") from None
    if strict and b64url_encode(raw) != text:
        raise BadBase64("strict format requires canonical unpadded base64url")
    return raw


def parse_key_text(text: str, length: int = 32) -> bytes:
    """Decode key or signature text: hex (``0x`` optional), standard base64 or base64url.

    Hex is tried first because a 64-character hex string is also valid base64 of 48 bytes;
    the expected ``length`` then settles which reading is meant.
    """
    if not isinstance(text, str):
        raise BadHex(f"expected key text, got {json_kind(text)}")
    stripped = text.strip()
    body = stripped[2:] if stripped[:2] in ("0x", "0X") else stripped
    if len(body) == 2 * length and _HEX_CHARS.issuperset(body):
        return bytes.fromhex(body)
    if _B64STD_RE.fullmatch(stripped) and len(stripped) % 4 == 0:
        try:
            raw = base64.b64decode(stripped, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == length:
            return raw
    try:
        raw = b64url_decode(stripped)
    except BadBase64:
        raise BadHex(f"key text is neither {length}-byte hex nor base64") from None
    if len(raw) != length:
        raise BadLength(f"expected {length} bytes, got {len(raw)}")
    return raw


# RFC 3339 §5.6 date-time, as chrono's parse_from_rfc3339 accepts it: "T", "t" or a space
# between date and time, any number of fractional digits, "Z"/"z" or a numeric offset.
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    The caller keeps the original string: VES signs it verbatim. A leap second (``:60``) is
    accepted, as chrono does, and folded into the last nanosecond of the minute.
    """
    if not isinstance(text, str):
        raise BadTimestamp(f"expected an RFC 3339 string, got {json_kind(text)}")
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        raise BadTimestamp(f"not an RFC 3339 timestamp: {text[:64]!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7)
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    leap = second == 60
    if leap:
        second, micro = 59, 999_999
    if m.group(8):
        tz = UTC
    else:
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_h > 23 or off_m > 59:
            raise BadTimestamp(f"offset out of range: {text[:64]!r}")
        offset = timedelta(hours=off_h, minutes=off_m)
        tz = timezone(-offset if m.group(9) == "-" else offset)
    try:
        parsed = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError:
        raise BadTimestamp(f"not a valid date-time: {text[:64]!r}") from None
    return parsed.astimezone(UTC)


def format_rfc3339(moment: datetime) -> str:
    """chrono ``to_rfc3339()`` (AutoSi) form: 0, 3, 6 or 9 fraction digits and ``+00:00``.

    This is the form of ``sequencedAt`` and of ``created_at`` rebuilt on the gRPC path.
    """
    if moment.tzinfo is None:
        raise BadTimestamp("a naive datetime has no defined instant")
    utc = moment.astimezone(UTC)
    base = utc.strftime("%Y-%m-%dT%H:%M:%S")
    micro = utc.microsecond
    if micro == 0:
        frac = ""
    elif micro % 1000 == 0:
        frac = f".{micro // 1000:03d}"
    else:
        frac = f".{micro:06d}"
    return f"{base}{frac}+00:00"


def format_rfc3339_nanos(whole: datetime, nanos: int) -> str:
    """chrono ``to_rfc3339()`` of an instant with nanosecond precision (a protobuf
    ``Timestamp``: ``whole`` seconds, then ``nanos``): 0, 3, 6 or 9 fraction digits and
    ``+00:00``. It is the ``created_at`` text the gRPC path signs and verifies."""
    if not 0 <= nanos < 1_000_000_000:
        raise BadTimestamp("nanoseconds must lie in 0..999999999")
    if whole.microsecond:
        raise BadTimestamp("the whole seconds carry a fraction")
    base = format_rfc3339(whole).removesuffix("+00:00")
    if nanos == 0:
        fraction = ""
    elif nanos % 1_000_000 == 0:
        fraction = f".{nanos // 1_000_000:03d}"
    elif nanos % 1000 == 0:
        fraction = f".{nanos // 1000:06d}"
    else:
        fraction = f".{nanos:09d}"
    return f"{base}{fraction}+00:00"

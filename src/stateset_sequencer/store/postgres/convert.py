"""PostgreSQL column values to and from the records, in the column orders of
``store.rows``. asyncpg maps UUID, timestamptz, bytea and boolean to Python's own types;
JSON columns travel as text both ways, so the stored text is the text the client sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from asyncpg import Record

from ...ves.codec import format_rfc3339
from ...ves.jsontext import dump_json, load_json
from ...ves.signing import Receipt
from ..records import Existing, StoredEvent
from ..rows import RECEIPT_PREFIX, Codec, Kind, R, Table, decode, encode, envelope_from_columns

Row = Record


def stored_event(row: Row) -> StoredEvent:
    base_version = row["base_version"]
    envelope = envelope_from_columns(
        event_id=row["event_id"],
        command_id=row["command_id"],
        ves_version=row["ves_version"],
        tenant_id=row["tenant_id"],
        store_id=row["store_id"],
        source_agent_id=row["source_agent_id"],
        agent_key_id=row["agent_key_id"],
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        event_type=row["event_type"],
        created_at_str=row["created_at_str"],
        payload_kind=row["payload_kind"],
        payload=row["payload"],
        payload_encrypted=row["payload_encrypted"],
        payload_plain_hash=row["payload_plain_hash"],
        payload_cipher_hash=row["payload_cipher_hash"],
        agent_signature=row["agent_signature"],
        agent_signature_scheme=row["agent_signature_scheme"],
        agent_signature_bundle=row["agent_signature_bundle"],
        # NUMERIC arrives as Decimal; it always holds a whole number (scale 0).
        base_version=int(base_version) if base_version is not None else None,
    )
    return StoredEvent(
        envelope=envelope,
        sequence_number=row["sequence_number"],
        sequenced_at=row["sequenced_at"],
        event_signing_hash=bytes(row["event_signing_hash"]),
    )


class TimeText:
    """``format_rfc3339`` remembering its last answer: one ingest batch shares one
    ``sequenced_at``, so a page of receipts repeats a handful of instants, and strftime
    was a good part of the cost of decoding a receipt."""

    __slots__ = ("_moment", "_text")

    def __init__(self) -> None:
        self._moment: datetime | None = None
        self._text = ""

    def __call__(self, moment: datetime) -> str:
        # Equal instants format alike whatever their zone: the text is in UTC.
        if moment != self._moment:
            self._text = format_rfc3339(moment)
            self._moment = moment
        return self._text


def receipt(row: Row, prefix: str = "", times: TimeText | None = None) -> Receipt:
    signature = row[f"{prefix}sequencer_signature"]
    moment = row[f"{prefix}sequenced_at"]
    return Receipt(
        sequencer_id=row[f"{prefix}sequencer_id"],
        event_id=row[f"{prefix}event_id"],
        sequence_number=row[f"{prefix}sequence_number"],
        sequenced_at=format_rfc3339(moment) if times is None else times(moment),
        receipt_hash=bytes(row[f"{prefix}receipt_hash"]),
        signature_alg=row[f"{prefix}signature_alg"],
        # An unsigned receipt is stored as NULL (the column only admits 64-byte values).
        sequencer_signature=bytes(signature) if signature is not None else b"",
        sequencer_key_version=row[f"{prefix}sequencer_key_version"],
    )


def joined_receipt(row: Row, times: TimeText | None = None) -> Receipt | None:
    """The receipt of a row joined with ``RECEIPT_SELECT`` (None when none was found)."""
    if row[f"{RECEIPT_PREFIX}event_id"] is None:
        return None
    return receipt(row, RECEIPT_PREFIX, times)


def existing(row: Row) -> Existing:
    return Existing(event=stored_event(row), receipt=joined_receipt(row))


# --- every other record, through the tables of ``store.rows`` -----------------------------


def _same(value: Any) -> Any:
    return value


def _json_object(text: str | None) -> dict[str, Any]:
    value = load_json(text)
    return value if isinstance(value, dict) else {}


# asyncpg already speaks uuid, timestamptz, bytea, boolean and uuid[] as Python values.
_TO_DB: Codec = {kind: _same for kind in Kind} | {
    Kind.UUID_TUPLE: list,
    Kind.TEXT_TUPLE: list,
    # Text with a ::jsonb cast in the statement: no JSON codec is registered.
    Kind.JSON_OBJECT: lambda value: dump_json(dict(value)),
}
_FROM_DB: Codec = {kind: _same for kind in Kind} | {
    Kind.UUID_TUPLE: tuple,
    Kind.TEXT_TUPLE: tuple,
    Kind.BYTES: bytes,
    Kind.OPTIONAL_BYTES: lambda value: None if value is None else bytes(value),
    Kind.JSON_OBJECT: _json_object,
}


def params(table: Table[Any], record: object) -> tuple[Any, ...]:
    """Bind arguments of ``table``'s columns for ``record``, in the table's order."""
    return encode(table, record, _TO_DB)


def record(table: Table[R], row: Row) -> R:
    return decode(table, row, _FROM_DB)

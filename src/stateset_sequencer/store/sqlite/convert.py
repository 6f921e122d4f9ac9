"""SQLite column values to and from the records, in the column orders of ``store.rows``.

UUIDs are canonical lowercase text, times fixed-width UTC text (``rows.time_to_text``),
booleans 0/1, JSON documents text. The envelope itself is rebuilt by ``rows``.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ...ves.codec import format_rfc3339
from ...ves.jsontext import dump_json, load_json
from ...ves.signing import Receipt
from ..records import Existing, NewEvent, StoredEvent
from ..rows import (
    ENVELOPE_COLUMNS,
    RECEIPT_PREFIX,
    Codec,
    Kind,
    R,
    Table,
    decode,
    encode,
    envelope_from_columns,
    time_from_text,
    time_to_text,
)


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


def optional_uuid_text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def optional_uuid(text: str | None) -> uuid.UUID | None:
    return None if text is None else uuid.UUID(text)


def optional_time_text(moment: datetime | None) -> str | None:
    return None if moment is None else time_to_text(moment)


def optional_time(text: str | None) -> datetime | None:
    return None if text is None else time_from_text(text)


class Times:
    """Time columns of one page, parsed once per distinct text: an ingest batch shares
    one ``sequenced_at``, and strptime (and strftime for the receipt's text) were a good
    part of the cost of decoding a row."""

    __slots__ = ("_moments", "_texts")

    def __init__(self) -> None:
        self._moments: dict[str, datetime] = {}
        self._texts: dict[str, str] = {}

    def moment(self, text: str) -> datetime:
        found = self._moments.get(text)
        if found is None:
            found = self._moments[text] = time_from_text(text)
        return found

    def rfc3339(self, text: str) -> str:
        found = self._texts.get(text)
        if found is None:
            found = self._texts[text] = format_rfc3339(self.moment(text))
        return found


# --- events and receipts ----------------------------------------------------------------


def event_params(event: NewEvent) -> tuple[Any, ...]:
    """One ves_events row in EVENT_INSERT_COLUMNS order."""
    env = event.envelope
    return (
        str(env.event_id),
        optional_uuid_text(env.command_id),
        env.ves_version,
        str(env.tenant_id),
        str(env.store_id),
        str(env.source_agent_id),
        env.agent_key_id,
        env.entity_type,
        env.entity_id,
        env.event_type,
        env.created_at,
        env.payload_kind,
        event.texts.payload,
        event.texts.encrypted,
        env.payload_plain_hash,
        env.payload_cipher_hash,
        env.agent_signature,
        env.agent_signature_scheme,
        event.texts.bundle,
        # Text, because a u64 does not fit SQLite's signed 64-bit INTEGER.
        None if env.base_version is None else str(env.base_version),
        event.sequence_number,
        time_to_text(event.sequenced_at),
        event.event_signing_hash,
        time_to_text(event.created_at),
    )


def receipt_params(event: NewEvent) -> tuple[Any, ...]:
    """One ves_sequencer_receipts row in RECEIPT_COLUMNS order."""
    receipt, env = event.receipt, event.envelope
    return (
        str(receipt.event_id),
        str(env.tenant_id),
        str(env.store_id),
        str(receipt.sequencer_id),
        receipt.sequence_number,
        # The receipt is sequenced when its event is (one instant, NewEvent's).
        time_to_text(event.sequenced_at),
        receipt.receipt_hash,
        receipt.signature_alg,
        receipt.sequencer_signature or None,
        receipt.sequencer_key_version,
    )


def stored_event(row: sqlite3.Row, times: Times | None = None) -> StoredEvent:
    envelope = envelope_from_columns(**{c: row[c] for c in ENVELOPE_COLUMNS})
    text = row["sequenced_at"]
    return StoredEvent(
        envelope=envelope,
        sequence_number=row["sequence_number"],
        sequenced_at=time_from_text(text) if times is None else times.moment(text),
        event_signing_hash=bytes(row["event_signing_hash"]),
    )


def receipt(row: sqlite3.Row, prefix: str = "", times: Times | None = None) -> Receipt | None:
    """The receipt in ``row`` (None when a LEFT JOIN found none)."""
    if row[f"{prefix}event_id"] is None:
        return None
    signature = row[f"{prefix}sequencer_signature"]
    text = row[f"{prefix}sequenced_at"]
    return Receipt(
        sequencer_id=uuid.UUID(row[f"{prefix}sequencer_id"]),
        event_id=uuid.UUID(row[f"{prefix}event_id"]),
        sequence_number=row[f"{prefix}sequence_number"],
        sequenced_at=format_rfc3339(time_from_text(text)) if times is None else times.rfc3339(text),
        receipt_hash=bytes(row[f"{prefix}receipt_hash"]),
        signature_alg=row[f"{prefix}signature_alg"],
        sequencer_signature=b"" if signature is None else bytes(signature),
        sequencer_key_version=row[f"{prefix}sequencer_key_version"],
    )


def existing(row: sqlite3.Row) -> Existing:
    return Existing(stored_event(row), receipt(row, RECEIPT_PREFIX))


# --- every other record, through the tables of ``store.rows`` -----------------------------


def _nullable(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _uuid_tuple_text(values: tuple[uuid.UUID, ...]) -> str:
    return dump_json([str(v) for v in values])


def _uuid_tuple(text: str) -> tuple[uuid.UUID, ...]:
    return tuple(uuid.UUID(s) for s in load_json(text))


def _text_tuple_text(values: tuple[str, ...]) -> str:
    return dump_json(list(values))


def _text_tuple(text: str) -> tuple[str, ...]:
    return tuple(str(s) for s in load_json(text))


def _json_object(text: str | None) -> dict[str, Any]:
    value = load_json(text)
    return value if isinstance(value, dict) else {}


_TO_DB: Codec = {
    Kind.PLAIN: lambda value: value,
    Kind.UUID: str,
    Kind.OPTIONAL_UUID: optional_uuid_text,
    # JSON text, because SQLite has no array type.
    Kind.UUID_TUPLE: _uuid_tuple_text,
    Kind.TEXT_TUPLE: _text_tuple_text,
    Kind.TIME: time_to_text,
    Kind.OPTIONAL_TIME: optional_time_text,
    Kind.BYTES: lambda value: value,
    Kind.OPTIONAL_BYTES: lambda value: value,
    Kind.BOOL: int,
    Kind.JSON_OBJECT: lambda value: dump_json(dict(value)),
}
_FROM_DB: Codec = {
    Kind.PLAIN: lambda value: value,
    Kind.UUID: uuid.UUID,
    Kind.OPTIONAL_UUID: optional_uuid,
    Kind.UUID_TUPLE: _uuid_tuple,
    Kind.TEXT_TUPLE: _text_tuple,
    Kind.TIME: time_from_text,
    Kind.OPTIONAL_TIME: optional_time,
    Kind.BYTES: bytes,
    Kind.OPTIONAL_BYTES: _nullable(bytes),
    Kind.BOOL: bool,
    Kind.JSON_OBJECT: _json_object,
}


def params(table: Table[Any], record: object) -> tuple[Any, ...]:
    """One row of ``table`` for ``record``, in the table's column order."""
    return encode(table, record, _TO_DB)


def record(table: Table[R], row: sqlite3.Row) -> R:
    return decode(table, row, _FROM_DB)

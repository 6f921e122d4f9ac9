"""The event log's queries, as jobs run on a connection's thread (``fn(conn, ...)``)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from ...ves.signing import Receipt
from ..base import ConcurrentWriteError, Existing, NewEvent, StoredEvent, StreamKey
from ..rows import RECEIPT_COLUMNS, RECEIPT_PREFIX, time_to_text
from . import columns as col
from .worker import savepoint, snapshot

# SQLite builds before 3.32 allow only 999 bound parameters per statement; 500 is safe on
# any build and still one query for any realistic batch.
MAX_PARAMS = 500

_EVENT_INSERT = (
    f"INSERT INTO ves_events ({', '.join(col.EVENT_COLUMNS)}) "  # noqa: S608 - fixed names
    f"VALUES ({col.placeholders(len(col.EVENT_COLUMNS))})"
)
_RECEIPT_INSERT = (
    f"INSERT INTO ves_sequencer_receipts ({', '.join(RECEIPT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({col.placeholders(len(RECEIPT_COLUMNS))})"
)
_EVENT_FROM = f"SELECT {col.EVENT_SELECT} FROM ves_events e"  # noqa: S608 - fixed names
_EVENT_WITH_RECEIPT_FROM = (
    f"SELECT {col.EVENT_WITH_RECEIPT_SELECT} FROM ves_events e "  # noqa: S608 - fixed names
    "LEFT JOIN ves_sequencer_receipts r ON r.event_id = e.event_id"
)
_STREAM = "tenant_id = ? AND store_id = ?"
_E_STREAM = "e.tenant_id = ? AND e.store_id = ?"

_T = TypeVar("_T")


def stream_params(stream: StreamKey) -> tuple[str, str]:
    return str(stream.tenant_id), str(stream.store_id)


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _now_text() -> str:
    return time_to_text(datetime.now(UTC))


# --- the append path (inside BEGIN IMMEDIATE) -----------------------------------------------


def open_stream(conn: sqlite3.Connection, stream: StreamKey) -> int:
    """Begin the stream's write transaction and return its head."""
    conn.execute("BEGIN IMMEDIATE")
    params = stream_params(stream)
    conn.execute(
        "INSERT OR IGNORE INTO sequence_counters (tenant_id, store_id, current_sequence) "
        "VALUES (?, ?, 0)",
        params,
    )
    return head(conn, stream)


def taken_commands(
    conn: sqlite3.Connection, stream: StreamKey, command_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    found: dict[uuid.UUID, uuid.UUID] = {}
    for part in chunks(list(dict.fromkeys(command_ids)), MAX_PARAMS - 2):
        rows = conn.execute(
            f"SELECT command_id, event_id FROM ves_command_dedupe "  # noqa: S608 - placeholders
            f"WHERE {_STREAM} AND command_id IN ({col.placeholders(len(part))})",
            (*stream_params(stream), *(str(c) for c in part)),
        ).fetchall()
        found.update({uuid.UUID(r["command_id"]): uuid.UUID(r["event_id"]) for r in rows})
    return found


def entity_versions(
    conn: sqlite3.Connection, stream: StreamKey, entities: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for part in chunks(list(dict.fromkeys(entities)), (MAX_PARAMS - 2) // 2):
        pairs = ", ".join("(?, ?)" for _ in part)
        rows = conn.execute(
            f"SELECT entity_type, entity_id, version FROM entity_versions "  # noqa: S608
            f"WHERE {_STREAM} AND (entity_type, entity_id) IN (VALUES {pairs})",
            (*stream_params(stream), *(v for pair in part for v in pair)),
        ).fetchall()
        found.update({(r["entity_type"], r["entity_id"]): r["version"] for r in rows})
    return found


def write(
    conn: sqlite3.Connection,
    stream: StreamKey,
    events: Sequence[NewEvent],
    versions: Mapping[tuple[str, str], int],
    new_head: int,
) -> None:
    # A failed write leaves the transaction as it was before it (executemany keeps the
    # rows it inserted before a failing one), whatever the caller does next.
    with savepoint(conn, "write_events"):
        _write(conn, stream, events, versions, new_head)


def _write(
    conn: sqlite3.Connection,
    stream: StreamKey,
    events: Sequence[NewEvent],
    versions: Mapping[tuple[str, str], int],
    new_head: int,
) -> None:
    tenant, store = stream_params(stream)
    now = _now_text()
    try:
        conn.executemany(_EVENT_INSERT, [col.event_params(e) for e in events])
        conn.executemany(_RECEIPT_INSERT, [col.receipt_params(e) for e in events])
    except sqlite3.IntegrityError as exc:
        if _is_event_id_conflict(exc):
            raise ConcurrentWriteError(f"an event id was stored meanwhile: {exc}") from exc
        raise
    conn.executemany(
        "INSERT INTO ves_command_dedupe (tenant_id, store_id, command_id, event_id, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (tenant, store, str(e.envelope.command_id), str(e.envelope.event_id), now)
            for e in events
            if e.envelope.command_id is not None
        ],
    )
    conn.executemany(
        "INSERT INTO entity_versions "
        "(tenant_id, store_id, entity_type, entity_id, version, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant_id, store_id, entity_type, entity_id) "
        "DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
        [(tenant, store, etype, eid, v, now) for (etype, eid), v in versions.items()],
    )
    conn.execute(
        f"UPDATE sequence_counters SET current_sequence = ?, updated_at = ? WHERE {_STREAM}",  # noqa: S608
        (new_head, now, tenant, store),
    )


def _is_event_id_conflict(exc: sqlite3.IntegrityError) -> bool:
    message = str(exc)
    return message.startswith("UNIQUE constraint failed") and (
        "ves_events.event_id" in message or "ves_sequencer_receipts.event_id" in message
    )


# --- reads ----------------------------------------------------------------------------------


def existing(conn: sqlite3.Connection, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
    found: dict[uuid.UUID, Existing] = {}
    for part in chunks(list(dict.fromkeys(event_ids)), MAX_PARAMS):
        rows = conn.execute(
            f"{_EVENT_WITH_RECEIPT_FROM} WHERE e.event_id IN ({col.placeholders(len(part))})",
            [str(i) for i in part],
        ).fetchall()
        for row in rows:
            event = col.stored_event(row)
            found[event.envelope.event_id] = Existing(event, col.receipt(row, RECEIPT_PREFIX))
    return found


def head(conn: sqlite3.Connection, stream: StreamKey) -> int:
    row = conn.execute(
        f"SELECT current_sequence FROM sequence_counters WHERE {_STREAM}",  # noqa: S608
        stream_params(stream),
    ).fetchone()
    return 0 if row is None else int(row["current_sequence"])


def read_range(
    conn: sqlite3.Connection, stream: StreamKey, start: int, end: int, limit: int = -1
) -> list[StoredEvent]:
    """Events ``start..=end`` in order; at most ``limit`` of them (-1: no limit)."""
    rows = conn.execute(
        f"{_EVENT_FROM} WHERE {_E_STREAM} AND e.sequence_number BETWEEN ? AND ? "
        "ORDER BY e.sequence_number LIMIT ?",
        (*stream_params(stream), start, end, limit),
    ).fetchall()
    return [col.stored_event(r) for r in rows]


def get_event(conn: sqlite3.Connection, event_id: uuid.UUID) -> StoredEvent | None:
    row = conn.execute(f"{_EVENT_FROM} WHERE e.event_id = ?", (str(event_id),)).fetchone()
    return None if row is None else col.stored_event(row)


def get_receipt(conn: sqlite3.Connection, event_id: uuid.UUID) -> Receipt | None:
    row = conn.execute(
        f"SELECT {', '.join(RECEIPT_COLUMNS)} FROM ves_sequencer_receipts "  # noqa: S608
        "WHERE event_id = ?",
        (str(event_id),),
    ).fetchone()
    return None if row is None else col.receipt(row)


def read_entity(
    conn: sqlite3.Connection,
    stream: StreamKey,
    entity_type: str,
    entity_id: str,
    offset: int,
    limit: int,
) -> tuple[list[StoredEvent], int]:
    where = f"{_E_STREAM} AND e.entity_type = ? AND e.entity_id = ?"
    params = (*stream_params(stream), entity_type, entity_id)
    with snapshot(conn):
        total = conn.execute(
            f"SELECT count(*) AS n FROM ves_events e WHERE {where}",  # noqa: S608
            params,
        ).fetchone()["n"]
        rows = conn.execute(
            f"{_EVENT_FROM} WHERE {where} ORDER BY e.sequence_number LIMIT ? OFFSET ?",
            (*params, limit, offset),
        ).fetchall()
    return [col.stored_event(r) for r in rows], int(total)


def entity_version(
    conn: sqlite3.Connection, stream: StreamKey, entity_type: str, entity_id: str
) -> int:
    return entity_versions(conn, stream, [(entity_type, entity_id)]).get(
        (entity_type, entity_id), 0
    )


def list_streams(conn: sqlite3.Connection) -> list[tuple[StreamKey, int]]:
    rows = conn.execute(
        "SELECT tenant_id, store_id, current_sequence FROM sequence_counters "
        "ORDER BY tenant_id, store_id"
    ).fetchall()
    return [
        (StreamKey(uuid.UUID(r["tenant_id"]), uuid.UUID(r["store_id"])), r["current_sequence"])
        for r in rows
    ]

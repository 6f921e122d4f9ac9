"""The append path on SQLite: the stream transaction, inside the ``BEGIN IMMEDIATE`` its
store opened on the writer thread, and the jobs it runs there (``fn(conn, ...)``)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

from ..errors import ConcurrentWriteError, OperationalError
from ..ports import AppendTransaction, StreamTransaction
from ..records import Existing, NewEvent, StreamKey
from ..rows import (
    EVENT_INSERT_COLUMNS,
    EVENT_SELECT,
    RECEIPT_COLUMNS,
    RECEIPT_SELECT,
    column_list,
    time_to_text,
)
from . import convert
from .worker import Job, Worker

P = ParamSpec("P")
_T = TypeVar("_T")

# SQLite builds before 3.32 allow only 999 bound parameters per statement; 500 is safe on
# any build and still one query for any realistic batch.
MAX_PARAMS = 500

_EVENT_INSERT = (
    f"INSERT INTO ves_events ({column_list(EVENT_INSERT_COLUMNS)}) "  # noqa: S608 - fixed names
    f"VALUES ({convert.placeholders(len(EVENT_INSERT_COLUMNS))})"
)
_RECEIPT_INSERT = (
    f"INSERT INTO ves_sequencer_receipts ({column_list(RECEIPT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({convert.placeholders(len(RECEIPT_COLUMNS))})"
)
EVENT_WITH_RECEIPT_FROM = (
    f"SELECT {EVENT_SELECT}, {RECEIPT_SELECT} FROM ves_events e "  # noqa: S608 - fixed names
    "LEFT JOIN ves_sequencer_receipts r ON r.tenant_id = e.tenant_id AND r.event_id = e.event_id"
)
# Which tenant owns an id: ves_event_ids is the only table keyed by the event id alone.
_CLAIM_ID = "INSERT INTO ves_event_ids (event_id, tenant_id, store_id) VALUES (?, ?, ?)"
STREAM = "tenant_id = ? AND store_id = ?"
_COMMAND_INSERT = (
    "INSERT INTO ves_command_dedupe (tenant_id, store_id, command_id, event_id, created_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
_VERSION_UPSERT = (
    "INSERT INTO entity_versions "
    "(tenant_id, store_id, entity_type, entity_id, version, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant_id, store_id, entity_type, entity_id) "
    "DO UPDATE SET version = entity_versions.version + excluded.version, "
    "updated_at = excluded.updated_at"
)
_SET_HEAD = f"UPDATE sequence_counters SET current_sequence = ?, updated_at = ? WHERE {STREAM}"  # noqa: S608


def stream_params(stream: StreamKey) -> tuple[str, str]:
    return str(stream.tenant_id), str(stream.store_id)


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _now_text() -> str:
    return time_to_text(datetime.now(UTC))


def open_streams(conn: sqlite3.Connection, streams: Sequence[StreamKey]) -> list[int]:
    """Begin the write transaction over ``streams`` and return their heads, in order.
    (BEGIN IMMEDIATE takes the database's one write lock: the streams need no order.)"""
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT OR IGNORE INTO sequence_counters (tenant_id, store_id, current_sequence) "
        "VALUES (?, ?, 0)",
        [stream_params(stream) for stream in streams],
    )
    return [head(conn, stream) for stream in streams]


def taken_commands(
    conn: sqlite3.Connection, stream: StreamKey, command_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    found: dict[uuid.UUID, uuid.UUID] = {}
    for part in chunks(list(dict.fromkeys(command_ids)), MAX_PARAMS - 2):
        rows = conn.execute(
            f"SELECT command_id, event_id FROM ves_command_dedupe "  # noqa: S608 - placeholders
            f"WHERE {STREAM} AND command_id IN ({convert.placeholders(len(part))})",
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
            f"WHERE {STREAM} AND (entity_type, entity_id) IN (VALUES {pairs})",
            (*stream_params(stream), *(v for pair in part for v in pair)),
        ).fetchall()
        found.update({(r["entity_type"], r["entity_id"]): r["version"] for r in rows})
    return found


def write(
    conn: sqlite3.Connection,
    stream: StreamKey,
    events: Sequence[NewEvent],
    increments: Mapping[tuple[str, str], int],
    new_head: int,
) -> None:
    # A failure leaves rows of this write behind (executemany keeps what it inserted
    # before a failing row): the port's caller rolls the transaction back.
    tenant, store = stream_params(stream)
    now = _now_text()
    try:
        conn.executemany(_CLAIM_ID, [(str(e.envelope.event_id), tenant, store) for e in events])
        conn.executemany(_EVENT_INSERT, [convert.event_params(e) for e in events])
        conn.executemany(_RECEIPT_INSERT, [convert.receipt_params(e) for e in events])
    except sqlite3.IntegrityError as exc:
        if _is_event_id_conflict(exc):
            raise ConcurrentWriteError(f"an event id was stored meanwhile: {exc}") from exc
        raise
    conn.executemany(
        _COMMAND_INSERT,
        [
            (tenant, store, str(e.envelope.command_id), str(e.envelope.event_id), now)
            for e in events
            if e.envelope.command_id is not None
        ],
    )
    conn.executemany(
        _VERSION_UPSERT,
        [(tenant, store, etype, eid, n, now) for (etype, eid), n in increments.items()],
    )
    conn.execute(_SET_HEAD, (new_head, now, tenant, store))


def _is_event_id_conflict(exc: sqlite3.IntegrityError) -> bool:
    message = str(exc)
    return message.startswith("UNIQUE constraint failed") and any(
        f"{table}.event_id" in message
        for table in ("ves_event_ids", "ves_events", "ves_sequencer_receipts")
    )


def owners(conn: sqlite3.Connection, event_ids: Sequence[uuid.UUID]) -> dict[str, list[str]]:
    """The known ids among ``event_ids``, by the tenant that owns them."""
    found: dict[str, list[str]] = {}
    for part in chunks(list(dict.fromkeys(event_ids)), MAX_PARAMS):
        rows = conn.execute(
            "SELECT event_id, tenant_id FROM ves_event_ids "  # noqa: S608 - placeholders
            f"WHERE event_id IN ({convert.placeholders(len(part))})",
            [str(i) for i in part],
        ).fetchall()
        for row in rows:
            found.setdefault(row["tenant_id"], []).append(row["event_id"])
    return found


def existing(conn: sqlite3.Connection, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
    found: dict[uuid.UUID, Existing] = {}
    for tenant_id, ids in owners(conn, event_ids).items():
        for part in chunks(ids, MAX_PARAMS - 1):
            rows = conn.execute(
                f"{EVENT_WITH_RECEIPT_FROM} WHERE e.tenant_id = ? "
                f"AND e.event_id IN ({convert.placeholders(len(part))})",
                [tenant_id, *part],
            ).fetchall()
            for row in rows:
                found[uuid.UUID(row["event_id"])] = convert.existing(row)
    return found


def head(conn: sqlite3.Connection, stream: StreamKey) -> int:
    row = conn.execute(
        f"SELECT current_sequence FROM sequence_counters WHERE {STREAM}",  # noqa: S608
        stream_params(stream),
    ).fetchone()
    return 0 if row is None else int(row["current_sequence"])


class SqliteAppendTransaction(AppendTransaction):
    """Runs on the writer thread inside the BEGIN IMMEDIATE its store opened."""

    def __init__(self, writer: Worker, streams: Sequence[StreamKey], heads: Sequence[int]) -> None:
        self._writer = writer
        self._open = True
        self.streams = {
            stream: SqliteStreamTransaction(self, stream, head)
            for stream, head in zip(streams, heads, strict=True)
        }

    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        return await self.run(existing, event_ids)

    def end(self) -> None:
        self._open = False

    async def run(self, job: Job[P, _T], *args: P.args, **kwargs: P.kwargs) -> _T:
        if not self._open:
            raise OperationalError("the stream transaction has already ended")
        return await self._writer.run(job, *args, **kwargs)


class SqliteStreamTransaction(StreamTransaction):
    """One stream's part of a :class:`SqliteAppendTransaction`."""

    def __init__(self, tx: SqliteAppendTransaction, stream: StreamKey, head: int) -> None:
        self.head = head
        self._tx = tx
        self._stream = stream
        self._run = tx.run

    async def existing(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Existing]:
        return await self._run(existing, event_ids)

    async def taken_commands(self, command_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        return await self._run(taken_commands, self._stream, command_ids)

    async def entity_versions(
        self, entities: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        return await self._run(entity_versions, self._stream, entities)

    async def write(
        self,
        events: Sequence[NewEvent],
        version_increments: Mapping[tuple[str, str], int],
        new_head: int,
    ) -> None:
        await self._run(write, self._stream, events, version_increments, new_head)
        self.head = new_head

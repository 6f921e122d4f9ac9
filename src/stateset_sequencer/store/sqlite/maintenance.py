"""Recovery and maintenance queries for SQLite, as jobs run on a connection's thread.

The read jobs take any ``sqlite3.Connection``: the store's reader, or a connection the
backup tooling opens on a backup file, so that a manifest is computed from exactly the
bytes that were copied. They index rows by position and so work with or without
``sqlite3.Row``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ...ves.codec import format_rfc3339, u64
from ...ves.signing import Receipt
from ..base import (
    AuditEntry,
    ConcurrentWriteError,
    CounterState,
    SequenceGap,
    StoredEvent,
    StreamKey,
    StreamSummary,
)
from ..rows import (
    ENVELOPE_COLUMNS,
    RECEIPT_PREFIX,
    envelope_from_columns,
    time_from_text,
    time_to_text,
)
from . import columns as col
from .worker import immediate, snapshot

EventWithReceipt = tuple[StoredEvent, Receipt | None]

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Tables whose rows make a database "in use": restoring over them would destroy data.
OCCUPIED_TABLES = ("ves_events", "api_keys", "agent_signing_keys")

_PAGE_SQL = (
    f"SELECT {col.EVENT_WITH_RECEIPT_SELECT} FROM ves_events e "  # noqa: S608 - fixed names
    "LEFT JOIN ves_sequencer_receipts r ON r.event_id = e.event_id "
    "WHERE e.tenant_id = ? AND e.store_id = ? AND e.sequence_number BETWEEN ? AND ? "
    "ORDER BY e.sequence_number LIMIT ?"
)
# A stream filter that is off when its first parameter is NULL; pushed into every CTE so
# that a one-stream query reads that stream's index range only.
_FILTER = "(:tenant IS NULL OR (tenant_id = :tenant AND store_id = :store))"
_COUNTER_STATES_SQL = f"""
WITH agg AS (
    SELECT tenant_id, store_id, MAX(sequence_number) AS max_seq, COUNT(*) AS n
    FROM ves_events WHERE {_FILTER} GROUP BY tenant_id, store_id
), keys AS (
    SELECT tenant_id, store_id FROM sequence_counters WHERE {_FILTER}
    UNION SELECT tenant_id, store_id FROM agg
)
SELECT k.tenant_id, k.store_id, c.current_sequence, COALESCE(a.max_seq, 0), COALESCE(a.n, 0)
FROM keys k
LEFT JOIN sequence_counters c ON c.tenant_id = k.tenant_id AND c.store_id = k.store_id
LEFT JOIN agg a ON a.tenant_id = k.tenant_id AND a.store_id = k.store_id
ORDER BY k.tenant_id, k.store_id
"""  # noqa: S608 - fixed text
# LAG pairs every event with the one before it in its stream; a step of more than one is
# a gap. The first event is paired with 0, so missing numbers from 1 count as well.
_GAPS_SQL = f"""
SELECT tenant_id, store_id, prev + 1, sequence_number - 1 FROM (
    SELECT tenant_id, store_id, sequence_number,
           COALESCE(LAG(sequence_number) OVER (
               PARTITION BY tenant_id, store_id ORDER BY sequence_number), 0) AS prev
    FROM ves_events WHERE {_FILTER}
) WHERE sequence_number > prev + 1
ORDER BY tenant_id, store_id, sequence_number
"""  # noqa: S608 - fixed text
_COMMITMENTS_SQL = (
    "SELECT tenant_id, store_id, sequence_start, sequence_end, merkle_root, new_state_root "
    "FROM ves_commitments ORDER BY tenant_id, store_id, sequence_start"
)


def _filter_params(stream: StreamKey | None) -> dict[str, str | None]:
    if stream is None:
        return {"tenant": None, "store": None}
    return {"tenant": str(stream.tenant_id), "store": str(stream.store_id)}


def _stream(tenant: str, store: str) -> StreamKey:
    return StreamKey(uuid.UUID(tenant), uuid.UUID(store))


# --- reading the log with receipts ------------------------------------------------------------


def events_with_receipts(
    conn: sqlite3.Connection, stream: StreamKey, start: int, end: int, limit: int
) -> list[EventWithReceipt]:
    rows = conn.execute(
        _PAGE_SQL, (str(stream.tenant_id), str(stream.store_id), start, end, limit)
    ).fetchall()
    times = _Times()
    return [(_stored_event(r, times), _receipt(r, times)) for r in rows]


class _Times:
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


# col.stored_event and col.receipt with the page's time cache; the fields are the same.
def _stored_event(row: sqlite3.Row, times: _Times) -> StoredEvent:
    envelope = envelope_from_columns(**{c: row[c] for c in ENVELOPE_COLUMNS})
    return StoredEvent(
        envelope=envelope,
        sequence_number=row["sequence_number"],
        sequenced_at=times.moment(row["sequenced_at"]),
        event_signing_hash=bytes(row["event_signing_hash"]),
    )


def _receipt(row: sqlite3.Row, times: _Times) -> Receipt | None:
    p = RECEIPT_PREFIX
    if row[f"{p}event_id"] is None:
        return None
    signature = row[f"{p}sequencer_signature"]
    return Receipt(
        sequencer_id=uuid.UUID(row[f"{p}sequencer_id"]),
        event_id=uuid.UUID(row[f"{p}event_id"]),
        sequence_number=row[f"{p}sequence_number"],
        sequenced_at=times.rfc3339(row[f"{p}sequenced_at"]),
        receipt_hash=bytes(row[f"{p}receipt_hash"]),
        signature_alg=row[f"{p}signature_alg"],
        sequencer_signature=b"" if signature is None else bytes(signature),
        sequencer_key_version=row[f"{p}sequencer_key_version"],
    )


async def paged(
    read_page: Callable[[int, int], Awaitable[list[EventWithReceipt]]],
    start: int,
    end: int,
    batch_size: int,
) -> AsyncIterator[EventWithReceipt]:
    """Walk ``start..=end`` one page at a time; ``read_page(first, limit)`` reads one.

    The next page is requested before the current one is handed out, so the reader
    thread works while the consumer does."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cursor = max(start, 1)
    if cursor > end:
        return
    ahead: asyncio.Future[list[EventWithReceipt]] | None = asyncio.ensure_future(
        read_page(cursor, batch_size)
    )
    try:
        while ahead is not None:
            page = await ahead
            ahead = None
            if len(page) == batch_size and page[-1][0].sequence_number < end:
                ahead = asyncio.ensure_future(
                    read_page(page[-1][0].sequence_number + 1, batch_size)
                )
            for item in page:
                yield item
    finally:
        # A consumer that stops early (an error, a closed generator) leaves no read behind.
        if ahead is not None:
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ahead


# --- counters and gaps ------------------------------------------------------------------------


def counter_states(conn: sqlite3.Connection, stream: StreamKey | None) -> list[CounterState]:
    rows = conn.execute(_COUNTER_STATES_SQL, _filter_params(stream)).fetchall()
    return [
        CounterState(
            stream=_stream(r[0], r[1]),
            counter=None if r[2] is None else int(r[2]),
            max_sequence=int(r[3]),
            event_count=int(r[4]),
        )
        for r in rows
    ]


def sequence_gaps(conn: sqlite3.Connection, stream: StreamKey | None) -> list[SequenceGap]:
    rows = conn.execute(_GAPS_SQL, _filter_params(stream)).fetchall()
    return [SequenceGap(_stream(r[0], r[1]), int(r[2]), int(r[3])) for r in rows]


def set_counter_to_max(
    conn: sqlite3.Connection, stream: StreamKey, expected: CounterState, audit: AuditEntry
) -> CounterState:
    # BEGIN IMMEDIATE takes the database write lock that every append also needs, so the
    # state compared below cannot change before the commit.
    with immediate(conn):
        found = counter_states(conn, stream)
        current = found[0] if found else CounterState(stream, None, 0, 0)
        if current != expected:
            raise ConcurrentWriteError(
                f"stream {stream.tenant_id}/{stream.store_id} changed since it was inspected "
                f"(now counter {current.counter}, max {current.max_sequence}); run again"
            )
        now = time_to_text(audit.timestamp) if audit.timestamp is not None else None
        conn.execute(
            "INSERT INTO sequence_counters (tenant_id, store_id, current_sequence, updated_at) "
            "VALUES (:tenant, :store, :seq, COALESCE(:now, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))) "
            "ON CONFLICT (tenant_id, store_id) DO UPDATE SET "
            "current_sequence = excluded.current_sequence, updated_at = excluded.updated_at",
            {**_filter_params(stream), "seq": current.max_sequence, "now": now},
        )
        conn.execute(
            f"INSERT INTO audit_log ({', '.join(col.AUDIT_COLUMNS)}) "  # noqa: S608 - fixed
            f"VALUES ({col.placeholders(len(col.AUDIT_COLUMNS))})",
            col.audit_params(audit),
        )
        return counter_states(conn, stream)[0]


# --- manifests: summaries, counts, emptiness --------------------------------------------------


def stream_summaries(conn: sqlite3.Connection) -> list[StreamSummary]:
    # One read transaction: counters and commitments from the same state.
    with snapshot(conn):
        states = {s.stream: s for s in counter_states(conn, None)}
        digests: dict[StreamKey, Any] = {}
        counts: dict[StreamKey, int] = {}
        last: dict[StreamKey, tuple[int, bytes]] = {}
        if _table_exists(conn, "ves_commitments"):
            for r in conn.execute(_COMMITMENTS_SQL):
                key = _stream(r[0], r[1])
                digest = digests.setdefault(key, hashlib.sha256())
                digest.update(u64(int(r[2])) + u64(int(r[3])) + bytes(r[4]) + bytes(r[5]))
                counts[key] = counts.get(key, 0) + 1
                last[key] = (int(r[3]), bytes(r[5]))
    return summaries(states, digests, counts, last)


def summaries(
    states: dict[StreamKey, CounterState],
    digests: dict[StreamKey, Any],
    counts: dict[StreamKey, int],
    last: dict[StreamKey, tuple[int, bytes]],
) -> list[StreamSummary]:
    """Assemble per-stream summaries (shared with the PostgreSQL adapter's shape)."""
    out = []
    for key in sorted(
        set(states) | set(digests), key=lambda k: (str(k.tenant_id), str(k.store_id))
    ):
        state = states.get(key, CounterState(key, None, 0, 0))
        end_root = last.get(key)
        out.append(
            StreamSummary(
                stream=key,
                counter=state.counter,
                max_sequence=state.max_sequence,
                event_count=state.event_count,
                commitment_count=counts.get(key, 0),
                last_committed_sequence=None if end_root is None else end_root[0],
                last_state_root=None if end_root is None else end_root[1],
                commitments_sha256=digests.get(key, hashlib.sha256()).digest(),
            )
        )
    return out


def checked_table(name: str) -> str:
    # Table names are spliced into SQL (no bind parameters for identifiers).
    if _IDENTIFIER.fullmatch(name) is None:
        raise ValueError(f"not a plain table name: {name!r}")
    return name


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def row_counts(conn: sqlite3.Connection, tables: Sequence[str]) -> dict[str, int]:
    names = [checked_table(t) for t in tables]
    counts: dict[str, int] = {}
    with snapshot(conn):
        for name in names:
            if _table_exists(conn, name):
                counts[name] = int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])  # noqa: S608
    return counts


def is_empty(conn: sqlite3.Connection) -> bool:
    for name in OCCUPIED_TABLES:
        if (
            _table_exists(conn, name)
            and conn.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone() is not None  # noqa: S608
        ):
            return False
    return True


# --- file-level tools (backup, restore) -------------------------------------------------------


def online_backup(
    source: Path, target: Path, progress: Callable[[int, int], None] | None = None
) -> None:
    """Copy a live database with SQLite's online backup API: a consistent snapshot even
    while the sequencer keeps writing (WAL content included), unlike a file copy."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:

            def report(_status: int, remaining: int, total: int) -> None:
                if progress is not None:
                    progress(total - remaining, total)

            src.backup(dst, pages=1024, progress=report)
            # A single-file copy: the backup must not depend on a -wal file beside it.
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection on a file (a backup, or a database being inspected)."""
    if not path.is_file():
        raise FileNotFoundError(str(path))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def integrity_problem(conn: sqlite3.Connection) -> str | None:
    """SQLite's own structural check; None when the file is sound."""
    rows = conn.execute("PRAGMA integrity_check").fetchall()
    text = "; ".join(str(r[0]) for r in rows)
    return None if text == "ok" else text

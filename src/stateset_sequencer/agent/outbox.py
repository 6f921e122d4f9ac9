"""The agent's outbox: a local SQLite file that holds every event the agent signed until
the sequencer has acknowledged it, and keeps it afterwards with its receipt.

Durability first: the file runs in WAL mode with ``synchronous=FULL``, so an
:meth:`Outbox.append` is on disk before it returns, and an event is marked ``pushed``
in its own committed transaction *before* it is sent. A crash or a lost answer therefore
leaves it ``pushed``, and the next push sends it again; the sequencer answers an exact
replay with the receipt it stored, so re-sending is never a duplicate.

An event's states (``state`` column):

``pending``     signed and stored, never sent;
``pushed``      sent, no verified answer yet (sent again by every push);
``acked``       a receipt for it verified against the sequencer's key; ``remote_sequence``
                and ``receipt`` hold it;
``rejected``    the sequencer refused it (``rejection_reason``); kept, never re-sent by
                ``push`` (``sync-agent`` re-sends a window whatever the state);
``conflict``    refused with ``version_conflict``: ``actual_version`` is the entity's
                version on the server; ``agent rebase`` re-signs it;
``superseded``  a conflict or rejection that was re-signed as a new event
                (``superseded_by``; the new one keeps ``rebased_from``).

Nothing is ever deleted. Faults of the file itself (damaged, read-only, full) raise
:class:`OutboxError` with the file's name and what to do, never a bare sqlite3 error.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..ves.envelope import VesEventEnvelope, parse_envelope_json
from ..ves.jsontext import dump_json, load_json
from ..ves.signing import Receipt

SCHEMA_VERSION = 1
OUTBOX_FILE = "outbox.db"
BUSY_TIMEOUT_MS = 10_000


class State(enum.StrEnum):
    PENDING = "pending"
    PUSHED = "pushed"
    ACKED = "acked"
    REJECTED = "rejected"
    CONFLICT = "conflict"
    SUPERSEDED = "superseded"


UNSYNCED = (State.PENDING, State.PUSHED)
# What `export-events --status` selects.
STATUS_FILTERS: dict[str, tuple[State, ...]] = {
    "unsynced": UNSYNCED,
    "pushed": (State.PUSHED,),
    "acked": (State.ACKED,),
    "rejected": (State.REJECTED, State.CONFLICT),
    "all": tuple(State),
}


class OutboxReason(enum.StrEnum):
    DAMAGED = "outbox_damaged"
    READ_ONLY = "outbox_read_only"
    DISK_FULL = "outbox_disk_full"
    BUSY = "outbox_busy"
    NEWER_SCHEMA = "outbox_newer_schema"
    NOT_FOUND = "event_not_found"
    WRONG_STATE = "event_wrong_state"
    UNREADABLE = "outbox_unreadable"


class OutboxError(Exception):
    def __init__(self, reason: OutboxReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_events (
    local_seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    agent_key_id INTEGER NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ves_version INTEGER NOT NULL,
    command_id TEXT,
    base_version INTEGER,
    envelope TEXT NOT NULL,
    signing_hash TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('pending', 'pushed', 'acked', 'rejected', 'conflict', 'superseded')),
    attempts INTEGER NOT NULL DEFAULT 0,
    pushed_at TEXT,
    acked_at TEXT,
    remote_sequence INTEGER,
    receipt TEXT,
    rejection_reason TEXT,
    rejection_message TEXT,
    actual_version INTEGER,
    rebased_from TEXT,
    superseded_by TEXT
);
CREATE INDEX IF NOT EXISTS outbox_events_state ON outbox_events (state, local_seq);
CREATE INDEX IF NOT EXISTS outbox_events_recorded ON outbox_events (recorded_at);
CREATE INDEX IF NOT EXISTS outbox_events_entity
    ON outbox_events (tenant_id, store_id, entity_type, entity_id);
CREATE TABLE IF NOT EXISTS outbox_entity_versions (
    tenant_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    server_version INTEGER NOT NULL,
    as_of_local_seq INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, store_id, entity_type, entity_id)
);
CREATE TABLE IF NOT EXISTS outbox_sync_state (
    tenant_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    last_pushed_local_seq INTEGER NOT NULL DEFAULT 0,
    last_pulled_sequence INTEGER NOT NULL DEFAULT 0,
    server_cursor INTEGER,
    server_head INTEGER,
    last_push_at TEXT,
    last_pull_at TEXT,
    last_sync_at TEXT,
    last_error TEXT,
    PRIMARY KEY (tenant_id, store_id)
);
CREATE TABLE IF NOT EXISTS outbox_pulled_events (
    tenant_id TEXT NOT NULL,
    store_id TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    source_agent_id TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    envelope TEXT NOT NULL,
    receipt TEXT,
    sequenced_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, store_id, sequence_number)
);
CREATE INDEX IF NOT EXISTS outbox_pulled_entity
    ON outbox_pulled_events (tenant_id, store_id, entity_type, entity_id);
"""


def now_text() -> str:
    """Local time in a fixed-width UTC form, so that text order is time order."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def time_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a time with an offset is needed")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    local_seq: int
    envelope: VesEventEnvelope
    envelope_json: str
    signing_hash: bytes
    recorded_at: str
    state: State
    attempts: int
    pushed_at: str | None
    acked_at: str | None
    remote_sequence: int | None
    receipt: Receipt | None
    rejection_reason: str | None
    rejection_message: str | None
    actual_version: int | None
    rebased_from: uuid.UUID | None
    superseded_by: uuid.UUID | None

    @property
    def event_id(self) -> uuid.UUID:
        return self.envelope.event_id

    def to_json(self) -> dict[str, Any]:
        """The row as ``agent conflicts --json`` and friends print it."""
        env = self.envelope
        return {
            "local_seq": self.local_seq,
            "event_id": str(env.event_id),
            "entity_type": env.entity_type,
            "entity_id": env.entity_id,
            "event_type": env.event_type,
            "base_version": env.base_version,
            "recorded_at": self.recorded_at,
            "state": self.state.value,
            "attempts": self.attempts,
            "remote_sequence": self.remote_sequence,
            "rejection_reason": self.rejection_reason,
            "rejection_message": self.rejection_message,
            "actual_version": self.actual_version,
            "rebased_from": str(self.rebased_from) if self.rebased_from else None,
            "superseded_by": str(self.superseded_by) if self.superseded_by else None,
        }


@dataclass(frozen=True, slots=True)
class SyncState:
    last_pushed_local_seq: int = 0
    last_pulled_sequence: int = 0
    server_cursor: int | None = None
    server_head: int | None = None
    last_push_at: str | None = None
    last_pull_at: str | None = None
    last_sync_at: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class PulledEvent:
    sequence_number: int
    envelope_json: str
    receipt: Receipt | None
    sequenced_at: str
    envelope: VesEventEnvelope


_EVENT_COLUMNS = (
    "local_seq, envelope, signing_hash, recorded_at, state, attempts, pushed_at, acked_at, "
    "remote_sequence, receipt, rejection_reason, rejection_message, actual_version, "
    "rebased_from, superseded_by"
)


def _translate(path: Path, exc: sqlite3.Error) -> OutboxError:
    """One place that turns SQLite's faults into what an operator can act on."""
    text = str(exc)
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return OutboxError(
            OutboxReason.READ_ONLY,
            f"{path}: the outbox cannot be written (read-only file or file system): {text}; "
            "nothing was recorded. Make it writable, or point --outbox at a writable place",
        )
    if "full" in lowered and ("disk" in lowered or "database" in lowered):
        return OutboxError(
            OutboxReason.DISK_FULL,
            f"{path}: the disk holding the outbox is full: {text}; nothing was recorded. "
            "Free space and run the command again",
        )
    if "locked" in lowered or "busy" in lowered:
        return OutboxError(
            OutboxReason.BUSY,
            f"{path}: another process holds the outbox for longer than "
            f"{BUSY_TIMEOUT_MS // 1000} s ({text}); run the command again",
        )
    if "unable to open" in lowered:
        return OutboxError(OutboxReason.UNREADABLE, f"{path}: cannot open the outbox: {text}")
    return OutboxError(
        OutboxReason.DAMAGED,
        f"{path}: not a readable outbox (the file is damaged or is not SQLite): {text}. "
        "Move it aside and restore the last backup with `sequencer-cli agent restore`",
    )


class Outbox:
    """One outbox file. Not shared between threads; several processes may open the same
    file (WAL and a busy timeout let `agent emit` run beside `agent sync --watch`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise OutboxError(
                OutboxReason.UNREADABLE, f"{path.parent}: cannot create the directory: {exc}"
            ) from None
        created = not path.exists()
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _translate(path, exc) from None
        try:
            if created:
                os.chmod(path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise _translate(path, exc) from None
        except OutboxError:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        row = self._db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='outbox_meta'"
        ).fetchone()
        if row is not None:
            found = self._db.execute(
                "SELECT value FROM outbox_meta WHERE key='schema_version'"
            ).fetchone()
            version = int(found[0]) if found else 0
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    OutboxReason.NEWER_SCHEMA,
                    f"{self.path}: written by a newer version (outbox schema {version}, this "
                    f"one knows {SCHEMA_VERSION}); upgrade sequencer-cli",
                )
            if version == SCHEMA_VERSION:
                return
        # One script, one transaction: a second process opening a new file at the same
        # moment either sees the whole schema or waits for it.
        self._db.executescript(  # constant text: the schema and our own version number
            "BEGIN IMMEDIATE;"  # noqa: S608
            + _SCHEMA
            + "INSERT OR REPLACE INTO outbox_meta (key, value) VALUES "
            + f"('schema_version', '{SCHEMA_VERSION}');COMMIT;"
        )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (IMMEDIATE), so two processes never both
        read a row as ``pending`` and send it twice without knowing."""
        try:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise _translate(self.path, exc) from None
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self._db.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise _translate(self.path, exc) from None

    def check(self) -> str:
        """SQLite's own integrity check: ``ok`` or the first problem it names."""
        rows = self._read("PRAGMA quick_check")
        return str(rows[0][0]) if rows else "ok"

    # --- appending ------------------------------------------------------------------------

    def append(
        self,
        envelope: VesEventEnvelope,
        *,
        rebased_from: uuid.UUID | None = None,
    ) -> OutboxEvent:
        """Store a signed event as ``pending``; durable when this returns. With
        ``rebased_from``, the original is marked ``superseded`` in the same transaction."""
        text = dump_json(envelope.to_wire())
        signing_hash = envelope.signing_hash()
        recorded = now_text()
        with self._tx() as db:
            db.execute(
                "INSERT INTO outbox_events (event_id, tenant_id, store_id, agent_id, "
                "agent_key_id, entity_type, entity_id, event_type, ves_version, command_id, "
                "base_version, envelope, signing_hash, recorded_at, state, rebased_from) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                (
                    str(envelope.event_id),
                    str(envelope.tenant_id),
                    str(envelope.store_id),
                    str(envelope.source_agent_id),
                    envelope.agent_key_id,
                    envelope.entity_type,
                    envelope.entity_id,
                    envelope.event_type,
                    envelope.ves_version,
                    str(envelope.command_id) if envelope.command_id else None,
                    envelope.base_version,
                    text,
                    signing_hash.hex(),
                    recorded,
                    str(rebased_from) if rebased_from else None,
                ),
            )
            if rebased_from is not None:
                moved = db.execute(
                    "UPDATE outbox_events SET state='superseded', superseded_by=? "
                    "WHERE event_id=? AND state IN ('conflict', 'rejected')",
                    (str(envelope.event_id), str(rebased_from)),
                ).rowcount
                if moved != 1:
                    raise OutboxError(
                        OutboxReason.WRONG_STATE,
                        f"event {rebased_from} is not a conflict or rejection any more",
                    )
            local_seq = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
        return OutboxEvent(
            local_seq=local_seq,
            envelope=envelope,
            envelope_json=text,
            signing_hash=signing_hash,
            recorded_at=recorded,
            state=State.PENDING,
            attempts=0,
            pushed_at=None,
            acked_at=None,
            remote_sequence=None,
            receipt=None,
            rejection_reason=None,
            rejection_message=None,
            actual_version=None,
            rebased_from=rebased_from,
            superseded_by=None,
        )

    # --- reading --------------------------------------------------------------------------

    def _row(self, row: tuple[Any, ...]) -> OutboxEvent:
        receipt = Receipt.from_wire(_loads(row[9])) if row[9] else None
        return OutboxEvent(
            local_seq=row[0],
            envelope=parse_envelope_json(row[1]),
            envelope_json=row[1],
            signing_hash=bytes.fromhex(row[2]),
            recorded_at=row[3],
            state=State(row[4]),
            attempts=row[5],
            pushed_at=row[6],
            acked_at=row[7],
            remote_sequence=row[8],
            receipt=receipt,
            rejection_reason=row[10],
            rejection_message=row[11],
            actual_version=row[12],
            rebased_from=uuid.UUID(row[13]) if row[13] else None,
            superseded_by=uuid.UUID(row[14]) if row[14] else None,
        )

    def get(self, event_id: uuid.UUID) -> OutboxEvent | None:
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM outbox_events WHERE event_id=?",  # noqa: S608
            (str(event_id),),
        )
        return self._row(rows[0]) if rows else None

    def events(
        self,
        states: Sequence[State] = tuple(State),
        *,
        after: int = 0,
        limit: int | None = None,
        recorded_from: str | None = None,
        recorded_to: str | None = None,
    ) -> list[OutboxEvent]:
        """Events in local order, filtered by state and by the local time they were
        recorded (``recorded_to`` exclusive)."""
        marks = ",".join("?" for _ in states)
        sql = (
            # Only constants and placeholders are spliced in; the values are bound.
            f"SELECT {_EVENT_COLUMNS} FROM outbox_events "  # noqa: S608
            f"WHERE state IN ({marks}) AND local_seq > ?"
        )
        args: list[Any] = [s.value for s in states] + [after]
        if recorded_from is not None:
            sql += " AND recorded_at >= ?"
            args.append(recorded_from)
        if recorded_to is not None:
            sql += " AND recorded_at < ?"
            args.append(recorded_to)
        sql += " ORDER BY local_seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [self._row(r) for r in self._read(sql, args)]

    def iter_events(self, states: Sequence[State], page: int = 1000) -> Iterator[OutboxEvent]:
        after = 0
        while batch := self.events(states, after=after, limit=page):
            yield from batch
            after = batch[-1].local_seq

    def highest_remote_sequence(self) -> int:
        """The highest sequence number this outbox holds a receipt for."""
        return int(self._read("SELECT coalesce(max(remote_sequence), 0) FROM outbox_events")[0][0])

    def counts(self) -> dict[str, int]:
        found = dict(self._read("SELECT state, count(*) FROM outbox_events GROUP BY state"))
        return {s.value: int(found.get(s.value, 0)) for s in State}

    def oldest(self, states: Sequence[State]) -> OutboxEvent | None:
        batch = self.events(states, limit=1)
        return batch[0] if batch else None

    # --- pushing --------------------------------------------------------------------------

    def claim(self, events: Sequence[OutboxEvent]) -> None:
        """Mark events ``pushed`` (committed) before they go on the wire."""
        stamp = now_text()
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox_events SET state='pushed', pushed_at=?, attempts=attempts+1 "
                "WHERE event_id=? AND state IN ('pending', 'pushed')",
                [(stamp, str(e.event_id)) for e in events],
            )

    def acknowledge(self, receipts: Sequence[Receipt]) -> int:
        """Record verified receipts; an event acked before keeps its first receipt
        (``sync-agent`` compares instead of overwriting). Returns how many changed."""
        stamp = now_text()
        changed = 0
        with self._tx() as db:
            for receipt in receipts:
                changed += db.execute(
                    "UPDATE outbox_events SET state='acked', acked_at=?, remote_sequence=?, "
                    "receipt=?, rejection_reason=NULL, rejection_message=NULL "
                    "WHERE event_id=? AND state <> 'acked'",
                    (
                        stamp,
                        receipt.sequence_number,
                        dump_json(receipt.to_wire()),
                        str(receipt.event_id),
                    ),
                ).rowcount
        return changed

    def replace_receipt(self, receipt: Receipt) -> None:
        """A lost event sequenced again (``sync-agent``) has a new number and receipt."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox_events SET remote_sequence=?, receipt=?, acked_at=? "
                "WHERE event_id=?",
                (
                    receipt.sequence_number,
                    dump_json(receipt.to_wire()),
                    now_text(),
                    str(receipt.event_id),
                ),
            )

    def reject(
        self,
        event_id: uuid.UUID,
        reason: str,
        message: str,
        *,
        actual_version: int | None = None,
    ) -> None:
        """A refusal: ``conflict`` when ``actual_version`` is known, else ``rejected``.
        An acked event is never demoted: its receipt stands."""
        state = State.CONFLICT if actual_version is not None else State.REJECTED
        with self._tx() as db:
            db.execute(
                "UPDATE outbox_events SET state=?, rejection_reason=?, rejection_message=?, "
                "actual_version=? WHERE event_id=? AND state IN ('pending', 'pushed')",
                (state.value, reason, message, actual_version, str(event_id)),
            )

    # --- entity versions ------------------------------------------------------------------

    def next_version(
        self, tenant_id: uuid.UUID, store_id: uuid.UUID, entity_type: str, entity_id: str
    ) -> int:
        """The version the entity will be at on the server once everything this agent
        knows of has been sequenced: what the server last told (a conflict's actual
        version, counted from then on), or the events seen on it (pulled, plus our own
        not refused), whichever is higher."""
        key = (str(tenant_id), str(store_id), entity_type, entity_id)
        seen = self._read(
            "SELECT count(*) FROM (SELECT event_id FROM outbox_pulled_events WHERE "
            "tenant_id=? AND store_id=? AND entity_type=? AND entity_id=? UNION "
            "SELECT event_id FROM outbox_events WHERE tenant_id=? AND store_id=? AND "
            "entity_type=? AND entity_id=? AND state IN ('pending', 'pushed', 'acked'))",
            key + key,
        )[0][0]
        hint = self._read(
            "SELECT server_version, as_of_local_seq FROM outbox_entity_versions WHERE "
            "tenant_id=? AND store_id=? AND entity_type=? AND entity_id=?",
            key,
        )
        if not hint:
            return int(seen)
        server_version, as_of = hint[0]
        since = self._read(
            "SELECT count(*) FROM outbox_events WHERE tenant_id=? AND store_id=? AND "
            "entity_type=? AND entity_id=? AND local_seq > ? AND state IN "
            "('pending', 'pushed', 'acked')",
            (*key, as_of),
        )[0][0]
        return max(int(seen), int(server_version) + int(since))

    def note_server_version(
        self,
        tenant_id: uuid.UUID,
        store_id: uuid.UUID,
        entity_type: str,
        entity_id: str,
        version: int,
    ) -> None:
        as_of = self._read("SELECT coalesce(max(local_seq), 0) FROM outbox_events")[0][0]
        with self._tx() as db:
            db.execute(
                "INSERT INTO outbox_entity_versions (tenant_id, store_id, entity_type, "
                "entity_id, server_version, as_of_local_seq) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, store_id, entity_type, entity_id) DO UPDATE SET "
                "server_version=excluded.server_version, as_of_local_seq=excluded.as_of_local_seq",
                (str(tenant_id), str(store_id), entity_type, entity_id, version, as_of),
            )

    # --- sync state -----------------------------------------------------------------------

    def sync_state(self, tenant_id: uuid.UUID, store_id: uuid.UUID) -> SyncState:
        rows = self._read(
            "SELECT last_pushed_local_seq, last_pulled_sequence, server_cursor, server_head, "
            "last_push_at, last_pull_at, last_sync_at, last_error FROM outbox_sync_state "
            "WHERE tenant_id=? AND store_id=?",
            (str(tenant_id), str(store_id)),
        )
        return SyncState(*rows[0]) if rows else SyncState()

    def update_sync_state(self, tenant_id: uuid.UUID, store_id: uuid.UUID, **values: Any) -> None:
        allowed = set(SyncState.__slots__)
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown sync-state fields: {sorted(unknown)}")
        columns = sorted(values)
        with self._tx() as db:
            db.execute(
                "INSERT INTO outbox_sync_state (tenant_id, store_id) VALUES (?, ?) "
                "ON CONFLICT (tenant_id, store_id) DO NOTHING",
                (str(tenant_id), str(store_id)),
            )
            if columns:
                # Numbers only move forward: a late answer never rewinds the position.
                sets = ", ".join(
                    f"{c}=max(coalesce({c}, 0), ?)"
                    if c in ("last_pushed_local_seq", "last_pulled_sequence", "server_cursor")
                    else f"{c}=?"
                    for c in columns
                )
                db.execute(
                    # Column names checked against SyncState above; the values are bound.
                    f"UPDATE outbox_sync_state SET {sets} WHERE tenant_id=? AND store_id=?",  # noqa: S608
                    [values[c] for c in columns] + [str(tenant_id), str(store_id)],
                )

    # --- pulled events --------------------------------------------------------------------

    def store_pulled(
        self, tenant_id: uuid.UUID, store_id: uuid.UUID, pulled: Sequence[PulledEvent]
    ) -> None:
        if not pulled:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO outbox_pulled_events (tenant_id, store_id, sequence_number, "
                "event_id, source_agent_id, entity_type, entity_id, envelope, receipt, "
                "sequenced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, store_id, sequence_number) DO NOTHING",
                [
                    (
                        str(tenant_id),
                        str(store_id),
                        p.sequence_number,
                        str(p.envelope.event_id),
                        str(p.envelope.source_agent_id),
                        p.envelope.entity_type,
                        p.envelope.entity_id,
                        p.envelope_json,
                        dump_json(p.receipt.to_wire()) if p.receipt else None,
                        p.sequenced_at,
                    )
                    for p in pulled
                ],
            )
            db.execute(
                "INSERT INTO outbox_sync_state (tenant_id, store_id) VALUES (?, ?) "
                "ON CONFLICT (tenant_id, store_id) DO NOTHING",
                (str(tenant_id), str(store_id)),
            )
            db.execute(
                "UPDATE outbox_sync_state SET last_pulled_sequence=max(last_pulled_sequence, ?), "
                "last_pull_at=? WHERE tenant_id=? AND store_id=?",
                (max(p.sequence_number for p in pulled), now_text(), str(tenant_id), str(store_id)),
            )

    # --- backup ---------------------------------------------------------------------------

    def backup_to(self, target: Path) -> None:
        """SQLite's online backup: a consistent copy while other processes keep writing."""
        try:
            destination = sqlite3.connect(target)
        except sqlite3.Error as exc:
            raise _translate(target, exc) from None
        try:
            # One step: a single read transaction copies one consistent snapshot. Copying
            # in small steps restarts whenever another process writes, and an agent that
            # writes without pause would keep a stepped backup from ever finishing; in WAL
            # mode the reader blocks no writer.
            self._db.backup(destination, pages=-1)
            destination.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.Error as exc:
            raise _translate(target, exc) from None
        finally:
            destination.close()


def _loads(text: str) -> dict[str, Any]:
    value = load_json(text)
    if not isinstance(value, dict):
        raise OutboxError(OutboxReason.DAMAGED, "a stored receipt is not a JSON object")
    return value

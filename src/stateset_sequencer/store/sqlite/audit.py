"""The audit log's hash chain on SQLite: appends inside a caller's open transaction, the
chain read back in order, the :class:`AuditChain` port, and the migration step that
chains rows written before migration 010.

SQLite has one writer at a time, so the tail read inside the writer's ``BEGIN
IMMEDIATE`` is the tail the new entry extends: appends cannot fork the chain. Triggers
(migration 010) refuse UPDATE and DELETE of chained rows and any unchained insert.
"""

from __future__ import annotations

import sqlite3

from ...ves.audit import GENESIS_HASH
from ..ports import AuditChain
from ..records import AuditEntry
from ..rows import AUDIT_COLUMNS, AUDIT_LOG, chained, column_list
from . import convert
from .worker import Connections

# The migration (010_audit_chain) after whose script chain_unchained runs.
CHAIN_MIGRATION = 10

_AUDIT_INSERT = (
    f"INSERT INTO audit_log ({column_list(AUDIT_COLUMNS)}) "  # noqa: S608 - fixed names
    f"VALUES ({convert.placeholders(len(AUDIT_COLUMNS))})"
)
_SELECT = f"SELECT {column_list(AUDIT_COLUMNS)} FROM audit_log"  # noqa: S608 - fixed names
_TAIL_SQL = "SELECT chain_seq, entry_hash FROM audit_log ORDER BY chain_seq DESC LIMIT 1"


def append_in_transaction(conn: sqlite3.Connection, entry: AuditEntry) -> AuditEntry:
    """Append ``entry`` on ``conn``, which must already be inside a write transaction
    (``BEGIN IMMEDIATE``): the entry commits or rolls back with the caller's change.
    Returns the entry as stored, chain fields included."""
    if not conn.in_transaction:
        raise RuntimeError("append_in_transaction needs an open write transaction")
    row = conn.execute(_TAIL_SQL).fetchone()
    tail_seq, tail_hash = (0, GENESIS_HASH) if row is None else (int(row[0]), bytes(row[1]))
    stored = chained(entry, tail_seq, tail_hash)
    conn.execute(_AUDIT_INSERT, convert.params(AUDIT_LOG, stored))
    return stored


def chain_unchained(conn: sqlite3.Connection) -> int:
    """Chain the rows written before migration 010, in (timestamp, id) order, after any
    chained ones; run by the migration step inside its transaction. The UPDATE trigger
    lets exactly this through: a row whose chain_seq is still NULL."""
    rows = conn.execute(f"{_SELECT} WHERE chain_seq IS NULL ORDER BY timestamp, id").fetchall()
    row = conn.execute(
        "SELECT chain_seq, entry_hash FROM audit_log WHERE chain_seq IS NOT NULL "
        "ORDER BY chain_seq DESC LIMIT 1"
    ).fetchone()
    tail_seq, tail_hash = (0, GENESIS_HASH) if row is None else (int(row[0]), bytes(row[1]))
    for found in rows:
        stored = chained(convert.record(AUDIT_LOG, found), tail_seq, tail_hash)
        conn.execute(
            "UPDATE audit_log SET chain_seq = ?, previous_hash = ?, entry_hash = ? WHERE id = ?",
            (stored.chain_seq, stored.previous_hash, stored.entry_hash, str(stored.id)),
        )
        tail_seq, tail_hash = tail_seq + 1, stored.entry_hash or GENESIS_HASH
    return len(rows)


def read_chain(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[AuditEntry]:
    rows = conn.execute(
        f"{_SELECT} WHERE chain_seq > ? ORDER BY chain_seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
    return [convert.record(AUDIT_LOG, r) for r in rows]


def read_head(conn: sqlite3.Connection) -> AuditEntry | None:
    row = conn.execute(f"{_SELECT} ORDER BY chain_seq DESC LIMIT 1").fetchone()
    return None if row is None else convert.record(AUDIT_LOG, row)


def read_entry(conn: sqlite3.Connection, chain_seq: int) -> AuditEntry | None:
    row = conn.execute(f"{_SELECT} WHERE chain_seq = ?", (chain_seq,)).fetchone()
    return None if row is None else convert.record(AUDIT_LOG, row)


class SqliteAuditChain(Connections, AuditChain):
    async def audit_chain(self, after_seq: int = 0, limit: int = 1000) -> list[AuditEntry]:
        return await self._read(read_chain, after_seq, max(limit, 0))

    async def audit_head(self) -> AuditEntry | None:
        return await self._read(read_head)

    async def audit_entry(self, chain_seq: int) -> AuditEntry | None:
        return await self._read(read_entry, chain_seq)
